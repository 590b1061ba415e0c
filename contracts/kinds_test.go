package contracts

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"
)

// TestPriceToll uses the example toll table (msat prices, 50 bps hub fee):
// weekday peaks 06:30-09:00 and 15:00-17:00 (car 60,000, truck 250,000),
// night 22:00-06:00 for trucks only (100,000), default car 40,000, truck
// 160,000, motorcycle 10,000.
func TestPriceToll(t *testing.T) {
	c := MustExample(t, "toll")
	const oslo = "Europe/Oslo"
	mon := func(h, m int) time.Time { return local(t, oslo, 2026, time.June, 8, h, m) }
	wed := func(h, m int) time.Time { return local(t, oslo, 2026, time.June, 10, h, m) }
	sat := func(h, m int) time.Time { return local(t, oslo, 2026, time.June, 13, h, m) }
	tests := []struct {
		name     string
		class    string
		when     time.Time
		passages string
		element  int
		total    msat.Amount
		fee      msat.Amount // floor(total × 50 / 10000)
	}{
		{"CarMorningPeak", "car", mon(7, 15), "1", 0, 60_000, 300},
		{"CarPeakStartInclusive", "car", mon(6, 30), "1", 0, 60_000, 300},
		{"CarEveningPeakLastMinute", "car", mon(16, 59), "1", 1, 60_000, 300},
		{"CarEveningPeakEndExclusive", "car", mon(17, 0), "1", -1, 40_000, 200},
		{"TruckSaturdayNoPeak", "truck", sat(7, 15), "1", -1, 160_000, 800},
		{"TruckNightAcrossMidnight", "truck", wed(23, 30), "1", 2, 100_000, 500},
		{"TruckNightAfterMidnight", "truck", wed(5, 59), "1", 2, 100_000, 500},
		{"CarNightFallsToDefault", "car", wed(23, 30), "1", -1, 40_000, 200},
		{"MotorcycleNotInPeakTable", "motorcycle", mon(7, 15), "1", -1, 10_000, 50},
		{"ThreeCarPassages", "car", mon(7, 15), "3", 0, 180_000, 900}, // 3 × 60,000
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := MustPrice(t, c, Usage{Device: "tag-1", Provider: "gantry-7", VehicleClass: tt.class,
				EventTime: tt.when, Quantity: MustDec(tt.passages), Unit: "passage"})
			if len(b.Lines) != 1 || b.Lines[0].Element != tt.element {
				t.Fatalf("lines %+v, want one from element %d", b.Lines, tt.element)
			}
			if b.TotalMsat != tt.total || b.FeeMsat != tt.fee || b.ProviderMsat != tt.total-tt.fee {
				t.Fatalf("total %d fee %d provider %d, want %d %d", b.TotalMsat, b.FeeMsat, b.ProviderMsat, tt.total, tt.fee)
			}
		})
	}
	errs := []struct {
		name string
		u    Usage
		want error
	}{
		{"ErrNoPrice/UnknownClass", Usage{VehicleClass: "bus", EventTime: mon(7, 15), Quantity: MustDec("1")}, ErrNoPrice},
		{"ErrBadUsage/NoClass", Usage{EventTime: mon(7, 15), Quantity: MustDec("1")}, ErrBadUsage},
		{"ErrBadUsage/NoTime", Usage{VehicleClass: "car", Quantity: MustDec("1")}, ErrBadUsage},
		{"ErrBadUsage/ZeroPassages", Usage{VehicleClass: "car", EventTime: mon(7, 15)}, ErrBadUsage},
		{"ErrBadUsage/FractionalPassages", Usage{VehicleClass: "car", EventTime: mon(7, 15), Quantity: MustDec("1.5")}, ErrBadUsage},
		{"ErrBadUsage/WrongUnit", Usage{VehicleClass: "car", EventTime: mon(7, 15), Quantity: MustDec("1"), Unit: "km"}, ErrBadUsage},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Price(c, tt.u); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestPriceBandwidth uses the example tiers (msat): up to 1,000 MB at 50,
// up to 10,000 MB at 20, beyond at 5; hub fee 200 bps + 10 msat per event.
func TestPriceBandwidth(t *testing.T) {
	c := MustExample(t, "bandwidth")
	tests := []struct {
		name       string
		cumulative string
		mb         string
		lines      []msat.Amount
		total, fee msat.Amount
	}{
		// 10 MB × 50 = 500; fee floor(500 × 0.02) + 10 = 20.
		{"FirstTier", "0", "10", []msat.Amount{500}, 500, 20},
		// 990 → 1010: 10 MB × 50 + 10 MB × 20 = 700; fee 14 + 10.
		{"AcrossTierBoundary", "990", "20", []msat.Amount{500, 200}, 700, 24},
		// 9,999.5 → 10,001: 0.5 × 20 + 1 × 5 = 15; fee floor(0.3) + 10 = 10.
		{"IntoUnboundedTier", "9999.5", "1.5", []msat.Amount{10, 5}, 15, 10},
		// 990 → 10,010 spans all three: 500 + 9,000 × 20 + 10 × 5.
		{"AllThreeTiers", "990", "9020", []msat.Amount{500, 180_000, 50}, 180_550, 3_621},
		// 0.0001 MB × 50 = 0.005 msat, which rounds to 0; the 10 msat
		// per-event fee is capped at the total, so nobody goes negative.
		{"RoundsToZeroFeeCapped", "500", "0.0001", []msat.Amount{0}, 0, 0},
		// 0.01 MB × 50 = 0.5 msat rounds half up to 1.
		{"HalfUp", "0", "0.01", []msat.Amount{1}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := MustPrice(t, c, Usage{Device: "router-1", Provider: "uplink-1", Quantity: MustDec(tt.mb), Unit: "MB",
				CumulativeMB: MustDec(tt.cumulative), EventTime: at(t, "2026-06-10T12:00:00Z")})
			got := lineMsat(b)
			if len(got) != len(tt.lines) {
				t.Fatalf("lines %v, want %v", got, tt.lines)
			}
			for i := range got {
				if got[i] != tt.lines[i] {
					t.Fatalf("lines %v, want %v", got, tt.lines)
				}
			}
			if b.TotalMsat != tt.total || b.FeeMsat != tt.fee {
				t.Fatalf("total %d fee %d, want %d %d", b.TotalMsat, b.FeeMsat, tt.total, tt.fee)
			}
		})
	}
	t.Run("ErrOverLimit", func(t *testing.T) {
		capped := MustParse(t, `{"kind":"bandwidth","version":1,"id":"cap","currency":"msat",`+
			`"bandwidth":{"time_zone":"UTC","window":"day","tiers":[{"up_to_mb":"100","price_per_mb":"1"}]}}`)
		if _, err := Price(capped, Usage{Quantity: MustDec("20"), CumulativeMB: MustDec("90")}); !errors.Is(err, ErrOverLimit) {
			t.Fatalf("err = %v, want ErrOverLimit", err)
		}
		MustPrice(t, capped, Usage{Quantity: MustDec("10"), CumulativeMB: MustDec("90")})
	})
	t.Run("ErrBadUsage", func(t *testing.T) {
		for _, u := range []Usage{{Quantity: MustDec("-1")}, {Quantity: MustDec("1"), CumulativeMB: MustDec("-1")}, {Quantity: MustDec("1"), Unit: "GB"}} {
			if _, err := Price(c, u); !errors.Is(err, ErrBadUsage) {
				t.Fatalf("%+v: err = %v, want ErrBadUsage", u, err)
			}
		}
	})
}

func TestBandwidthWindowStart(t *testing.T) {
	month := MustExample(t, "bandwidth").Bandwidth
	if got, want := month.WindowStart(at(t, "2026-06-10T12:00:00Z")), at(t, "2026-06-01T00:00:00Z"); !got.Equal(want) {
		t.Errorf("month window starts %s, want %s", got, want)
	}
	doc := `{"kind":"bandwidth","version":1,"id":"w","currency":"msat","bandwidth":{"time_zone":"Europe/Amsterdam","window":"WINDOW","tiers":[{"price_per_mb":"1"}]}}`
	week := MustParse(t, strings.Replace(doc, "WINDOW", WindowWeek, 1)).Bandwidth
	// Sunday 2026-06-14 01:00 local: the week began Monday 2026-06-08 00:00 local.
	if got, want := week.WindowStart(at(t, "2026-06-13T23:00:00Z")), at(t, "2026-06-08T00:00:00+02:00"); !got.Equal(want) {
		t.Errorf("week window starts %s, want %s", got, want)
	}
	day := MustParse(t, strings.Replace(doc, "WINDOW", WindowDay, 1)).Bandwidth
	// 23:30 UTC on the 10th is already the 11th in Amsterdam.
	if got, want := day.WindowStart(at(t, "2026-06-10T23:30:00Z")), at(t, "2026-06-11T00:00:00+02:00"); !got.Equal(want) {
		t.Errorf("day window starts %s, want %s", got, want)
	}
}

// TestPriceEnergy uses the example microgrid contract: 0.12 EUR/kWh,
// 0.28 from 17:00 to 21:00, 0.05 on weekend middays, at 1,100,000
// msat/EUR with a 100 bps hub fee. The buyer pays the total, the seller
// earns the total less the fee.
func TestPriceEnergy(t *testing.T) {
	c := MustExample(t, "energy")
	const ams = "Europe/Amsterdam"
	wed := func(h, m int) time.Time { return local(t, ams, 2026, time.June, 10, h, m) }
	tests := []struct {
		name         string
		when         time.Time
		kwh          string
		element      int
		debit, fee   msat.Amount
		sellerCredit msat.Amount
	}{
		// 2.5 × 0.12 = 0.30 EUR = 330,000 msat; fee 3,300.
		{"Default", wed(12, 15), "2.5", -1, 330_000, 3_300, 326_700},
		// 1 × 0.28 = 0.28 = 308,000; fee 3,080.
		{"EveningBand", wed(17, 45), "1", 0, 308_000, 3_080, 304_920},
		{"EveningBandLastInterval", wed(20, 45), "1", 0, 308_000, 3_080, 304_920},
		{"EveningBandEnded", wed(21, 0), "1", -1, 132_000, 1_320, 130_680},
		// Saturday 11:00: 4 × 0.05 = 0.20 = 220,000.
		{"WeekendMidday", local(t, ams, 2026, time.June, 13, 11, 0), "4", 1, 220_000, 2_200, 217_800},
		// 0.001 kWh × 0.12 × 1,100,000 = 132 msat; fee floor(1.32) = 1.
		{"OneWattHour", wed(12, 0), "0.001", -1, 132, 1, 131},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := MustPrice(t, c, Usage{SellerMeter: "meter-a", BuyerMeter: "meter-b", EventTime: tt.when,
				Quantity: MustDec(tt.kwh), Unit: "kWh"})
			if b.Payer != "meter-b" || b.Provider != "meter-a" {
				t.Fatalf("payer %q provider %q", b.Payer, b.Provider)
			}
			if len(b.Lines) != 1 || b.Lines[0].Element != tt.element {
				t.Fatalf("lines %+v, want one from element %d", b.Lines, tt.element)
			}
			if b.TotalMsat != tt.debit || b.FeeMsat != tt.fee || b.ProviderMsat != tt.sellerCredit {
				t.Fatalf("debit %d fee %d credit %d, want %d %d %d", b.TotalMsat, b.FeeMsat, b.ProviderMsat, tt.debit, tt.fee, tt.sellerCredit)
			}
		})
	}
	// A prosumer sells at noon and buys in the evening: the two trades are
	// priced independently and settlement nets them. meter-a earns
	// 2 × 0.12 = 264,000 − 2,640 fee = 261,360 and pays 1 × 0.28 = 308,000:
	// net −46,640 msat.
	t.Run("ProsumerBothSides", func(t *testing.T) {
		sell := MustPrice(t, c, Usage{SellerMeter: "meter-a", BuyerMeter: "meter-b", EventTime: wed(12, 0), Quantity: MustDec("2")})
		buy := MustPrice(t, c, Usage{SellerMeter: "meter-b", BuyerMeter: "meter-a", EventTime: wed(18, 0), Quantity: MustDec("1")})
		net := int64(sell.ProviderMsat) - int64(buy.TotalMsat)
		if sell.Provider != "meter-a" || buy.Payer != "meter-a" || net != -46_640 {
			t.Fatalf("net %d (sell %+v, buy %+v)", net, sell, buy)
		}
	})
	errs := []struct {
		name string
		u    Usage
	}{
		{"NotOnInterval", Usage{SellerMeter: "a", BuyerMeter: "b", EventTime: wed(12, 7), Quantity: MustDec("1")}},
		{"SecondsOff", Usage{SellerMeter: "a", BuyerMeter: "b", EventTime: wed(12, 0).Add(time.Second), Quantity: MustDec("1")}},
		{"SameMeter", Usage{SellerMeter: "a", BuyerMeter: "a", EventTime: wed(12, 0), Quantity: MustDec("1")}},
		{"NoBuyer", Usage{SellerMeter: "a", EventTime: wed(12, 0), Quantity: MustDec("1")}},
		{"Negative", Usage{SellerMeter: "a", BuyerMeter: "b", EventTime: wed(12, 0), Quantity: MustDec("-1")}},
		{"WrongUnit", Usage{SellerMeter: "a", BuyerMeter: "b", EventTime: wed(12, 0), Quantity: MustDec("1"), Unit: "MWh"}},
	}
	for _, tt := range errs {
		t.Run("ErrBadUsage/"+tt.name, func(t *testing.T) {
			if _, err := Price(c, tt.u); !errors.Is(err, ErrBadUsage) {
				t.Fatalf("err = %v, want ErrBadUsage", err)
			}
		})
	}
}
