package metering_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/metering"
)

func TestParseBatch(t *testing.T) {
	one := `{"specversion":"1.0","id":"e1","source":"dev-a","type":"m2mhub.usage.v1","subject":"dev-b","time":"2026-03-01T11:59:00Z","data":{"contract":"` + testContract + `","quantity":"2.5"}}`
	withData := func(data string) string {
		return `{"specversion":"1.0","id":"e1","source":"dev-a","type":"m2mhub.usage.v1","subject":"dev-b","time":"2026-03-01T11:59:00Z","data":` + data + `}`
	}
	tests := []struct {
		name  string
		body  string
		count int // events on success
	}{
		{"OK_Single", one, 1},
		{"OK_Array", "[" + one + "," + strings.Replace(one, `"e1"`, `"e2"`, 1) + "]", 2},
		{"OK_Whitespace", " \n" + one + "\t", 1},
		{"OK_FullData", withData(`{"contract":"` + testContract + `","session":"s","start":"2026-03-01T10:00:00Z","end":"2026-03-01T11:00:00Z","periods":[{"start":"2026-03-01T10:00:00Z","energy_kwh":"12","state":"charging"}],"readings":[{"value":"-3.5"}],"attributes":{"k":"v"}}`), 1},
		{"OK_SignedReadings", withData(`{"contract":"` + testContract + `","signed_readings":["OCMF|{}|{}","` + strings.Repeat("x", metering.MaxSignedLen) + `"]}`), 1},
		{"ErrMalformed_EmptySignedReadings", withData(`{"contract":"` + testContract + `","signed_readings":[]}`), 0},
		{"ErrMalformed_EmptySignedReading", withData(`{"contract":"` + testContract + `","signed_readings":[""]}`), 0},
		{"ErrMalformed_SignedReadingObject", withData(`{"contract":"` + testContract + `","signed_readings":[{"value":"1"}]}`), 0},
		{"ErrMalformed_SignedReadingTooLong", withData(`{"contract":"` + testContract + `","signed_readings":["` + strings.Repeat("x", metering.MaxSignedLen+1) + `"]}`), 0},
		{"ErrMalformed_TooManySignedReadings", withData(`{"contract":"` + testContract + `","signed_readings":[` + strings.Repeat(`"r",`, metering.MaxReadings) + `"r"]}`), 0},
		{"ErrMalformed_Number", strings.Replace(one, `"2.5"`, `2.5`, 1), 0},
		{"ErrMalformed_Bool", strings.Replace(one, `"2.5"`, `true`, 1), 0},
		{"ErrMalformed_Null", strings.Replace(one, `"2.5"`, `null`, 1), 0},
		{"ErrMalformed_DuplicateKey", strings.Replace(one, `"id":"e1"`, `"id":"e1","id":"e2"`, 1), 0},
		{"ErrMalformed_UnknownField", strings.Replace(one, `"id":"e1"`, `"id":"e1","extra":"x"`, 1), 0},
		{"ErrMalformed_UnknownDataField", withData(`{"contract":"` + testContract + `","cumulative_mb":"5"}`), 0},
		{"ErrMalformed_EmptyOptional", withData(`{"contract":"` + testContract + `","unit":""}`), 0},
		{"ErrMalformed_EmptyAttributes", withData(`{"contract":"` + testContract + `","attributes":{}}`), 0},
		{"ErrMalformed_EmptyPeriods", withData(`{"contract":"` + testContract + `","periods":[]}`), 0},
		{"ErrMalformed_PeriodWithoutState", withData(`{"contract":"` + testContract + `","periods":[{"start":"x"}]}`), 0},
		{"ErrMalformed_MissingData", strings.Replace(one, `,"data":{"contract":"`+testContract+`","quantity":"2.5"}`, ``, 1), 0},
		{"ErrMalformed_MissingID", strings.Replace(one, `"id":"e1",`, ``, 1), 0},
		{"ErrMalformed_IDTooLong", strings.Replace(one, `"e1"`, `"`+strings.Repeat("x", 65)+`"`, 1), 0},
		{"ErrMalformed_EmptyArray", `[]`, 0},
		{"ErrMalformed_ArrayOfStrings", `["a"]`, 0},
		{"ErrMalformed_String", `"a"`, 0},
		{"ErrMalformed_Trailing", one + `{}`, 0},
		{"ErrMalformed_InvalidUTF8", strings.Replace(one, `"dev-b"`, "\"dev-\xff\"", 1), 0},
		{"ErrMalformed_TooDeep", `[[[[[[[[[["a"]]]]]]]]]]`, 0},
		{"ErrMalformed_TooManyEvents", "[" + strings.Repeat(one+",", metering.MaxBatchEvents) + one + "]", 0},
		{"ErrMalformed_TooLarge", `["` + strings.Repeat("a", metering.MaxBatchBytes) + `"]`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := metering.ParseBatch([]byte(tc.body))
			if tc.count == 0 {
				if !errors.Is(err, metering.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != tc.count {
				t.Fatalf("%d events, want %d", len(evs), tc.count)
			}
		})
	}
}

func TestEncodeParseRoundTrip(t *testing.T) {
	key := mustKey(t, 1)
	e := mustSigned(t, "a", key)
	full := testEvent("b")
	full.Data.Periods = []metering.Period{{Start: "2026-03-01T10:00:00Z", EnergyKWh: "3", State: "charging"}}
	full.Data.Readings = []metering.Reading{{Time: "2026-03-01T10:00:00Z", Value: "4.5"}}
	full.Data.Attributes = map[string]string{"z": "1", "a": "\"q\"\n"}
	full.Data.SignedReadings = []string{`OCMF|{"PG":"T1"}|{"SD":"30"}`, `OCMF|{"PG":"T2"}|{"SD":"31"}`}
	if err := metering.Sign(&full, key); err != nil {
		t.Fatal(err)
	}
	body, err := metering.EncodeBatch([]metering.Event{e, full})
	if err != nil {
		t.Fatal(err)
	}
	got, err := metering.ParseBatch(body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []metering.Event{e, full}) {
		t.Fatalf("round trip changed events:\n got %+v\nwant %+v", got, []metering.Event{e, full})
	}
	for i := range got {
		if err := metering.Verify(&got[i], key.PubKey()); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"OK_SortsKeys", `{"b":"1","a":"2","aa":{"y":"","x":[]}}`, `{"a":"2","aa":{"x":[],"y":""},"b":"1"}`},
		{"OK_DropsWhitespace", "{ \"a\" : [ \"x\" , \"y\" ] }", `{"a":["x","y"]}`},
		{"OK_Escapes", `{"s":"q\" b\\ \b\f\n\r\t \u0001\u001f / \u007f é \u20ac"}`, "{\"s\":\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001\\u001f / \x7f é €\"}"},
		// U+FF21 sorts after U+1F600 in UTF-16 (0xFF21 > 0xD83D) though
		// its UTF-8 bytes sort before.
		{"OK_UTF16Order", `{"\uff21":"1","\ud83d\ude00":"2","\u20ac":"3"}`, "{\"€\":\"3\",\"😀\":\"2\",\"Ａ\":\"1\"}"},
		{"ErrMalformed_Number", `{"a":1}`, ""},
		{"ErrMalformed_Dup", `{"a":"1","a":"2"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := metering.Canonicalize([]byte(tc.in))
			if tc.want == "" {
				if !errors.Is(err, metering.ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	key := mustKey(t, 1)
	t.Run("OK", func(t *testing.T) {
		e := mustSigned(t, "a", key)
		if err := metering.Verify(&e, key.PubKey()); err != nil {
			t.Fatal(err)
		}
	})
	for name, mutate := range map[string]func(e *metering.Event){
		"ErrBadSignature_Quantity":  func(e *metering.Event) { e.Data.Quantity = "2" },
		"ErrBadSignature_Subject":   func(e *metering.Event) { e.Subject = "dev-other" },
		"ErrBadSignature_Attribute": func(e *metering.Event) { e.Data.Attributes = map[string]string{"a": "b"} },
		"ErrBadSignature_NotHex":    func(e *metering.Event) { e.Sig = strings.Repeat("zz", 64) },
		"ErrBadSignature_Short":     func(e *metering.Event) { e.Sig = e.Sig[:100] },
		"ErrBadSignature_Missing":   func(e *metering.Event) { e.Sig = "" },
	} {
		t.Run(name, func(t *testing.T) {
			e := mustSigned(t, "a", key)
			mutate(&e)
			if err := metering.Verify(&e, key.PubKey()); !errors.Is(err, metering.ErrBadSignature) {
				t.Fatalf("err = %v, want ErrBadSignature", err)
			}
		})
	}
	t.Run("ErrBadSignature_OtherKey", func(t *testing.T) {
		e := mustSigned(t, "a", key)
		if err := metering.Verify(&e, mustKey(t, 2).PubKey()); !errors.Is(err, metering.ErrBadSignature) {
			t.Fatalf("err = %v, want ErrBadSignature", err)
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(e *metering.Event)
		want   error
	}{
		{"OK", func(*metering.Event) {}, nil},
		{"OK_LateWithinMaxAge", func(e *metering.Event) { e.Time = "2026-02-01T12:00:01Z" }, nil},
		{"OK_SkewWithinMaxFuture", func(e *metering.Event) { e.Time = "2026-03-01T12:04:59+00:00" }, nil},
		{"OK_NegativeReading", func(e *metering.Event) { e.Data.Readings = []metering.Reading{{Value: "-18.5"}} }, nil},
		{"ErrSpecVersion", func(e *metering.Event) { e.SpecVersion = "0.3" }, metering.ErrSpecVersion},
		{"ErrType", func(e *metering.Event) { e.Type = "com.example" }, metering.ErrType},
		{"ErrMalformed_ContentType", func(e *metering.Event) { e.DataContentType = "text/plain" }, metering.ErrMalformed},
		{"ErrMalformed_SourceWildcard", func(e *metering.Event) { e.Source = "dev.*" }, metering.ErrMalformed},
		{"ErrBadID", func(e *metering.Event) { e.ID = strings.Repeat("i", 65) }, metering.ErrBadID},
		{"ErrBadTime", func(e *metering.Event) { e.Time = "yesterday" }, metering.ErrBadTime},
		{"ErrBadTime_Start", func(e *metering.Event) { e.Data.Start = "2026-03-01" }, metering.ErrBadTime},
		{"ErrFuture", func(e *metering.Event) { e.Time = "2026-03-01T12:05:01Z" }, metering.ErrFuture},
		{"ErrTooOld", func(e *metering.Event) { e.Time = "2026-01-30T11:59:59Z" }, metering.ErrTooOld},
		{"ErrBadQuantity_Negative", func(e *metering.Event) { e.Data.Quantity = "-1" }, metering.ErrBadQuantity},
		{"ErrBadQuantity_Exponent", func(e *metering.Event) { e.Data.Quantity = "1e3" }, metering.ErrBadQuantity},
		{"ErrBadQuantity_Period", func(e *metering.Event) {
			e.Data.Periods = []metering.Period{{Start: "2026-03-01T10:00:00Z", EnergyKWh: "-2", State: "charging"}}
		}, metering.ErrBadQuantity},
		{"ErrBadContract_Short", func(e *metering.Event) { e.Data.Contract = "abcd" }, metering.ErrBadContract},
		{"ErrBadContract_Upper", func(e *metering.Event) { e.Data.Contract = strings.ToUpper(testContract) }, metering.ErrBadContract},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := testEvent("a")
			tc.mutate(&e)
			_, err := metering.Validate(&e, testNow, metering.Limits{})
			if tc.want == nil && err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestToUsage(t *testing.T) {
	e := testEvent("a")
	e.Data.Session = "s1"
	e.Data.Start = "2026-03-01T10:00:00Z"
	e.Data.Periods = []metering.Period{{Start: "2026-03-01T10:00:00Z", EnergyKWh: "7.25", PowerKW: "11", State: "charging"}}
	e.Data.Readings = []metering.Reading{{Time: "2026-03-01T10:30:00Z", Value: "-4.5"}}
	u, err := metering.ToUsage(&e)
	if err != nil {
		t.Fatal(err)
	}
	want := contracts.Usage{
		Device: e.Subject, Provider: e.Source, Contract: testContract, Session: "s1",
		Start:     time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC),
		EventTime: time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC),
		Quantity:  contracts.MustDec("1"), Unit: "passage", VehicleClass: "car",
		Periods: []contracts.ChargingPeriod{{
			Start:     time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC),
			EnergyKWh: contracts.MustDec("7.25"), PowerKW: contracts.MustDec("11"), State: "charging",
		}},
		Readings: []contracts.Reading{{Time: time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC), Value: contracts.MustDec("-4.5")}},
	}
	if fmt.Sprint(u) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v", u, want)
	}
	if !u.CumulativeMB.IsZero() {
		t.Fatal("cumulative volume taken from the provider")
	}
}

func TestReason(t *testing.T) {
	for err, code := range map[error]string{
		fmt.Errorf("x: %w", metering.ErrFuture):       metering.ReasonFuture,
		fmt.Errorf("x: %w", metering.ErrBadSignature): metering.ReasonSignature,
		metering.ErrSourceMismatch:                    metering.ReasonSourceMismatch,
		errors.New("other"):                           metering.ReasonOther,
	} {
		if got := metering.Reason(err); got != code {
			t.Errorf("Reason(%v) = %q, want %q", err, got, code)
		}
	}
}

func TestMsgID(t *testing.T) {
	body := []byte(`{"id":"session-413"}`)
	id := metering.MsgID("dev-a", body, "")
	hexPart, ok := strings.CutPrefix(id, "dev-a/")
	if !ok || len(hexPart) != 64 {
		t.Fatalf("id %q must be the provider, a slash and 64 hex", id)
	}
	// The construction docs/metering.md gives, recomputed independently.
	sig := strings.Repeat("ab", 64)
	sum := sha256.Sum256([]byte(sig + "\n" + string(body)))
	if got, want := metering.MsgID("dev-a", body, sig), "dev-a/"+hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("MsgID %q, want %q", got, want)
	}
	if metering.MsgID("dev-a", body, "") != id {
		t.Fatal("the same message must keep its id (retries are de-duplicated on it)")
	}
	// Another provider, other bytes or another batch signature: another id.
	for _, other := range []string{
		metering.MsgID("dev-b", body, ""),
		metering.MsgID("dev-a", []byte(`{"id":"session-414"}`), ""),
		metering.MsgID("dev-a", body, strings.Repeat("ab", 64)),
	} {
		if other == id {
			t.Fatalf("%q collides with %q", other, id)
		}
	}
}

// BenchmarkVerify is the per-event CPU floor of the intake: one BIP-340
// verification plus the canonical form and digest it needs.
func BenchmarkVerify(b *testing.B) {
	key := mustKey(b, 1)
	e := mustSigned(b, "bench", key)
	pub := key.PubKey()
	for b.Loop() {
		if err := metering.Verify(&e, pub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseBatch parses a message of 100 signed events; one op is one
// message.
func BenchmarkParseBatch(b *testing.B) {
	key := mustKey(b, 1)
	evs := make([]metering.Event, 100)
	for i := range evs {
		evs[i] = mustSigned(b, fmt.Sprint("e", i), key)
	}
	body, err := metering.EncodeBatch(evs)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := metering.ParseBatch(body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEVReservationAndCurrent carries the OCPI fields of an EV session
// (current per period, the tariff type, a reservation) through the wire
// form and into the usage record.
func TestEVReservationAndCurrent(t *testing.T) {
	e := testEvent("ev")
	e.Data.Start, e.Data.End = "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"
	e.Data.TariffType = "PROFILE_GREEN"
	e.Data.Reservation = &metering.Reservation{Start: "2026-03-01T09:40:00Z", End: "2026-03-01T10:00:00Z"}
	e.Data.Periods = []metering.Period{{Start: "2026-03-01T10:00:00Z", EnergyKWh: "7.25", CurrentA: "32", State: "charging"}}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"current_a":"32"`, `"tariff_type":"PROFILE_GREEN"`, `"reservation":{"end":"2026-03-01T10:00:00Z","start":"2026-03-01T09:40:00Z"}`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("wire form lacks %s: %s", want, b)
		}
	}
	evs, err := metering.ParseBatch(b)
	if err != nil || len(evs) != 1 {
		t.Fatalf("parse: %v", err)
	}
	if !bytes.Equal(evs[0].Canonical(), e.Canonical()) {
		t.Fatalf("canonical form changed:\n%s\n%s", evs[0].Canonical(), e.Canonical())
	}
	u, err := metering.ToUsage(&evs[0])
	if err != nil {
		t.Fatal(err)
	}
	if u.TariffType != "PROFILE_GREEN" || u.Reservation == nil || u.Reservation.Expired ||
		!u.Reservation.Start.Equal(time.Date(2026, 3, 1, 9, 40, 0, 0, time.UTC)) || u.Periods[0].CurrentA.String() != "32" {
		t.Fatalf("usage %+v", u)
	}
	evs[0].Data.Reservation.Expired = "yes"
	if _, err := metering.ToUsage(&evs[0]); !errors.Is(err, metering.ErrMalformed) {
		t.Fatalf("expired %q: err = %v", "yes", err)
	}
}
