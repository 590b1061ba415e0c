package contracts

import (
	"errors"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"
)

// evDoc wraps an ev_charging body in an envelope priced in EUR at
// 1,000,000 msat per euro, so that 0.01 EUR is 10,000 msat and the msat
// figures below read as euros.
func evDoc(zone, body string) string {
	return `{"kind":"ev_charging","version":1,"id":"ocpi-test","currency":"EUR","rate_msat_per_unit":"1000000",` +
		`"ev_charging":{"time_zone":"` + zone + `",` + body + `}}`
}

// stepSwitchTariff is the OCPI 2.2.1 step_size example (Tariff "22"):
// charging 1.20/h before 17:00 in 30-minute steps, 2.40/h after 17:00 in
// 15-minute steps; parking 1.00/h before 20:00 in 15-minute steps; after
// 20:00 only charging is priced.
const stepSwitchTariff = `"elements":[
	{"price_components":[{"type":"TIME","price":"1.20","step_size":"1800"},{"type":"PARKING_TIME","price":"1.00","step_size":"900"}],
	 "restrictions":{"start_time":"00:00","end_time":"17:00"}},
	{"price_components":[{"type":"TIME","price":"2.40","step_size":"900"},{"type":"PARKING_TIME","price":"1.00","step_size":"900"}],
	 "restrictions":{"start_time":"17:00","end_time":"20:00"}},
	{"price_components":[{"type":"TIME","price":"2.40","step_size":"900"}],
	 "restrictions":{"start_time":"20:00","end_time":"00:00"}}]`

// complexTariff is the OCPI 2.2.1 "complex tariff" example with its current
// restrictions (below/above 32 A) expressed as power (below/above 22 kW),
// since the hub meters power.
const complexTariff = `"elements":[
	{"price_components":[{"type":"FLAT","price":"2.50","vat":"15","step_size":"1"}]},
	{"price_components":[{"type":"TIME","price":"1.00","vat":"20","step_size":"900"}],"restrictions":{"max_power":"22"}},
	{"price_components":[{"type":"TIME","price":"2.00","vat":"20","step_size":"600"}],
	 "restrictions":{"min_power":"22","day_of_week":["MONDAY","TUESDAY","WEDNESDAY","THURSDAY","FRIDAY"]}},
	{"price_components":[{"type":"TIME","price":"1.25","vat":"20","step_size":"600"}],
	 "restrictions":{"min_power":"22","day_of_week":["SATURDAY","SUNDAY"]}},
	{"price_components":[{"type":"PARKING_TIME","price":"5.00","vat":"10","step_size":"300"}],
	 "restrictions":{"start_time":"09:00","end_time":"18:00","day_of_week":["MONDAY","TUESDAY","WEDNESDAY","THURSDAY","FRIDAY"]}},
	{"price_components":[{"type":"PARKING_TIME","price":"6.00","vat":"10","step_size":"300"}],
	 "restrictions":{"start_time":"10:00","end_time":"17:00","day_of_week":["SATURDAY"]}}]`

type wantLine struct {
	component string
	element   int
	quantity  string
	msat      msat.Amount
}

type period struct {
	start   time.Time
	kwh, kw string
	state   string
}

func session(periods []period, end time.Time) Usage {
	u := Usage{Device: "car-1", Provider: "cp-1", Session: "s-1", Start: periods[0].start, End: end}
	for _, p := range periods {
		u.Periods = append(u.Periods, ChargingPeriod{Start: p.start, EnergyKWh: MustDec(p.kwh), PowerKW: MustDec(p.kw), State: p.state})
	}
	return u
}

func TestPriceEVCharging(t *testing.T) {
	const berlin, ams = "Europe/Berlin", "Europe/Amsterdam"
	wed := func(h, m int) time.Time { return local(t, berlin, 2026, time.June, 10, h, m) } // a Wednesday
	tests := []struct {
		name    string
		doc     string
		usage   Usage
		lines   []wantLine
		total   msat.Amount
		adjust  string
		vatMsat msat.Amount
	}{{
		// OCPI 2.2.1 "switching to different Tariff Element #1": plug in
		// 16:55, charge 10 min, park 2 min. Charging 5 min × 1.20/h =
		// 0.10 and 5 min × 2.40/h = 0.20, not rounded (parking is the
		// last time-based dimension); parking 2 min rounds up to the
		// 15-minute step: 15 min × 1.00/h = 0.25. Total 0.55.
		name: "OCPIStepSwitch1",
		doc:  evDoc(berlin, stepSwitchTariff),
		usage: session([]period{
			{wed(16, 55), "0", "11", StateCharging},
			{wed(17, 5), "0", "0", StateParking},
		}, wed(17, 7)),
		lines: []wantLine{
			{"TIME", 0, "0.083333333", 100_000},
			{"TIME", 1, "0.083333333", 200_000},
			{"PARKING_TIME", 1, "0.25", 250_000},
		},
		total: 550_000,
	}, {
		// OCPI 2.2.1 "switching to different Tariff Element #2": charge
		// 16:35-17:10. 35 min total rounds up to 45 with the last
		// element's 15-minute step; 25 min × 1.20/h = 0.50 before 17:00,
		// 10 + 10 extra = 20 min × 2.40/h = 0.80 after. Total 1.30.
		name:  "OCPIStepSwitch2",
		doc:   evDoc(berlin, stepSwitchTariff),
		usage: session([]period{{wed(16, 35), "0", "11", StateCharging}}, wed(17, 10)),
		lines: []wantLine{
			{"TIME", 0, "0.416666667", 500_000},
			{"TIME", 1, "0.333333333", 800_000},
		},
		total: 1_300_000,
	}, {
		// Free parking after 20:00: charge 19:40-19:52 (12 min × 2.40/h =
		// 0.48), park 19:52-20:12. Only 19:52-20:00 is priced (8 min), and
		// it rounds up to 15 min × 1.00/h = 0.25. Total 0.73. (The OCPI
		// document's own table for this case contradicts its tariff; the
		// figures here follow the tariff and the step rule.)
		name: "ParkingFreeAfter20",
		doc:  evDoc(berlin, stepSwitchTariff),
		usage: session([]period{
			{wed(19, 40), "0", "11", StateCharging},
			{wed(19, 52), "0", "0", StateParking},
		}, wed(20, 12)),
		lines: []wantLine{
			{"TIME", 1, "0.2", 480_000},
			{"PARKING_TIME", 1, "0.25", 250_000},
		},
		total: 730_000,
	}, {
		// Across midnight: 23:50-00:10 charging. 23:50-00:00 falls in the
		// 20:00-00:00 element (2.40/h), 00:00-00:10 in 00:00-17:00 (1.20/h,
		// 30-min step). 20 min total rounds up to 30: the extra 10 min go
		// to the last element: 10 min × 2.40/h = 0.40, 20 min × 1.20/h =
		// 0.40. Total 0.80.
		name: "AcrossMidnight",
		doc:  evDoc(berlin, stepSwitchTariff),
		usage: session([]period{{wed(23, 50), "0", "11", StateCharging}},
			local(t, berlin, 2026, time.June, 11, 0, 10)),
		lines: []wantLine{
			{"TIME", 2, "0.166666667", 400_000},
			{"TIME", 0, "0.333333333", 400_000},
		},
		total: 800_000,
	}, {
		// OCPI step_size for ENERGY: 115.2 Wh with step 1 bills 116 Wh:
		// 0.116 kWh × 0.25 = 0.029.
		name:  "EnergyStep1",
		doc:   evDoc("UTC", `"elements":[{"price_components":[{"type":"ENERGY","price":"0.25","step_size":"1"}]}]`),
		usage: session([]period{{at(t, "2026-06-10T10:00:00Z"), "0.1152", "11", StateCharging}}, at(t, "2026-06-10T10:01:00Z")),
		lines: []wantLine{{"ENERGY", 0, "0.116", 29_000}},
		total: 29_000,
	}, {
		// Step 25 Wh: 115.2 Wh bills 125 Wh: 0.125 × 0.25 = 0.03125.
		name:  "EnergyStep25",
		doc:   evDoc("UTC", `"elements":[{"price_components":[{"type":"ENERGY","price":"0.25","step_size":"25"}]}]`),
		usage: session([]period{{at(t, "2026-06-10T10:00:00Z"), "0.1152", "11", StateCharging}}, at(t, "2026-06-10T10:01:00Z")),
		lines: []wantLine{{"ENERGY", 0, "0.125", 31_250}},
		total: 31_250,
	}, {
		// Step 500 Wh: 115.2 Wh bills 500 Wh: 0.5 × 0.25 = 0.125.
		name:  "EnergyStep500",
		doc:   evDoc("UTC", `"elements":[{"price_components":[{"type":"ENERGY","price":"0.25","step_size":"500"}]}]`),
		usage: session([]period{{at(t, "2026-06-10T10:00:00Z"), "0.1152", "11", StateCharging}}, at(t, "2026-06-10T10:01:00Z")),
		lines: []wantLine{{"ENERGY", 0, "0.5", 125_000}},
		total: 125_000,
	}, {
		// OCPI "0.25 per kWh + minimum price" (min 0.50 excl., 0.55 incl.
		// VAT): 1.2 kWh costs 0.30, raised to 0.50; VAT is then the
		// bound's 0.55 − 0.50 = 0.05.
		name: "MinPriceApplies",
		doc: evDoc("UTC", `"min_price":{"excl_vat":"0.50","incl_vat":"0.55"},`+
			`"elements":[{"price_components":[{"type":"ENERGY","price":"0.25","vat":"10","step_size":"1"}]}]`),
		usage:   session([]period{{at(t, "2026-06-10T10:00:00Z"), "1.2", "11", StateCharging}}, at(t, "2026-06-10T10:10:00Z")),
		lines:   []wantLine{{"ENERGY", 0, "1.2", 300_000}},
		total:   500_000,
		adjust:  "MIN_PRICE",
		vatMsat: 50_000,
	}, {
		// Same tariff, 3 kWh = 0.75 is above the minimum; VAT 10 % = 0.075.
		name: "MinPriceNotApplied",
		doc: evDoc("UTC", `"min_price":{"excl_vat":"0.50","incl_vat":"0.55"},`+
			`"elements":[{"price_components":[{"type":"ENERGY","price":"0.25","vat":"10","step_size":"1"}]}]`),
		usage:   session([]period{{at(t, "2026-06-10T10:00:00Z"), "3", "11", StateCharging}}, at(t, "2026-06-10T10:10:00Z")),
		lines:   []wantLine{{"ENERGY", 0, "3", 750_000}},
		total:   750_000,
		vatMsat: 75_000,
	}, {
		// Max price 10.00 without incl_vat: 50 kWh × 0.25 = 12.50 is
		// capped at 10.00; VAT scales with it: 1.25 × 10/12.5 = 1.00.
		name: "MaxPrice",
		doc: evDoc("UTC", `"max_price":{"excl_vat":"10"},`+
			`"elements":[{"price_components":[{"type":"ENERGY","price":"0.25","vat":"10","step_size":"1"}]}]`),
		usage:   session([]period{{at(t, "2026-06-10T10:00:00Z"), "50", "50", StateCharging}}, at(t, "2026-06-10T11:00:00Z")),
		lines:   []wantLine{{"ENERGY", 0, "50", 12_500_000}},
		total:   10_000_000,
		adjust:  "MAX_PRICE",
		vatMsat: 1_000_000,
	}, {
		// OCPI "0.25 per kWh + parking fee + start fee": FLAT 0.50 (20 %),
		// ENERGY 0.25 (10 %), PARKING_TIME 2.00/h in 15-min steps (20 %).
		// Charge 1 h with 10 kWh, park 20 min → 30 min billed.
		// 0.50 + 2.50 + 1.00 = 4.00; VAT 0.10 + 0.25 + 0.20 = 0.55.
		name: "ParkingAndStartFee",
		doc: evDoc("UTC", `"elements":[{"price_components":[`+
			`{"type":"FLAT","price":"0.50","vat":"20","step_size":"1"},`+
			`{"type":"ENERGY","price":"0.25","vat":"10","step_size":"1"},`+
			`{"type":"PARKING_TIME","price":"2.00","vat":"20","step_size":"900"}]}]`),
		usage: session([]period{
			{at(t, "2026-06-10T10:00:00Z"), "10", "10", StateCharging},
			{at(t, "2026-06-10T11:00:00Z"), "0", "0", StateParking},
		}, at(t, "2026-06-10T11:20:00Z")),
		lines: []wantLine{
			{"FLAT", 0, "1", 500_000},
			{"ENERGY", 0, "10", 2_500_000},
			{"PARKING_TIME", 0, "0.5", 1_000_000},
		},
		total:   4_000_000,
		vatMsat: 550_000,
	}, {
		// OCPI complex tariff, weekday case: 165 min charging below 32 A
		// (here 11 kW), 42 min parking from 12:45 → 45 min billed.
		// 2.50 + 2.75 + 3.75 = 9.00; VAT 0.375 + 0.55 + 0.375 = 1.30, as
		// in the OCPI table (9.00 excl., 10.30 incl.).
		name: "OCPIComplexWeekday",
		doc:  evDoc(ams, complexTariff),
		usage: session([]period{
			{local(t, ams, 2026, time.June, 10, 10, 0), "30", "11", StateCharging},
			{local(t, ams, 2026, time.June, 10, 12, 45), "0", "0", StateParking},
		}, local(t, ams, 2026, time.June, 10, 13, 27)),
		lines: []wantLine{
			{"FLAT", 0, "1", 2_500_000},
			{"TIME", 1, "2.75", 2_750_000},
			{"PARKING_TIME", 4, "0.75", 3_750_000},
		},
		total:   9_000_000,
		vatMsat: 1_300_000,
	}, {
		// OCPI complex tariff, Saturday case: 13:30, 114 min at high power
		// (1.25/h, not rounded: parking follows) = 2.375; 71 min parking
		// from 15:24 in the Saturday band → 75 min × 6.00/h = 7.50.
		// 2.50 + 2.375 + 7.50 = 12.375.
		name: "OCPIComplexSaturday",
		doc:  evDoc(ams, complexTariff),
		usage: session([]period{
			{local(t, ams, 2026, time.June, 13, 13, 30), "80", "50", StateCharging},
			{local(t, ams, 2026, time.June, 13, 15, 24), "0", "0", StateParking},
		}, local(t, ams, 2026, time.June, 13, 16, 35)),
		lines: []wantLine{
			{"FLAT", 0, "1", 2_500_000},
			{"TIME", 3, "1.9", 2_375_000},
			{"PARKING_TIME", 5, "1.25", 7_500_000},
		},
		total:   12_375_000,
		vatMsat: 375_000 + 475_000 + 750_000,
	}, {
		// DST spring forward in Amsterdam (2026-03-29, 02:00 CET → 03:00
		// CEST). Night rate 1.00/h 23:00-03:00, else 3.00/h. 01:00-04:00
		// local is two real hours: 01:00-03:00 local is one hour (1.00),
		// 03:00-04:00 one hour (3.00). Total 4.00, not the wall clock's 5.00.
		name: "DSTSpringForward",
		doc: evDoc(ams, `"elements":[`+
			`{"price_components":[{"type":"TIME","price":"1.00","step_size":"1"}],"restrictions":{"start_time":"23:00","end_time":"03:00"}},`+
			`{"price_components":[{"type":"TIME","price":"3.00","step_size":"1"}]}]`),
		usage: session([]period{{local(t, ams, 2026, time.March, 29, 1, 0), "0", "11", StateCharging}},
			local(t, ams, 2026, time.March, 29, 4, 0)),
		lines: []wantLine{
			{"TIME", 0, "1", 1_000_000},
			{"TIME", 1, "1", 3_000_000},
		},
		total: 4_000_000,
	}, {
		// DST fall back (2026-10-25, 03:00 CEST → 02:00 CET). 01:00 CEST to
		// 04:00 CET is four real hours; the night band ends at 03:00 CET,
		// three real hours after the start (3.00), then one hour at 3.00/h.
		name: "DSTFallBack",
		doc: evDoc(ams, `"elements":[`+
			`{"price_components":[{"type":"TIME","price":"1.00","step_size":"1"}],"restrictions":{"start_time":"23:00","end_time":"03:00"}},`+
			`{"price_components":[{"type":"TIME","price":"3.00","step_size":"1"}]}]`),
		usage: session([]period{{at(t, "2026-10-25T01:00:00+02:00"), "0", "11", StateCharging}},
			at(t, "2026-10-25T04:00:00+01:00")),
		lines: []wantLine{
			{"TIME", 0, "3", 3_000_000},
			{"TIME", 1, "1", 3_000_000},
		},
		total: 6_000_000,
	}, {
		// max_kwh: the first 10 kWh at 0.40, then 0.30. The second period
		// starts at 10 kWh delivered, where max_kwh (exclusive) stops
		// matching: 4.00 + 5 × 0.30 = 5.50.
		name: "KWhRestriction",
		doc: evDoc("UTC", `"elements":[`+
			`{"price_components":[{"type":"ENERGY","price":"0.40","step_size":"1"}],"restrictions":{"max_kwh":"10"}},`+
			`{"price_components":[{"type":"ENERGY","price":"0.30","step_size":"1"}]}]`),
		usage: session([]period{
			{at(t, "2026-06-10T10:00:00Z"), "10", "22", StateCharging},
			{at(t, "2026-06-10T10:30:00Z"), "5", "22", StateCharging},
		}, at(t, "2026-06-10T10:45:00Z")),
		lines: []wantLine{
			{"ENERGY", 0, "10", 4_000_000},
			{"ENERGY", 1, "5", 1_500_000},
		},
		total: 5_500_000,
	}, {
		// OCPI "first hour free": max_duration 3600 on a zero price; the
		// one 90-minute period is cut at one hour: 30 min × 2.00/h = 1.00.
		name: "FirstHourFree",
		doc: evDoc("UTC", `"elements":[`+
			`{"price_components":[{"type":"TIME","price":"0","step_size":"60"}],"restrictions":{"max_duration":"3600"}},`+
			`{"price_components":[{"type":"TIME","price":"2.00","step_size":"60"}]}]`),
		usage: session([]period{{at(t, "2026-06-10T10:00:00Z"), "0", "11", StateCharging}}, at(t, "2026-06-10T11:30:00Z")),
		lines: []wantLine{
			{"TIME", 0, "1", 0},
			{"TIME", 1, "0.5", 1_000_000},
		},
		total: 1_000_000,
	}, {
		// start_date/end_date: Christmas Day 0.50/h (end date exclusive),
		// else 1.00/h; 23:00-01:00 local over the date change.
		name: "DateRestriction",
		doc: evDoc(ams, `"elements":[`+
			`{"price_components":[{"type":"TIME","price":"0.50","step_size":"1"}],"restrictions":{"start_date":"2026-12-25","end_date":"2026-12-26"}},`+
			`{"price_components":[{"type":"TIME","price":"1.00","step_size":"1"}]}]`),
		usage: session([]period{{local(t, ams, 2026, time.December, 25, 23, 0), "0", "11", StateCharging}},
			local(t, ams, 2026, time.December, 26, 1, 0)),
		lines: []wantLine{
			{"TIME", 0, "1", 500_000},
			{"TIME", 1, "1", 1_000_000},
		},
		total: 1_500_000,
	}, {
		// min_power: 2.00/h at 50 kW and up, else 1.00/h. 30 min at 100 kW
		// and 30 min at 20 kW: 1.00 + 0.50.
		name: "PowerRestriction",
		doc: evDoc("UTC", `"elements":[`+
			`{"price_components":[{"type":"TIME","price":"2.00","step_size":"1"}],"restrictions":{"min_power":"50"}},`+
			`{"price_components":[{"type":"TIME","price":"1.00","step_size":"1"}]}]`),
		usage: session([]period{
			{at(t, "2026-06-10T10:00:00Z"), "50", "100", StateCharging},
			{at(t, "2026-06-10T10:30:00Z"), "10", "20", StateCharging},
		}, at(t, "2026-06-10T11:00:00Z")),
		lines: []wantLine{
			{"TIME", 0, "0.5", 1_000_000},
			{"TIME", 1, "0.5", 500_000},
		},
		total: 1_500_000,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := MustParse(t, tt.doc)
			b := MustPrice(t, c, tt.usage)
			if len(b.Lines) != len(tt.lines) {
				t.Fatalf("lines = %+v, want %d", b.Lines, len(tt.lines))
			}
			for i, w := range tt.lines {
				l := b.Lines[i]
				if l.Component != w.component || l.Element != w.element || l.Quantity.String() != w.quantity || l.Msat != w.msat {
					t.Errorf("line %d = %s e%d %s %s %d msat, want %s e%d %s %d msat", i,
						l.Component, l.Element, l.Quantity, l.Unit, l.Msat, w.component, w.element, w.quantity, w.msat)
				}
			}
			if b.TotalMsat != tt.total || b.Adjustment != tt.adjust || b.VATMsat != tt.vatMsat {
				t.Errorf("total %d %q vat %d, want %d %q vat %d", b.TotalMsat, b.Adjustment, b.VATMsat, tt.total, tt.adjust, tt.vatMsat)
			}
		})
	}
}

// TestPriceEVExample prices a session under the published example tariff:
// Wednesday 22:30-23:30 in Amsterdam, 6 kWh, so the day/night switch at
// 23:00 splits the hour and its energy in half. At 1,100,000 msat/EUR:
// FLAT 0.50 → 550,000; day 3 kWh × 0.30 = 0.90 → 990,000 and 30 min ×
// 1.20/h = 0.60 → 660,000; night 3 kWh × 0.22 = 0.66 → 726,000 and 30 min ×
// 0.60/h = 0.30 → 330,000. Total 3,256,000; fee 1 % = 32,560; VAT 21 % per
// line = 115,500 + 207,900 + 138,600 + 152,460 + 69,300 = 683,760.
func TestPriceEVExample(t *testing.T) {
	c := MustExample(t, "ev_charging")
	const ams = "Europe/Amsterdam"
	b := MustPrice(t, c, session([]period{{local(t, ams, 2026, time.June, 10, 22, 30), "6", "11", StateCharging}},
		local(t, ams, 2026, time.June, 10, 23, 30)))
	want := []msat.Amount{550_000, 990_000, 660_000, 726_000, 330_000}
	got := lineMsat(b)
	if len(got) != len(want) {
		t.Fatalf("lines %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("lines %v, want %v", got, want)
		}
	}
	if b.TotalMsat != 3_256_000 || b.FeeMsat != 32_560 || b.ProviderMsat != 3_223_440 || b.VATMsat != 683_760 {
		t.Fatalf("total %d fee %d provider %d vat %d", b.TotalMsat, b.FeeMsat, b.ProviderMsat, b.VATMsat)
	}
}

func TestPriceEVErrors(t *testing.T) {
	c := MustParse(t, evDoc("UTC", `"elements":[{"price_components":[{"type":"TIME","price":"1","step_size":"1"}]}]`))
	start := at(t, "2026-06-10T10:00:00Z")
	good := session([]period{{start, "1", "11", StateCharging}}, start.Add(time.Hour))
	h := c.Hash()
	other := h
	other[0] ^= 1
	tests := []struct {
		name string
		edit func(u *Usage)
		want error
	}{
		{"ErrBadUsage/NoPeriods", func(u *Usage) { u.Periods = nil }, ErrBadUsage},
		{"ErrBadUsage/EndBeforeStart", func(u *Usage) { u.End = u.Start.Add(-time.Second) }, ErrBadUsage},
		{"ErrBadUsage/TooLong", func(u *Usage) { u.End = u.Start.Add(32 * 24 * time.Hour) }, ErrBadUsage},
		{"ErrBadUsage/FirstPeriodLate", func(u *Usage) { u.Periods[0].Start = u.Start.Add(time.Minute) }, ErrBadUsage},
		{"ErrBadUsage/BadState", func(u *Usage) { u.Periods[0].State = "idle" }, ErrBadUsage},
		{"ErrBadUsage/NegativeEnergy", func(u *Usage) { u.Periods[0].EnergyKWh = MustDec("-1") }, ErrBadUsage},
		{"ErrBadUsage/PeriodsOutOfOrder", func(u *Usage) {
			u.Periods = append(u.Periods, ChargingPeriod{Start: u.Start, State: StateParking})
		}, ErrBadUsage},
		{"ErrBadUsage/PeriodAfterEnd", func(u *Usage) {
			u.Periods = append(u.Periods, ChargingPeriod{Start: u.End.Add(time.Minute), State: StateParking})
		}, ErrBadUsage},
		{"ErrContractMismatch", func(u *Usage) { u.Contract = hexOf(other) }, ErrContractMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := good
			u.Periods = append([]ChargingPeriod(nil), good.Periods...)
			tt.edit(&u)
			if _, err := Price(c, u); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("OK/MatchingContractHash", func(t *testing.T) {
		u := good
		u.Contract = hexOf(h)
		MustPrice(t, c, u)
	})
}
