package m2mbilling_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/metering/ocmf"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
	"github.com/m2mhub/m2mhub/ocpp/gateway/m2mbilling"
)

type fakeHub struct {
	refuse   bool
	holds    []msat.Amount
	released int
	events   []metering.Event
}

func (h *fakeHub) RequestHold(_ context.Context, payer string, max msat.Amount, _ time.Duration, _ string) (m2mclient.HoldID, error) {
	if h.refuse {
		return m2mclient.HoldID{}, fmt.Errorf("%w: payer offline", m2mclient.ErrHoldRefused)
	}
	h.holds = append(h.holds, max)
	return m2mclient.HoldID{1}, nil
}

func (h *fakeHub) Release(context.Context, m2mclient.HoldID) error { h.released++; return nil }

func (h *fakeHub) Meter(_ context.Context, es ...metering.Event) error {
	h.events = append(h.events, es...)
	return nil
}

func sign(t *testing.T, key *ecdsa.PrivateKey, at time.Time, tx, kwh string) string {
	t.Helper()
	payload := fmt.Sprintf(`{"FV":"1.0","GI":"ACME AC-22","PG":"T1","MV":"Acme Meters","MS":"0901454D4800007F9F3E","IS":true,"IT":"ISO14443","ID":"1F2D3A4B",`+
		`"RD":[{"TM":"%s S","TX":"%s","RV":%s,"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"}]}`,
		at.Format("2006-01-02T15:04:05,000-0700"), tx, kwh)
	sum := sha256.Sum256([]byte(payload))
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return `OCMF|` + payload + `|{"SA":"ECDSA-secp256r1-SHA256","SD":"` + hex.EncodeToString(sig) + `"}`
}

func setup(t *testing.T, hub *fakeHub) (*m2mbilling.Billing, *ecdsa.PrivateKey, *contracts.Contract) {
	t.Helper()
	file, err := os.ReadFile(filepath.Join("..", "..", "..", "contracts", "testdata", "ocpi", "tariff.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := contracts.WrapOCPI(file, contracts.OCPIEnvelope{RateMsatPerUnit: contracts.MustDec("1000000"), TimeZone: "Europe/Berlin"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := contracts.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	meter, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&meter.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ocmf.ParsePublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m2mbilling.New(m2mbilling.Config{Holds: hub, Meter: hub, Contract: k, HoldMsat: 50_000_000,
		MeterKeys: map[string]*ocmf.PublicKey{"CS1": pub}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return b, meter, k
}

func TestSessionBilled(t *testing.T) {
	ctx := context.Background()
	hub := &fakeHub{}
	b, meter, k := setup(t, hub)
	s := gateway.Session{Station: "CS1", TransactionID: "tx-1", IDToken: "1F2D3A4B", Payer: "car-1"}
	if err := b.Begin(ctx, s); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	start := end.Add(-90 * time.Minute)
	good := []string{sign(t, meter, start, "B", "1000.000"), sign(t, meter, start.Add(time.Hour), "T", "1011.250"), sign(t, meter, end, "E", "1015.5")}
	forged := strings.Replace(good[2], `"RV":1015.5`, `"RV":1115.5`, 1)
	if err := b.Readings(ctx, s, good[:2]); err != nil {
		t.Fatal(err)
	}
	if err := b.Readings(ctx, s, []string{forged, "OCMF|junk", good[2]}); err != nil {
		t.Fatal(err)
	}
	if err := b.End(ctx, s); err != nil {
		t.Fatal(err)
	}
	// The hub captures and releases the hold once the event is paid:
	// the gateway names it and leaves it alone.
	if len(hub.holds) != 1 || hub.holds[0] != 50_000_000 || hub.released != 0 || len(hub.events) != 1 {
		t.Fatalf("holds %v, released %d, events %d", hub.holds, hub.released, len(hub.events))
	}
	e := hub.events[0]
	if got, want := e.Data.Attributes[contracts.HoldAttribute], (m2mclient.HoldID{1}).String(); got != want {
		t.Fatalf("event names hold %q, want %q", got, want)
	}
	if e.Data.Attributes[contracts.CDRAttrTokenUID] != "1F2D3A4B" || e.Data.Attributes[contracts.CDRAttrLocationID] != "CS1" {
		t.Fatalf("event attributes %v", e.Data.Attributes)
	}
	if !ocmf.BindsReadings(e.ID, good) {
		t.Fatalf("event %s does not bind the good readings", e.ID)
	}
	// The readings travel with the event, for the CDR's signed_data, with
	// the station's configured meter key (never one the station sent).
	der, err := x509.MarshalPKIXPublicKey(&meter.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(e.Data.SignedReadings, "\n") != strings.Join(good, "\n") ||
		e.Data.Attributes[contracts.CDRAttrMeterPublicKey] != base64.StdEncoding.EncodeToString(der) {
		t.Fatalf("event carries %d signed readings, meter key %q", len(e.Data.SignedReadings), e.Data.Attributes[contracts.CDRAttrMeterPublicKey])
	}
	if e.Subject != "car-1" || e.Data.Session != "CS1/tx-1" {
		t.Fatalf("event %+v", e)
	}
	// The hub prices the event; price it here the same way to check what
	// it will charge: 15.5 kWh of the example tariff.
	u := contracts.Usage{Device: "car-1", Session: e.Data.Session}
	var mvs []*ocmf.Message
	for _, r := range good {
		m, err := ocmf.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		mvs = append(mvs, m)
	}
	vals, err := ocmf.MeterValues(mvs)
	if err != nil {
		t.Fatal(err)
	}
	if u, err = contracts.UsageFromMeterValues(u, vals); err != nil {
		t.Fatal(err)
	}
	bd, err := contracts.Price(k, u)
	if err != nil || bd.TotalMsat == 0 {
		t.Fatalf("price %v, %v", bd.TotalMsat, err)
	}
	kwh := contracts.MustDec("0").Decimal
	for _, p := range e.Data.Periods {
		kwh = kwh.Add(contracts.MustDec(p.EnergyKWh).Decimal)
	}
	if kwh.String() != "15.5" {
		t.Fatalf("event carries %s kWh, want 15.5", kwh)
	}
}

func TestHoldRefused(t *testing.T) {
	hub := &fakeHub{refuse: true}
	b, _, _ := setup(t, hub)
	err := b.Begin(context.Background(), gateway.Session{Station: "CS1", TransactionID: "tx-2", Payer: "car-1"})
	if !errors.Is(err, gateway.ErrRefused) {
		t.Fatalf("err %v, want ErrRefused", err)
	}
	if err := b.End(context.Background(), gateway.Session{Station: "CS1", TransactionID: "tx-2"}); !errors.Is(err, m2mbilling.ErrNoSession) {
		t.Fatalf("end err %v", err)
	}
}

func TestForgedOnlyBillsNothing(t *testing.T) {
	ctx := context.Background()
	hub := &fakeHub{}
	b, meter, _ := setup(t, hub)
	s := gateway.Session{Station: "CS1", TransactionID: "tx-3", Payer: "car-1"}
	if err := b.Begin(ctx, s); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second).Add(-time.Hour)
	r1 := sign(t, meter, now, "B", "1.0")
	r2 := strings.Replace(sign(t, meter, now.Add(time.Minute), "E", "2.0"), `"RV":2.0`, `"RV":9.0`, 1)
	if err := b.Readings(ctx, s, []string{r1, r2}); err != nil {
		t.Fatal(err)
	}
	if err := b.End(ctx, s); err != nil {
		t.Fatal(err)
	}
	if len(hub.events) != 0 || hub.released != 1 {
		t.Fatalf("events %d, released %d: a forged reading was billed or the hold kept", len(hub.events), hub.released)
	}
}
