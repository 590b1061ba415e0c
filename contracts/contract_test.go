package contracts

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "examples", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[Kind]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		kinds[c.Kind] = true
		again, err := Parse(c.Canonical())
		if err != nil {
			t.Fatalf("%s: canonical form refused: %v\n%s", f, err, c.Canonical())
		}
		if !bytes.Equal(again.Canonical(), c.Canonical()) || again.Hash() != c.Hash() {
			t.Fatalf("%s: canonical form not stable", f)
		}
	}
	for _, k := range []Kind{KindEVCharging, KindToll, KindBandwidth, KindEnergy, KindConditionalRelease} {
		if !kinds[k] {
			t.Errorf("no example for kind %s", k)
		}
	}
}

const minimalToll = `{"kind":"toll","version":1,"id":"t","currency":"msat","toll":{"time_zone":"UTC","default":{"car":"1000"}}}`

func TestCanonical(t *testing.T) {
	a := MustParse(t, minimalToll)
	// Same document, other key order, layout and decimal spelling.
	b := MustParse(t, `{
		"toll": {"default": {"car": "1000.000"}, "time_zone": "UTC"},
		"currency": "msat", "id": "t", "version": 1, "kind": "toll"
	}`)
	if a.Hash() != b.Hash() {
		t.Fatalf("equivalent documents hash differently:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	want := `{"currency":"msat","id":"t","kind":"toll","toll":{"default":{"car":"1000"},"time_zone":"UTC"},"version":1}`
	if got := string(a.Canonical()); got != want {
		t.Fatalf("canonical:\n got %s\nwant %s", got, want)
	}
	c := MustParse(t, strings.Replace(minimalToll, `"1000"`, `"1001"`, 1))
	if c.Hash() == a.Hash() {
		t.Fatal("a different price kept the hash")
	}
	d := MustParse(t, strings.Replace(minimalToll, `"version":1`, `"version":2`, 1))
	if d.Hash() == a.Hash() {
		t.Fatal("a different version kept the hash")
	}
}

func TestParseErrors(t *testing.T) {
	r := strings.NewReplacer // shorthand for one-off edits of a valid document
	ok := `{"kind":"toll","version":1,"id":"t","currency":"EUR","rate_msat_per_unit":"1000",` +
		`"fee":{"bps":"100"},"security":[{"rule":"max_event_rate","target":"device","limit":"5","window_seconds":"60"}],` +
		`"toll":{"time_zone":"Europe/Oslo","bands":[{"start_time":"07:00","end_time":"09:00","prices":{"car":"2.5"}}],"default":{"car":"1"}}}`
	MustParse(t, ok)
	tests := []struct {
		name string
		doc  string
		want error
	}{
		{"ErrInvalid/UnknownField", r(`"id":"t"`, `"id":"t","colour":"red"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/UnknownNestedField", r(`"prices"`, `"discount":"1","prices"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/NumberNotString", r(`"car":"1"}`, `"car":1}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/Exponent", r(`"car":"1"}`, `"car":"1e3"}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/PlusSign", r(`"car":"1"}`, `"car":"+1"}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/BareFraction", r(`"car":"1"}`, `"car":".5"}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/TrailingDot", r(`"car":"1"}`, `"car":"1."}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/NegativePrice", r(`"car":"1"}`, `"car":"-1"}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/NullDecimal", r(`"car":"1"}`, `"car":null}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/TrailingData", ok + `{}`, ErrInvalid},
		{"ErrInvalid/NotJSON", `kind: toll`, ErrInvalid},
		{"ErrInvalid/VersionZero", r(`"version":1`, `"version":0`).Replace(ok), ErrInvalid},
		{"ErrInvalid/VersionFraction", r(`"version":1`, `"version":1.5`).Replace(ok), ErrInvalid},
		{"ErrInvalid/EmptyID", r(`"id":"t"`, `"id":""`).Replace(ok), ErrInvalid},
		{"ErrInvalid/KindMismatch", r(`"kind":"toll"`, `"kind":"bandwidth"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/UnknownKind", r(`"kind":"toll"`, `"kind":"parking"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/TwoBodies", r(`"toll":`, `"energy":{"time_zone":"UTC","interval_minutes":"15","price_per_kwh":"1"},"toll":`).Replace(ok), ErrInvalid},
		{"ErrInvalid/FiatWithoutRate", r(`"rate_msat_per_unit":"1000",`, ``).Replace(ok), ErrInvalid},
		{"ErrInvalid/ZeroRate", r(`"rate_msat_per_unit":"1000"`, `"rate_msat_per_unit":"0"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/MsatWithRate", r(`"currency":"EUR"`, `"currency":"msat"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/BadCurrency", r(`"currency":"EUR"`, `"currency":"euro"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/FeeOver100Percent", r(`"bps":"100"`, `"bps":"10001"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/FeeFraction", r(`"bps":"100"`, `"bps":"1.5"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/EmptyFee", r(`{"bps":"100"}`, `{}`).Replace(ok), ErrInvalid},
		{"ErrInvalid/BadZone", r(`Europe/Oslo`, `Mars/Olympus`).Replace(ok), ErrInvalid},
		{"ErrInvalid/LocalZone", r(`Europe/Oslo`, `Local`).Replace(ok), ErrInvalid},
		{"ErrInvalid/BadClock", r(`"07:00"`, `"7:00"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/ClockOutOfRange", r(`"09:00"`, `"24:00"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/UnknownRule", r(`"max_event_rate"`, `"max_speed"`).Replace(ok), ErrInvalid},
		{"ErrInvalid/RuleWithoutWindow", r(`,"window_seconds":"60"`, ``).Replace(ok), ErrInvalid},
		{"ErrInvalid/BadTarget", r(`"target":"device"`, `"target":"owner"`).Replace(ok), ErrInvalid},
		{"ErrTooLarge", `{"id":"` + strings.Repeat("x", MaxSize) + `"}`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if c != nil {
				t.Fatal("refused document returned a contract")
			}
		})
	}
}

func TestParseErrorsPerKind(t *testing.T) {
	env := `{"version":1,"id":"x","currency":"msat",`
	tests := []struct{ name, doc string }{
		{"EVNoElements", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[]}}`},
		{"EVNoComponents", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[]}]}}`},
		{"EVBadDimension", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"IDLE","price":"1","step_size":"1"}]}]}}`},
		{"EVStepZero", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"0"}]}]}}`},
		{"EVVATOver100", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","vat":"101","step_size":"1"}]}]}}`},
		{"EVBadDate", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}],"restrictions":{"start_date":"2026-02-30"}}]}}`},
		{"EVBadDay", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}],"restrictions":{"day_of_week":["FUNDAY"]}}]}}`},
		{"EVNegativeCurrent", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}],"restrictions":{"min_current":"-16"}}]}}`},
		{"EVBadReservation", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}],"restrictions":{"reservation":"MAYBE"}}]}}`},
		{"EVReservationEnergy", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"ENERGY","price":"1","step_size":"1"}],"restrictions":{"reservation":"RESERVATION"}}]}}`},
		{"EVBadTaxIncluded", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","tax_included":"MAYBE","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}]}]}}`},
		{"EVZeroTimeStep", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"0"}]}]}}`},
		{"EVMinAboveMax", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","min_price":{"excl_vat":"5"},"max_price":{"excl_vat":"4"},"elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}]}]}}`},
		{"EVInclBelowExcl", `"kind":"ev_charging","ev_charging":{"time_zone":"UTC","min_price":{"excl_vat":"5","incl_vat":"4"},"elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}]}]}}`},
		{"TollNoPrices", `"kind":"toll","toll":{"time_zone":"UTC"}}`},
		{"TollEmptyClass", `"kind":"toll","toll":{"time_zone":"UTC","default":{"":"1"}}}`},
		{"BandwidthBadWindow", `"kind":"bandwidth","bandwidth":{"time_zone":"UTC","window":"year","tiers":[{"price_per_mb":"1"}]}}`},
		{"BandwidthNotAscending", `"kind":"bandwidth","bandwidth":{"time_zone":"UTC","window":"day","tiers":[{"up_to_mb":"10","price_per_mb":"1"},{"up_to_mb":"10","price_per_mb":"1"}]}}`},
		{"BandwidthUnboundedMiddle", `"kind":"bandwidth","bandwidth":{"time_zone":"UTC","window":"day","tiers":[{"price_per_mb":"1"},{"up_to_mb":"10","price_per_mb":"1"}]}}`},
		{"EnergyIntervalNotDividingHour", `"kind":"energy","energy":{"time_zone":"UTC","interval_minutes":"7","price_per_kwh":"1"}}`},
		{"ReleasePenaltyOverAmount", `"kind":"conditional_release","conditional_release":{"amount":"5","min":"2","max":"8","min_readings":"1","on_breach":"penalty","penalty":"6"}}`},
		{"ReleasePenaltyMissing", `"kind":"conditional_release","conditional_release":{"amount":"5","min":"2","max":"8","min_readings":"1","on_breach":"penalty"}}`},
		{"ReleaseRefundWithPenalty", `"kind":"conditional_release","conditional_release":{"amount":"5","min":"2","max":"8","min_readings":"1","on_breach":"refund","penalty":"1"}}`},
		{"ReleaseMinAboveMax", `"kind":"conditional_release","conditional_release":{"amount":"5","min":"9","max":"8","min_readings":"1","on_breach":"refund"}}`},
		{"ReleaseZeroAmount", `"kind":"conditional_release","conditional_release":{"amount":"0","min":"2","max":"8","min_readings":"1","on_breach":"refund"}}`},
	}
	for _, tt := range tests {
		t.Run("ErrInvalid/"+tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(env + tt.doc)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPriceNeedsParse(t *testing.T) {
	c := *MustParse(t, minimalToll)
	c.parsed = false
	if _, err := Price(&c, Usage{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if _, err := Price(&Contract{Kind: KindToll}, Usage{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}
