package contracts

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"pgregory.net/rapid"
)

// genOCPITariff draws an OCPI tariff with every restriction the engine
// knows, reservation elements included.
func genOCPITariff(t *rapid.T) string {
	num := func(label string, max int64, scale int32) string { return decStr(t, label, max, scale) }
	var els []string
	for i := range rapid.IntRange(1, 5).Draw(t, "elements") {
		resv := ""
		dims := []Dimension{DimEnergy, DimFlat, DimTime, DimParkingTime}
		if rapid.IntRange(0, 4).Draw(t, "resv") == 0 {
			resv = rapid.SampledFrom([]string{ReservationActive, ReservationExpires}).Draw(t, "resvType")
			dims = []Dimension{DimFlat, DimTime}
		}
		var comps []string
		for j := range rapid.IntRange(1, 3).Draw(t, "components") {
			d := rapid.SampledFrom(dims).Draw(t, "type")
			c := fmt.Sprintf(`{"type":%q,"price":%s,"step_size":%d`, d, num(fmt.Sprintf("price%d.%d", i, j), 10_000, 4),
				rapid.SampledFrom([]int{1, 25, 60, 300, 900}).Draw(t, "step"))
			if rapid.Bool().Draw(t, "vat") {
				c += `,"vat":` + num("vatpct", 25, 1)
			}
			comps = append(comps, c+"}")
		}
		var r []string
		if resv != "" {
			r = append(r, `"reservation":"`+resv+`"`)
		}
		if rapid.Bool().Draw(t, "clock") {
			r = append(r, fmt.Sprintf(`"start_time":%q,"end_time":%q`, clockStr(t, "start"), clockStr(t, "end")))
		}
		if rapid.Bool().Draw(t, "maxKWh") {
			r = append(r, `"max_kwh":`+num("maxKWh", 60, 1))
		}
		if rapid.Bool().Draw(t, "minPower") {
			r = append(r, `"min_power":`+num("minPower", 150, 0))
		}
		if rapid.Bool().Draw(t, "maxCurrent") {
			r = append(r, `"max_current":`+num("maxCurrent", 200, 0))
		}
		if rapid.Bool().Draw(t, "minDuration") {
			r = append(r, fmt.Sprintf(`"min_duration":%d`, rapid.IntRange(0, 7200).Draw(t, "minDuration")))
		}
		el := `{"price_components":[` + strings.Join(comps, ",") + `]`
		if len(r) > 0 {
			el += `,"restrictions":{` + strings.Join(r, ",") + `}`
		}
		els = append(els, el+"}")
	}
	extra := ""
	if rapid.Bool().Draw(t, "tax") {
		extra += `"tax_included":"` + rapid.SampledFrom([]string{TaxYes, TaxNo, TaxNA}).Draw(t, "taxIncluded") + `",`
	}
	if rapid.Bool().Draw(t, "min") {
		extra += `"min_price":{"before_taxes":` + num("min", 20, 2) + `},`
	}
	return ocpiTariff("p", extra, strings.Join(els, ","))
}

// TestMeterValuesAndCDRPeriodsAgree is the property that the two ways into
// pricing give one price: a session drawn as OCPP meter values, and the
// same session as OCPI charging periods with their dimension volumes (and
// reservation periods before it), cost the same under any tariff, or fail
// the same way.
func TestMeterValuesAndCDRPeriodsAgree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		zone := rapid.SampledFrom(zones).Draw(t, "zone")
		c, err := ParseOCPI([]byte(genOCPITariff(t)), OCPIEnvelope{RateMsatPerUnit: MustDec(decStr(t, "rate", 10_000_000, 2) + "1"), TimeZone: zone})
		if err != nil {
			t.Fatalf("generated tariff refused: %v", err)
		}
		at := time.Unix(rapid.Int64Range(1767225600, 1798761599).Draw(t, "start"), 0).UTC()
		var mvs []MeterValue
		reg := decimal.Zero
		for i := range rapid.IntRange(2, 8).Draw(t, "readings") {
			mvs = append(mvs, MeterValue{Time: at, EnergyWh: D(reg), PowerKW: MustDec(decStr(t, "kw", 350, 1)),
				CurrentA: MustDec(decStr(t, "amps", 400, 0)), Charging: rapid.Bool().Draw(t, fmt.Sprint("charging", i))})
			at = at.Add(time.Duration(rapid.IntRange(1, 3*3600).Draw(t, "secs")) * time.Second)
			reg = reg.Add(MustDec(decStr(t, "wh", 40_000_000, 3)).Decimal)
		}
		base := Usage{Device: "car", Provider: "cp"}
		var resv []CDRPeriod
		if rapid.Bool().Draw(t, "reserved") {
			from := mvs[0].Time.Add(-time.Duration(rapid.IntRange(1, 7200).Draw(t, "resvSecs")) * time.Second)
			resv = []CDRPeriod{{StartDateTime: from.Format(time.RFC3339), Dimensions: []CDRDimension{{Type: "RESERVATION_TIME", Volume: N(decimal.NewFromInt(1))}}}}
			base.Reservation = &Reservation{Start: from, End: mvs[0].Time}
		}
		fromMeter, err := UsageFromMeterValues(base, mvs)
		if err != nil {
			t.Fatalf("meter values refused: %v", err)
		}

		// The same session as a CDR's charging periods.
		periods := resv
		for i := 0; i+1 < len(mvs); i++ {
			a, b := mvs[i], mvs[i+1]
			hours := decimal.NewFromInt(int64(b.Time.Sub(a.Time)/time.Second)).DivRound(decimal.NewFromInt(3600), 9)
			kind := "PARKING_TIME"
			if a.Charging {
				kind = "TIME"
			}
			periods = append(periods, CDRPeriod{StartDateTime: a.Time.Format(time.RFC3339), Dimensions: []CDRDimension{
				{Type: "ENERGY", Volume: N(b.EnergyWh.Sub(a.EnergyWh.Decimal).Shift(-3))},
				{Type: kind, Volume: N(hours)},
				{Type: "MAX_POWER", Volume: N(a.PowerKW.Decimal)},
				{Type: "MAX_CURRENT", Volume: N(a.CurrentA.Decimal)},
			}})
		}
		end := base
		end.End = mvs[len(mvs)-1].Time
		fromCDR, err := UsageFromCDRPeriods(end, periods)
		if err != nil {
			t.Fatalf("charging periods refused: %v", err)
		}

		b1, err1 := Price(c, fromMeter)
		b2, err2 := Price(c, fromCDR)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("errors differ: %v / %v", err1, err2)
		}
		if err1 != nil {
			if !errors.Is(err1, ErrBadUsage) && !errors.Is(err1, ErrNoPrice) && !errors.Is(err1, ErrOverflow) {
				t.Fatalf("error without sentinel: %v", err1)
			}
			return
		}
		checkBreakdown(t, c, b1)
		if !reflect.DeepEqual(b1, b2) {
			t.Fatalf("prices differ:\nmeter %+v\ncdr   %+v", b1, b2)
		}
		// The CDR of the session states what was paid and prices back
		// to it from its own charging periods.
		mustCDR(t, c, fromMeter)
	})
}

// TestUsageFromCDRPeriods covers what the property does not draw: a
// period with both TIME and PARKING_TIME, an expired reservation, power
// from energy and time, and refusals.
func TestUsageFromCDRPeriods(t *testing.T) {
	vol := func(s string) Num { return MustNum(s) }
	end := at(t, "2026-06-10T12:00:00Z")
	t.Run("OK/SplitChargingThenParking", func(t *testing.T) {
		u, err := UsageFromCDRPeriods(Usage{End: end}, []CDRPeriod{{StartDateTime: "2026-06-10T10:00:00Z", Dimensions: []CDRDimension{
			{Type: "ENERGY", Volume: vol("11")}, {Type: "TIME", Volume: vol("1.5")}, {Type: "PARKING_TIME", Volume: vol("0.5")}}}})
		if err != nil {
			t.Fatal(err)
		}
		want := []ChargingPeriod{
			{Start: at(t, "2026-06-10T10:00:00Z"), EnergyKWh: MustDec("11"), PowerKW: MustDec("7.333333"), State: StateCharging},
			{Start: at(t, "2026-06-10T11:30:00Z"), State: StateParking},
		}
		if !reflect.DeepEqual(u.Periods, want) || !u.Start.Equal(want[0].Start) {
			t.Fatalf("periods %+v", u.Periods)
		}
	})
	t.Run("OK/ExpiredReservation", func(t *testing.T) {
		u, err := UsageFromCDRPeriods(Usage{End: end}, []CDRPeriod{{StartDateTime: "2026-06-10T11:00:00", Dimensions: []CDRDimension{
			{Type: "RESERVATION_TIME", Volume: vol("1")}}}})
		if err != nil {
			t.Fatal(err)
		}
		if u.Reservation == nil || !u.Reservation.Expired || len(u.Periods) != 0 || !u.Reservation.Start.Equal(at(t, "2026-06-10T11:00:00Z")) {
			t.Fatalf("usage %+v", u)
		}
	})
	for _, tt := range []struct {
		name    string
		periods []CDRPeriod
	}{
		{"None", nil},
		{"BadTime", []CDRPeriod{{StartDateTime: "10:00", Dimensions: []CDRDimension{{Type: "TIME", Volume: vol("1")}}}}},
		{"UnknownDimension", []CDRPeriod{{StartDateTime: "2026-06-10T10:00:00Z", Dimensions: []CDRDimension{{Type: "SPEED", Volume: vol("1")}}}}},
		{"Duplicate", []CDRPeriod{{StartDateTime: "2026-06-10T10:00:00Z", Dimensions: []CDRDimension{{Type: "TIME", Volume: vol("1")}, {Type: "TIME", Volume: vol("1")}}}}},
		{"NegativeEnergy", []CDRPeriod{{StartDateTime: "2026-06-10T10:00:00Z", Dimensions: []CDRDimension{{Type: "ENERGY", Volume: vol("-1")}}}}},
		{"AfterEnd", []CDRPeriod{{StartDateTime: "2026-06-10T13:00:00Z", Dimensions: []CDRDimension{{Type: "TIME", Volume: vol("1")}}}}},
		{"ReservationLate", []CDRPeriod{
			{StartDateTime: "2026-06-10T10:00:00Z", Dimensions: []CDRDimension{{Type: "TIME", Volume: vol("1")}}},
			{StartDateTime: "2026-06-10T11:00:00Z", Dimensions: []CDRDimension{{Type: "RESERVATION_TIME", Volume: vol("1")}}}}},
	} {
		t.Run("ErrBadUsage/"+tt.name, func(t *testing.T) {
			if _, err := UsageFromCDRPeriods(Usage{End: end}, tt.periods); !errors.Is(err, ErrBadUsage) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	t.Run("ErrBadUsage/MeterRegisterBack", func(t *testing.T) {
		s := at(t, "2026-06-10T10:00:00Z")
		_, err := UsageFromMeterValues(Usage{}, []MeterValue{{Time: s, EnergyWh: MustDec("100")}, {Time: s.Add(time.Minute), EnergyWh: MustDec("99")}})
		if !errors.Is(err, ErrBadUsage) {
			t.Fatalf("err = %v", err)
		}
	})
}
