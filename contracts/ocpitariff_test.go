package contracts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var testEnv = OCPIEnvelope{RateMsatPerUnit: MustDec("1000000"), TimeZone: "Europe/Berlin"}

// TestOCPINumbersExact checks that JSON numbers reach the price exactly:
// 0.1 + 0.2 per kWh in two elements, which float64 would make
// 0.30000000000000004, and a price with 18 decimals.
func TestOCPINumbersExact(t *testing.T) {
	doc := ocpiTariff("x", "", `{"price_components":[{"type":"ENERGY","price":0.1,"step_size":1},{"type":"FLAT","price":0.200000000000000001,"step_size":1}]}`)
	c, err := ParseOCPI([]byte(doc), OCPIEnvelope{RateMsatPerUnit: MustDec("1000000000000000000"), TimeZone: "UTC"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 6, 8, 9, 0, 0, 0, time.UTC)
	b := MustPrice(t, c, sess(start.Add(time.Hour), cp(start, "1", "11", "16", StateCharging)))
	// 0.2000…01 EUR × 10^18 msat + 0.1 EUR × 10^18 msat.
	if b.TotalMsat != 300_000_000_000_000_001 {
		t.Fatalf("total %d", b.TotalMsat)
	}
	if got := c.EVCharging.Tariffs[0].Elements[0].PriceComponents[1].Price.String(); got != "0.200000000000000001" {
		t.Fatalf("price kept as %s", got)
	}
}

// TestOCPIKeepsFields checks that display and metadata fields survive into
// the canonical form, and that number spelling does not change the hash.
func TestOCPIKeepsFields(t *testing.T) {
	extra := `"type":"REGULAR","tariff_alt_text":[{"language":"en","text":"0.25 per kWh"}],"tariff_alt_url":"https://cpo.example/t",` +
		`"energy_mix":{"is_green_energy":true,"energy_sources":[{"source":"SOLAR","percentage":80},{"source":"WIND","percentage":20}],"supplier_name":"Green"},` +
		`"start_date_time":"2026-01-01T00:00:00Z","preauthorize_amount":25,`
	a := mustOCPI(t, "Europe/Berlin", ocpiTariff("k", extra, `{"price_components":[{"type":"ENERGY","price":0.25,"vat":19,"step_size":1}]}`))
	b := mustOCPI(t, "Europe/Berlin", ocpiTariff("k", strings.Replace(extra, "25,", "25.000,", 1),
		`{"price_components":[{"type":"ENERGY","price":2.50e-1,"vat":19.0,"step_size":1}]}`))
	if a.Hash() != b.Hash() {
		t.Fatalf("number spelling changed the hash:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	canon := string(a.Canonical())
	for _, want := range []string{`"tariff_alt_text":[{"language":"en","text":"0.25 per kWh"}]`, `"tariff_alt_url":"https://cpo.example/t"`,
		`"supplier_name":"Green"`, `"currency":"EUR"`, `"type":"REGULAR"`, `"start_date_time":"2026-01-01T00:00:00Z"`, `"preauthorize_amount":25`} {
		if !strings.Contains(canon, want) {
			t.Errorf("canonical form lost %s:\n%s", want, canon)
		}
	}
	again, err := Parse(a.Canonical())
	if err != nil || again.Hash() != a.Hash() {
		t.Fatalf("canonical form does not parse back to itself: %v", err)
	}
	// The hold size: 25 EUR at 1,000,000 msat/EUR.
	amt, ok, err := a.PreauthorizeMsat(time.Date(2026, 6, 8, 9, 0, 0, 0, time.UTC), "")
	if err != nil || !ok || amt != 25_000_000 {
		t.Fatalf("preauthorize %d %v %v", amt, ok, err)
	}
	if _, _, err := a.PreauthorizeMsat(time.Date(2025, 6, 8, 9, 0, 0, 0, time.UTC), ""); !errors.Is(err, ErrNoPrice) {
		t.Fatalf("preauthorize before the tariff starts: %v", err)
	}
}

// TestOCPITariffList checks that the first tariff in force prices a
// session: an old tariff until 1 July, a new one after, a fallback
// without dates, in the list order the CPO gave, also inside an OCPI
// response.
func TestOCPITariffList(t *testing.T) {
	old := ocpiTariff("old", `"end_date_time":"2026-07-01T00:00:00Z",`, `{"price_components":[{"type":"ENERGY","price":0.30,"step_size":1}]}`)
	next := ocpiTariff("new", `"start_date_time":"2026-07-01T00:00:00","end_date_time":"2026-08-01T00:00:00.000Z",`, `{"price_components":[{"type":"ENERGY","price":0.40,"step_size":1}]}`)
	fallback := ocpiTariff("any", "", `{"price_components":[{"type":"ENERGY","price":0.50,"step_size":1}]}`)
	list := "[" + old + "," + next + "," + fallback + "]"
	resp := `{"data":` + list + `,"status_code":1000,"status_message":"Success","timestamp":"2026-06-01T00:00:00Z"}`
	for name, doc := range map[string]string{"Array": list, "OCPIResponse": resp} {
		t.Run(name, func(t *testing.T) {
			c := mustOCPI(t, "UTC", doc)
			for _, tc := range []struct {
				at     time.Time
				tariff string
				total  uint64
			}{
				{time.Date(2026, 6, 30, 23, 0, 0, 0, time.UTC), "DE*HUB*old", 3_000_000},
				// A session started before the switch keeps the old tariff
				// though it ends after it.
				{time.Date(2026, 6, 30, 23, 59, 0, 0, time.UTC), "DE*HUB*old", 3_000_000},
				{time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC), "DE*HUB*new", 4_000_000},
				{time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC), "DE*HUB*any", 5_000_000},
			} {
				b := MustPrice(t, c, sess(tc.at.Add(time.Hour), cp(tc.at, "10", "11", "16", StateCharging)))
				if b.Tariff != tc.tariff || uint64(b.TotalMsat) != tc.total {
					t.Errorf("at %s: %s %d, want %s %d", tc.at, b.Tariff, b.TotalMsat, tc.tariff, tc.total)
				}
			}
		})
	}
}

// TestOCPIRefused checks that malformed OCPI files fail with ErrInvalid
// and say why.
func TestOCPIRefused(t *testing.T) {
	ok := `{"price_components":[{"type":"ENERGY","price":0.25,"step_size":1}]}`
	tests := []struct {
		name, doc, want string
	}{
		{"PriceAsString", ocpiTariff("x", "", `{"price_components":[{"type":"ENERGY","price":"0.25","step_size":1}]}`), "JSON number"},
		{"UnknownField", ocpiTariff("x", `"colour":"green",`, ok), "unknown field"},
		{"StepSizeFraction", ocpiTariff("x", "", `{"price_components":[{"type":"TIME","price":1,"step_size":1.5}]}`), "step_size"},
		{"StepSizeZero", ocpiTariff("x", "", `{"price_components":[{"type":"TIME","price":1,"step_size":0}]}`), "step_size"},
		{"HugeExponent", ocpiTariff("x", "", `{"price_components":[{"type":"ENERGY","price":1e999999999,"step_size":1}]}`), "out of range"},
		{"TooManyDecimals", ocpiTariff("x", "", `{"price_components":[{"type":"ENERGY","price":0.0000000000000000001,"step_size":1}]}`), "out of range"},
		{"MixedCurrencies", "[" + ocpiTariff("a", "", ok) + "," + strings.Replace(ocpiTariff("b", "", ok), "EUR", "USD", 1) + "]", "currency"},
		{"BadTaxIncluded", ocpiTariff("x", `"tax_included":"SOMETIMES",`, ok), "tax_included"},
		{"BadType", ocpiTariff("x", `"type":"CHEAPEST",`, ok), "TariffType"},
		{"BothPriceSpellings", ocpiTariff("x", `"min_price":{"excl_vat":1,"before_taxes":1},`, ok), "not both"},
		{"AfterBelowBefore", ocpiTariff("x", `"max_price":{"before_taxes":2,"after_taxes":1},`, ok), "below before"},
		{"EndBeforeStart", ocpiTariff("x", `"start_date_time":"2026-02-01T00:00:00Z","end_date_time":"2026-01-01T00:00:00Z",`, ok), "end_date_time"},
		{"BadLastUpdated", strings.Replace(ocpiTariff("x", "", ok), "2026-01-05T10:00:00Z", "yesterday", 1), "last_updated"},
		{"NoElements", ocpiTariff("x", "", ""), "element"},
		{"EnergyMixNotObject", ocpiTariff("x", `"energy_mix":[1],`, ok), "energy_mix"},
		{"ReservationEnergy", ocpiTariff("x", "", `{"price_components":[{"type":"ENERGY","price":1,"step_size":1}],"restrictions":{"reservation":"RESERVATION"}}`), "reservation"},
		{"ResponseFailed", `{"data":[],"status_code":2001,"timestamp":"2026-06-01T00:00:00Z"}`, "status_code"},
		{"EmptyList", `[]`, "no tariff"},
		{"TrailingData", ocpiTariff("x", "", ok) + "{}", "after top-level value"},
		{"TrailingDataArray", "[" + ocpiTariff("x", "", ok) + "] []", "trailing"},
	}
	for _, tt := range tests {
		t.Run("ErrInvalid/"+tt.name, func(t *testing.T) {
			_, err := ParseOCPI([]byte(tt.doc), testEnv)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	t.Run("ErrInvalid/NoTimeZone", func(t *testing.T) {
		if _, err := ParseOCPI([]byte(ocpiTariff("x", "", ok)), OCPIEnvelope{RateMsatPerUnit: MustDec("1")}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrTooLarge", func(t *testing.T) {
		if _, err := ParseOCPI(make([]byte, MaxSize+1), testEnv); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestIsOCPI(t *testing.T) {
	for doc, want := range map[string]bool{
		ocpiTariff("x", "", ""):          true,
		"[]":                             true,
		`{"data":[],"status_code":1000}`: true,
		`{"kind":"ev_charging"}`:         false,
		`not json`:                       false,
		string(mustRead(t, "testdata/examples/ev_charging.json")): false,
	} {
		if got := IsOCPI([]byte(doc)); got != want {
			t.Errorf("IsOCPI(%.40s) = %v", doc, got)
		}
	}
}
