package contracts

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/shopspring/decimal"
)

// testCDRSession is the non-price part of a CDR.
func testCDRSession() CDRSession {
	return CDRSession{
		CountryCode: "DE", PartyID: "ACM", ID: "cdr-0001", SessionID: "s-2026-06-10-1",
		Token:      CDRToken{CountryCode: "DE", PartyID: "HUB", UID: "car-1", Type: "APP_USER", ContractID: "DE-HUB-C00000001-X"},
		AuthMethod: "AUTH_REQUEST",
		Location: CDRLocation{ID: "LOC1", Address: "Hauptstraße 1", City: "Berlin", Country: "DEU",
			Coordinates: GeoLocation{Latitude: "52.520008", Longitude: "13.404954"}, EvseUID: "3256", EvseID: "DE*ACM*E1234*1",
			ConnectorID: "1", ConnectorStandard: "IEC_62196_T2", ConnectorFormat: "SOCKET", ConnectorPowerType: "AC_3_PHASE"},
		LastUpdated: time.Date(2026, 6, 10, 21, 5, 0, 0, time.UTC),
	}
}

// mustCDR builds the CDR of u under c and checks what every CDR must
// keep: the msat totals are the breakdown's, the dimension costs add up to
// its subtotal, the currency figures are the msat ones at the stated rate,
// and pricing the CDR's own charging periods gives the same breakdown.
func mustCDR(tb fataler, c *Contract, u Usage) (*CDR, Breakdown) {
	tb.Helper()
	b, err := Price(c, u)
	if err != nil {
		tb.Fatalf("price: %v", err)
	}
	cdr, err := NewCDR(c, u, b, testCDRSession())
	if err != nil {
		tb.Fatalf("cdr: %v", err)
	}
	m := cdr.M2MHub
	if m.TotalMsat != b.TotalMsat || m.VATMsat != b.VATMsat || m.FeeMsat+m.ProviderMsat != m.TotalMsat {
		tb.Fatalf("cdr msat %+v, breakdown total %d vat %d", m, b.TotalMsat, b.VATMsat)
	}
	sum := m.FixedMsat + m.EnergyMsat + m.TimeMsat + m.ParkingMsat + m.ReservationMsat
	want := b.SubtotalMsat
	if b.TaxIncluded {
		var v uint64
		for _, l := range b.Lines {
			v += uint64(l.VATMsat)
		}
		want -= msat.Amount(v)
	}
	if sum != want {
		tb.Fatalf("dimensions add to %d msat, subtotal %d", sum, want)
	}
	excl := b.TotalMsat
	if b.TaxIncluded {
		excl -= b.VATMsat
	}
	// The currency figure is the msat one at the stated rate and places.
	if want := decimal.NewFromUint64(uint64(excl)).DivRound(m.RateMsatPerUnit.Decimal, int32(m.CurrencyDecimals)); !cdr.TotalCost.ExclVAT.Equal(want) {
		tb.Fatalf("total_cost.excl_vat %s, want %d msat / %s = %s", cdr.TotalCost.ExclVAT, excl, m.RateMsatPerUnit, want)
	}
	end := Usage{Device: u.Device, Provider: u.Provider, TariffType: u.TariffType, End: u.End}
	if u.Reservation != nil && u.Reservation.Expired {
		end.End = u.Reservation.End
	}
	back, err := UsageFromCDRPeriods(end, cdr.ChargingPeriods)
	if err != nil {
		tb.Fatalf("the CDR's periods are refused: %v", err)
	}
	b2, err := Price(c, back)
	if err != nil || !reflect.DeepEqual(b, b2) {
		tb.Fatalf("the CDR's periods price differently: %v\n%+v\n%+v", err, b, b2)
	}
	return cdr, b
}

func TestCDR(t *testing.T) {
	t.Run("OK/ExampleSession", func(t *testing.T) {
		b, err := os.ReadFile("testdata/ocpi/tariff.json")
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseOCPI(b, OCPIEnvelope{RateMsatPerUnit: MustDec("1000000"), TimeZone: "Europe/Berlin"})
		if err != nil {
			t.Fatal(err)
		}
		u, err := ParseUsage(mustRead(t, "testdata/ocpi/usage.json"))
		if err != nil {
			t.Fatal(err)
		}
		cdr, _ := mustCDR(t, c, u)
		// 11.895 EUR excl., + 2.26005 VAT; energy 6.86 + 2.535; parking 2.00.
		if cdr.TotalCost.ExclVAT.String() != "11.895" || cdr.TotalCost.InclVAT == nil || cdr.TotalCost.InclVAT.String() != "14.15505" ||
			cdr.TotalEnergyCost.ExclVAT.String() != "9.395" || cdr.TotalParkingCost.ExclVAT.String() != "2" ||
			cdr.TotalFixedCost.ExclVAT.String() != "0.5" || cdr.TotalTimeCost != nil {
			t.Fatalf("costs %+v", cdr)
		}
		if cdr.TotalEnergy.String() != "20.5" || cdr.TotalTime.String() != "2.5" || cdr.TotalParkingTime.String() != "0.333333333" {
			t.Fatalf("totals energy %s time %s parking %s", cdr.TotalEnergy, cdr.TotalTime, cdr.TotalParkingTime)
		}
		if cdr.StartDateTime != "2026-06-10T18:30:00Z" || cdr.EndDateTime != "2026-06-10T21:00:00Z" || len(cdr.ChargingPeriods) != 3 ||
			len(cdr.Tariffs) != 1 || cdr.Tariffs[0].ID != "AC-22-2026" || cdr.ChargingPeriods[0].TariffID != "AC-22-2026" {
			t.Fatalf("cdr %+v", cdr)
		}
		js, err := json.Marshal(cdr)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{`"country_code":"DE"`, `"cdr_token":{`, `"auth_method":"AUTH_REQUEST"`, `"cdr_location":{`, `"currency":"EUR"`,
			`"charging_periods":[{"start_date_time":"2026-06-10T18:30:00Z","dimensions":[{"type":"ENERGY","volume":14}`,
			`"total_cost":{"excl_vat":11.895,"incl_vat":14.15505}`, `"last_updated":"2026-06-10T21:05:00Z"`, `"total_msat":11895000`,
			`"tariff_alt_url":"https://acme-charging.example/tariffs/ac-22"`} {
			if !strings.Contains(string(js), k) {
				t.Errorf("CDR JSON lacks %s:\n%s", k, js)
			}
		}
	})
	t.Run("OK/ExpiredReservation", func(t *testing.T) {
		c := mustOCPI(t, "Europe/Berlin", ocpiTariff("17", "", expireFeeElements))
		s := local(t, "Europe/Berlin", 2026, time.June, 8, 8, 0)
		cdr, b := mustCDR(t, c, Usage{Device: "car-1", Provider: "cp-1", Reservation: &Reservation{Start: s, End: s.Add(time.Hour), Expired: true}})
		if b.TotalMsat != 6_000_000 || cdr.TotalReservationCost.ExclVAT.String() != "6" || cdr.TotalCost.InclVAT.String() != "7.2" ||
			len(cdr.ChargingPeriods) != 1 || cdr.TotalEnergy.String() != "0" {
			t.Fatalf("cdr %+v", cdr)
		}
	})
	t.Run("OK/TaxIncluded", func(t *testing.T) {
		c := mustOCPI(t, "UTC", ocpiTariff("t", `"tax_included":"YES",`, `{"price_components":[{"type":"ENERGY","price":0.36,"vat":20,"step_size":1}]}`))
		s := at(t, "2026-06-10T09:00:00Z")
		cdr, _ := mustCDR(t, c, sess(s.Add(time.Hour), cp(s, "10", "11", "16", StateCharging)))
		// 3.60 charged, of which 0.60 VAT: 3.00 excl., 3.60 incl.
		if cdr.TotalCost.ExclVAT.String() != "3" || cdr.TotalCost.InclVAT.String() != "3.6" || cdr.M2MHub.TotalMsat != 3_600_000 || !cdr.M2MHub.TaxIncluded {
			t.Fatalf("cdr %+v", cdr)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		c := mustOCPI(t, "UTC", ocpiTariff("t", "", energy025))
		s := at(t, "2026-06-10T09:00:00Z")
		u := sess(s.Add(time.Hour), cp(s, "10", "11", "16", StateCharging))
		b := MustPrice(t, c, u)
		bad := testCDRSession()
		bad.AuthMethod = "TRUST_ME"
		if _, err := NewCDR(c, u, b, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("auth method: %v", err)
		}
		other := b
		other.Contract = strings.Repeat("0", 64)
		if _, err := NewCDR(c, u, other, testCDRSession()); !errors.Is(err, ErrInvalid) {
			t.Errorf("other contract: %v", err)
		}
		msat := MustExample(t, "toll")
		if _, err := NewCDR(msat, u, b, testCDRSession()); !errors.Is(err, ErrInvalid) {
			t.Errorf("toll contract: %v", err)
		}
	})
}
