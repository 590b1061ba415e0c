package charging_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/ocppstation"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/metering/ocmf"
)

// TestSignedReadings: an event carrying a session's signed meter readings
// converts with them as the CDR's signed data when its id binds them and
// each verifies under the meter key it names; otherwise it does not
// convert (the intake dead-letters it as malformed).
func TestSignedReadings(t *testing.T) {
	meter := func() *ocppstation.Meter {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return &ocppstation.Meter{Key: k, Serial: "METER-7", Token: "1F2D3A4B"}
	}
	m, other := meter(), meter()
	start := time.Date(2026, 6, 10, 20, 30, 0, 0, time.UTC)
	var raw []string
	var msgs []*ocmf.Message
	for i, tx := range []string{"B", "C", "E"} {
		r, err := m.Sign(i+1, start.Add(time.Duration(i)*30*time.Minute), tx, decimal.New(1000+3*int64(i), 0))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := ocmf.Parse(r.OCMF)
		if err != nil {
			t.Fatal(err)
		}
		raw, msgs = append(raw, r.OCMF), append(msgs, msg)
	}
	forged, err := other.Sign(3, start.Add(time.Hour), "E", decimal.New(1006, 0))
	if err != nil {
		t.Fatal(err)
	}
	fm, err := ocmf.Parse(forged.OCMF)
	if err != nil {
		t.Fatal(err)
	}
	forgedID := ocmf.EventID([]*ocmf.Message{msgs[0], msgs[1], fm})
	key, err := m.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := other.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	event := func(id string, signed []string, key string) metering.Event {
		e := metering.Event{ID: id, Source: "prov", Subject: "car", Time: "2026-06-10T21:30:00Z",
			Data: metering.Data{Contract: strings.Repeat("ab", 32), Session: "s", Start: "2026-06-10T20:30:00Z", End: "2026-06-10T21:30:00Z",
				Periods:        []metering.Period{{Start: "2026-06-10T20:30:00Z", EnergyKWh: "6", State: "charging"}},
				SignedReadings: signed, Attributes: map[string]string{contracts.CDRAttrTokenUID: "1F2D3A4B"}}}
		if key != "" {
			e.Data.Attributes[contracts.CDRAttrMeterPublicKey] = key
		}
		return e
	}
	convert := func(e metering.Event) (charging.Usage, error) {
		u, err := metering.ToUsage(&e)
		if err != nil {
			t.Fatal(err)
		}
		return charging.UsageOf(&e, u)
	}

	t.Run("OK", func(t *testing.T) {
		ev, err := convert(event(ocmf.EventID(msgs), raw, key))
		if err != nil {
			t.Fatal(err)
		}
		sd := ev.SignedData
		if sd == nil || sd.EncodingMethod != "OCMF" || sd.PublicKey != key || len(sd.SignedValues) != 3 || ev.MeterID != "METER-7" {
			t.Fatalf("signed data %+v, meter %q", sd, ev.MeterID)
		}
		for i, v := range sd.SignedValues {
			blob, err := base64.StdEncoding.DecodeString(v.SignedData)
			if err != nil || string(blob) != raw[i] || v.Nature != []string{"Start", "Intermediate", "End"}[i] {
				t.Fatalf("signed value %d: %+v", i, v)
			}
		}
	})
	t.Run("NoSignedReadings", func(t *testing.T) {
		ev, err := convert(event("ev-plain", nil, ""))
		if err != nil || ev.SignedData != nil || ev.MeterID != "" {
			t.Fatalf("%+v, %v", ev.SignedData, err)
		}
	})
	for _, c := range []struct {
		name string
		e    metering.Event
		want string
	}{
		{"ErrNotBound", event("ev-1", raw, key), "does not bind"},
		{"ErrReordered", event(ocmf.EventID(msgs), []string{raw[1], raw[0], raw[2]}, key), "does not bind"},
		{"ErrNoMeterKey", event(ocmf.EventID(msgs), raw, ""), contracts.CDRAttrMeterPublicKey},
		{"ErrOtherMetersKey", event(ocmf.EventID(msgs), raw, otherKey), "signed_readings[0]"},
		{"ErrForgedReading", event(forgedID, []string{raw[0], raw[1], forged.OCMF}, key), "signed_readings[2]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := convert(c.e)
			if metering.Reason(err) != charging.RejectMalformed || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("UsageOf error %v, want malformed naming %q", err, c.want)
			}
		})
	}
}
