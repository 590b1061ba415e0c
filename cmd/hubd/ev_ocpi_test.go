package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/metering/ocmf"
)

// signOCMF signs one OCMF reading with a calibration meter's P-256 key.
func signOCMF(t *testing.T, key *ecdsa.PrivateKey, page int, at time.Time, tx string, kwh string) string {
	t.Helper()
	payload := fmt.Sprintf(`{"FV":"1.0","GI":"ACME AC-22","PG":"T%d","MV":"Acme Meters","MS":"0901454D4800007F9F3E","IS":true,"IT":"ISO14443","ID":"1F2D3A4B",`+
		`"RD":[{"TM":"%s S","TX":"%s","RV":%s,"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"}]}`,
		page, at.Format("2006-01-02T15:04:05,000-0700"), tx, kwh)
	sum := sha256.Sum256([]byte(payload))
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return `OCMF|` + payload + `|{"SA":"ECDSA-secp256r1-SHA256","SD":"` + hex.EncodeToString(sig) + `"}`
}

// exampleTariffFile is the OCPI tariff docs/ev-charging.md publishes.
var exampleTariffFile = filepath.Join("..", "..", "contracts", "testdata", "ocpi", "tariff.json")

// exampleTariff is that tariff wrapped as hubctl contract publish wraps it
// with the docs' flags (1,000,000 msat per EUR, Europe/Berlin), and its
// contract.
func exampleTariff(t *testing.T) ([]byte, *contracts.Contract) {
	t.Helper()
	file, err := os.ReadFile(exampleTariffFile)
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
	return doc, k
}

// ocmfSession parses a session's OCMF readings and prices them under k as
// the hub will, for the session u names (payer, provider, id).
func ocmfSession(t *testing.T, k *contracts.Contract, u contracts.Usage, raw []string) ([]*ocmf.Message, contracts.Usage, contracts.Breakdown) {
	t.Helper()
	msgs := make([]*ocmf.Message, len(raw))
	for i, r := range raw {
		m, err := ocmf.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	mvs, err := ocmf.MeterValues(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if u, err = contracts.UsageFromMeterValues(u, mvs); err != nil {
		t.Fatal(err)
	}
	b, err := contracts.Price(k, u)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, u, b
}

// TestEVOCPIEndToEnd runs an EV session through the real hubd as a CPO
// would: its OCPI tariff published as is, the session billed from the
// meter's OCMF-signed readings under an event id that binds them, paid by
// the car's channel; then the session's OCPI CDR states exactly what the
// channel paid, and the receipt names the readings.
func TestEVOCPIEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd with its regtest btcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := startMeterHub(t, t.TempDir())

	// The CPO's OCPI tariff, as it publishes it.
	doc, k := exampleTariff(t)
	hash := h.publish(t, ctx, doc)
	if hash != hex.EncodeToString(func() []byte { x := k.Hash(); return x[:] }()) {
		t.Fatalf("hub stored the tariff as %s", hash)
	}

	cp := h.addProvider(t, ctx, nil, "charger")
	carKey, carID := h.enrol(t, ctx, "car", hub.RolePayer)
	car := h.connect(t, ctx, carKey, carID, false)
	h.fund(t, ctx, 1_000_000, car)

	// The charger's meter signs the begin, an intermediate and the end
	// reading; the provider verifies them before it bills anything.
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
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().In(berlin).Truncate(time.Second).Add(-time.Minute)
	start := end.Add(-90 * time.Minute)
	raw := []string{
		signOCMF(t, meter, 1, start, "B", "1000.000"),
		signOCMF(t, meter, 2, start.Add(time.Hour), "C", "1011.250"),
		signOCMF(t, meter, 3, end, "E", "1015.5"),
	}
	msgs, u, want := ocmfSession(t, k, contracts.Usage{Device: carID, Provider: cp.id, Session: "ocpi-1"}, raw)
	for _, m := range msgs {
		if err := m.Verify(pub); err != nil {
			t.Fatal(err)
		}
	}
	forged, err := ocmf.Parse(strings.Replace(raw[2], `"RV":1015.5`, `"RV":1115.5`, 1))
	if err != nil || forged.Verify(pub) == nil {
		t.Fatalf("a forged reading verified (parse err %v)", err)
	}

	// The usage event: its id binds the billed readings.
	e := metering.Event{ID: ocmf.EventID(msgs), Subject: carID, Time: rfc(end), Data: metering.Data{
		Contract: hash, Session: u.Session, Start: rfc(u.Start), End: rfc(u.End)}}
	for _, p := range u.Periods {
		e.Data.Periods = append(e.Data.Periods, metering.Period{Start: rfc(p.Start), EnergyKWh: p.EnergyKWh.String(), State: p.State})
	}
	paidBefore := car.paid(t)
	cp.send(t, ctx, e)
	rs := cp.receipts(t, e.ID)
	assertPaid(t, rs, hash, want.TotalMsat)
	if !ocmf.BindsReadings(rs[0].Events[0], raw) {
		t.Fatalf("receipt names event %q, which does not bind the readings", rs[0].Events[0])
	}
	h.drained(t, ctx)
	channelPaid := car.paid(t) - paidBefore
	if channelPaid != want.TotalMsat {
		t.Fatalf("the car's channel paid %d msat, the tariff asks %d", channelPaid, want.TotalMsat)
	}

	// The session's CDR.
	cdr, err := contracts.NewCDR(k, u, want, contracts.CDRSession{
		CountryCode: "DE", PartyID: "ACM", ID: "cdr-" + e.ID[5:20], SessionID: u.Session,
		Token:      contracts.CDRToken{CountryCode: "DE", PartyID: "HUB", UID: carID, Type: "APP_USER", ContractID: carID},
		AuthMethod: "AUTH_REQUEST",
		Location: contracts.CDRLocation{ID: "LOC1", Address: "Hauptstraße 1", City: "Berlin", Country: "DEU",
			Coordinates: contracts.GeoLocation{Latitude: "52.520008", Longitude: "13.404954"}, EvseUID: "1", EvseID: "DE*ACM*E1234*1",
			ConnectorID: "1", ConnectorStandard: "IEC_62196_T2", ConnectorFormat: "SOCKET", ConnectorPowerType: "AC_3_PHASE"},
		SignedData:  ocmf.SignedData(msgs, base64.StdEncoding.EncodeToString(der)),
		LastUpdated: end,
	})
	if err != nil {
		t.Fatal(err)
	}
	if cdr.M2MHub.TotalMsat != channelPaid || cdr.TotalEnergy.String() != "15.5" || len(cdr.SignedData.SignedValues) != 3 {
		t.Fatalf("CDR total %d msat, energy %s, %d signed values; the channel paid %d msat",
			cdr.M2MHub.TotalMsat, cdr.TotalEnergy, len(cdr.SignedData.SignedValues), channelPaid)
	}
	t.Logf("EV session of 15.5 kWh: channel paid %d msat = CDR total %s EUR excl. VAT", channelPaid, cdr.TotalCost.ExclVAT)
}
