package contracts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"pgregory.net/rapid"
)

// decStr draws a non-negative decimal string with up to `scale` fraction
// digits and a value up to max.
func decStr(t *rapid.T, label string, max int64, scale int32) string {
	n := rapid.Int64Range(0, max).Draw(t, label)
	s := rapid.Int32Range(0, scale).Draw(t, label+".scale")
	return decimal.New(n, -s).String()
}

func clockStr(t *rapid.T, label string) string {
	return fmt.Sprintf("%02d:%02d", rapid.IntRange(0, 23).Draw(t, label+".h"), rapid.SampledFrom([]int{0, 15, 30, 59}).Draw(t, label+".m"))
}

var zones = []string{"UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"}

func daysOf(t *rapid.T, label string) []string {
	all := []string{"MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"}
	var out []string
	for _, d := range all {
		if rapid.Bool().Draw(t, label+"."+d) {
			out = append(out, d)
		}
	}
	return out
}

// genContract draws a valid contract document of a random kind and a
// usage record for it that is usually, not always, priceable.
func genContract(t *rapid.T) (map[string]any, Usage) {
	kind := rapid.SampledFrom([]Kind{KindEVCharging, KindToll, KindBandwidth, KindEnergy, KindConditionalRelease}).Draw(t, "kind")
	doc := map[string]any{"kind": kind, "version": rapid.IntRange(1, 1000).Draw(t, "version"), "id": "prop"}
	if rapid.Bool().Draw(t, "fiat") {
		doc["currency"] = "EUR"
		doc["rate_msat_per_unit"] = decStr(t, "rate", 10_000_000, 3)
		if doc["rate_msat_per_unit"] == "0" {
			doc["rate_msat_per_unit"] = "1"
		}
	} else {
		doc["currency"] = "msat"
	}
	if rapid.Bool().Draw(t, "hasFee") {
		doc["fee"] = map[string]any{"bps": fmt.Sprint(rapid.IntRange(0, 10000).Draw(t, "bps")),
			"per_event_msat": fmt.Sprint(rapid.IntRange(0, 100_000).Draw(t, "perEvent"))}
	}
	zone := rapid.SampledFrom(zones).Draw(t, "zone")
	// Any second of 2026, DST switches included.
	when := time.Unix(rapid.Int64Range(1767225600, 1798761599).Draw(t, "when"), 0).UTC()
	u := Usage{Device: "d", Provider: "p", EventTime: when}

	switch kind {
	case KindEVCharging:
		var elements []any
		for i := range rapid.IntRange(1, 4).Draw(t, "elements") {
			var comps []any
			for j := range rapid.IntRange(1, 3).Draw(t, "components") {
				comp := map[string]any{
					"type":      rapid.SampledFrom([]Dimension{DimEnergy, DimFlat, DimTime, DimParkingTime}).Draw(t, "type"),
					"price":     decStr(t, fmt.Sprintf("price%d.%d", i, j), 100_000, 4),
					"step_size": fmt.Sprint(rapid.SampledFrom([]int{1, 25, 60, 300, 900, 1800}).Draw(t, "step")),
				}
				if rapid.Bool().Draw(t, "hasVAT") {
					comp["vat"] = decStr(t, "vat", 25, 0)
				}
				comps = append(comps, comp)
			}
			el := map[string]any{"price_components": comps}
			if rapid.Bool().Draw(t, "restricted") {
				r := map[string]any{}
				if rapid.Bool().Draw(t, "clock") {
					r["start_time"], r["end_time"] = clockStr(t, "start"), clockStr(t, "end")
				}
				if d := daysOf(t, "days"); len(d) > 0 {
					r["day_of_week"] = d
				}
				if rapid.Bool().Draw(t, "maxKWh") {
					r["max_kwh"] = decStr(t, "maxKWh", 100, 1)
				}
				if rapid.Bool().Draw(t, "minPower") {
					r["min_power"] = decStr(t, "minPower", 150, 0)
				}
				if rapid.Bool().Draw(t, "maxDuration") {
					r["max_duration"] = fmt.Sprint(rapid.IntRange(0, 7200).Draw(t, "maxDuration"))
				}
				el["restrictions"] = r
			}
			elements = append(elements, el)
		}
		body := map[string]any{"time_zone": zone, "elements": elements}
		if rapid.Bool().Draw(t, "minPrice") {
			body["min_price"] = map[string]any{"excl_vat": decStr(t, "min", 500, 2)}
		}
		doc["ev_charging"] = body
		u.Start = when
		at := when
		for range rapid.IntRange(1, 5).Draw(t, "periods") {
			u.Periods = append(u.Periods, ChargingPeriod{Start: at, EnergyKWh: MustDec(decStr(t, "kwh", 50_000, 3)),
				PowerKW: MustDec(decStr(t, "kw", 350, 0)), State: rapid.SampledFrom([]string{StateCharging, StateParking}).Draw(t, "state")})
			at = at.Add(time.Duration(rapid.IntRange(1, 4*3600).Draw(t, "secs")) * time.Second)
		}
		u.End = at
	case KindToll:
		classes := []string{"car", "truck", "van"}
		prices := func(label string) map[string]any {
			m := map[string]any{}
			for _, c := range classes {
				if rapid.Bool().Draw(t, label+c) {
					m[c] = decStr(t, label+c+"price", 1_000_000, 3)
				}
			}
			if len(m) == 0 {
				m["car"] = "1"
			}
			return m
		}
		var bands []any
		for i := range rapid.IntRange(0, 3).Draw(t, "bands") {
			bands = append(bands, map[string]any{"start_time": clockStr(t, "bs"), "end_time": clockStr(t, "be"),
				"day_of_week": daysOf(t, "bd"), "prices": prices(fmt.Sprint("band", i))})
		}
		doc["toll"] = map[string]any{"time_zone": zone, "bands": bands, "default": prices("default")}
		u.VehicleClass = rapid.SampledFrom(append(classes, "bus")).Draw(t, "class")
		u.Quantity = MustDec(fmt.Sprint(rapid.IntRange(1, 5).Draw(t, "passages")))
	case KindBandwidth:
		var tiers []any
		upTo := int64(0)
		n := rapid.IntRange(1, 4).Draw(t, "tiers")
		for i := range n {
			tier := map[string]any{"price_per_mb": decStr(t, "ppmb", 10_000, 3)}
			if i < n-1 || rapid.Bool().Draw(t, "capped") {
				upTo += rapid.Int64Range(1, 100_000).Draw(t, "upTo")
				tier["up_to_mb"] = fmt.Sprint(upTo)
			}
			tiers = append(tiers, tier)
		}
		doc["bandwidth"] = map[string]any{"time_zone": zone, "window": rapid.SampledFrom([]string{WindowDay, WindowWeek, WindowMonth}).Draw(t, "window"), "tiers": tiers}
		u.CumulativeMB = MustDec(decStr(t, "cum", 200_000, 3))
		u.Quantity = MustDec(decStr(t, "mb", 200_000, 4))
	case KindEnergy:
		interval := rapid.SampledFrom([]int{5, 15, 30, 60}).Draw(t, "interval")
		var bands []any
		for range rapid.IntRange(0, 3).Draw(t, "bands") {
			bands = append(bands, map[string]any{"start_time": clockStr(t, "bs"), "end_time": clockStr(t, "be"), "price_per_kwh": decStr(t, "bp", 10_000, 4)})
		}
		doc["energy"] = map[string]any{"time_zone": zone, "interval_minutes": fmt.Sprint(interval), "price_per_kwh": decStr(t, "p", 10_000, 4), "bands": bands}
		// Align to the interval in the zone (zones with 30- and 45-minute
		// offsets make UTC alignment wrong).
		loc, _ := time.LoadLocation(zone)
		l := when.In(loc)
		u.EventTime = time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute()/interval*interval, 0, 0, loc)
		u.SellerMeter, u.BuyerMeter = "seller", "buyer"
		u.Quantity = MustDec(decStr(t, "kwh", 100_000, 3))
	case KindConditionalRelease:
		amount := rapid.Int64Range(1, 1_000_000).Draw(t, "amount")
		body := map[string]any{"amount": fmt.Sprint(amount), "min": "-5", "max": "8",
			"min_readings": fmt.Sprint(rapid.IntRange(0, 4).Draw(t, "minReadings")), "on_breach": OnBreachRefund}
		if rapid.Bool().Draw(t, "penalty") {
			body["on_breach"] = OnBreachPenalty
			body["penalty"] = fmt.Sprint(rapid.Int64Range(0, amount).Draw(t, "penaltyAmount"))
		}
		doc["conditional_release"] = body
		for range rapid.IntRange(0, 6).Draw(t, "readings") {
			u.Readings = append(u.Readings, Reading{Value: MustDec(fmt.Sprint(rapid.IntRange(-10, 12).Draw(t, "reading")))})
		}
	}
	return doc, u
}

// TestPriceConservation checks, for random valid contracts and usage, that
// every breakdown conserves money to the msat: lines add up to the
// subtotal, total = fee + provider net, the fee never exceeds the total,
// no amount is negative, a release splits the hold exactly, and the
// canonical form is a fixed point of Parse.
func TestPriceConservation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		doc, u := genContract(t)
		raw, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(raw)
		if err != nil {
			// Only combinations the generator cannot rule out cheaply.
			t.Skipf("generated document refused: %v", err)
		}
		again, err := Parse(c.Canonical())
		if err != nil || !bytes.Equal(again.Canonical(), c.Canonical()) || again.Hash() != c.Hash() {
			t.Fatalf("canonical form not a fixed point: %v", err)
		}
		b, err := Price(c, u)
		if err != nil {
			if !errors.Is(err, ErrBadUsage) && !errors.Is(err, ErrNoPrice) && !errors.Is(err, ErrOverLimit) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		checkBreakdown(t, c, b)
		for _, l := range b.Lines {
			if l.Amount.IsNegative() || l.Quantity.IsNegative() || l.UnitPrice.IsNegative() {
				t.Fatalf("negative line %+v", l)
			}
		}
		if ev := c.EVCharging; ev != nil && ev.MinPrice != nil {
			min, _ := toMsat(ev.MinPrice.ExclVAT.Mul(c.rate()))
			if b.TotalMsat < min {
				t.Fatalf("total %d under min price %d", b.TotalMsat, min)
			}
		}
		if d := b.Release; d != nil {
			if d.ReleaseMsat+d.RefundMsat != d.HeldMsat || b.TotalMsat != d.ReleaseMsat {
				t.Fatalf("release %+v, total %d", d, b.TotalMsat)
			}
		}
	})
}
