package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/ocppstation"
	"github.com/m2mhub/m2mhub/metering/ocmf"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
	"github.com/m2mhub/m2mhub/ocpp/gateway/m2mbilling"
)

// TestEVOCPPGatewayEndToEnd runs an EV session from a charging station
// nobody here wrote (ocpp-rpc in strict mode) through the OCPP gateway to
// the real hubd: boot, authorize, start (the car's device grants the
// hold), OCMF-signed meter values, a stop the gateway requests, end. The
// hub prices the gateway's usage event under the published OCPI tariff,
// the charge is recorded against the session's hold and the car's
// payment captures it, the receipt binds the readings, the rest of the
// hold is released, and the provider gets the session's CDR: CDR total =
// captured = what the car's channel paid, to the msat, and its
// signed_data carries the meter's readings.
func TestEVOCPPGatewayEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd with its regtest btcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := startMeterHub(t, t.TempDir())
	quiet := slog.New(slog.DiscardHandler)

	doc, k := exampleTariff(t)
	hash := h.publish(t, ctx, doc)

	cp := h.addProvider(t, ctx, nil, "charger")
	sess, err := m2mclient.Dial(ctx, h.p.rt.P2PAddr, h.hubKey, cp.key, m2mclient.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	prov, err := m2mclient.NewProvider(sess, m2mclient.ProviderConfig{HubKey: h.hubKey, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Close() })
	carKey, carID := h.enrol(t, ctx, "car", hub.RolePayer)
	car := h.connectWith(t, ctx, carKey, carID, false, func(c *m2mclient.DeviceConfig) { c.AutoAuthorize = true })
	h.fund(t, ctx, 1_000_000, car)

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
	billing, err := m2mbilling.New(m2mbilling.Config{Holds: prov, Meter: cp.meter, Contract: k, HoldMsat: 20_000_000,
		MeterKeys: map[string]*ocmf.PublicKey{"CS1": pub}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Stations: map[string]string{"CS1": "s3cret-password-1"},
		Tokens: map[string]string{"1F2D3A4B": carID}, Billing: billing, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(gw)
	defer srv.Close()
	defer gw.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
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
		signOCMF(t, meter, 2, start.Add(time.Hour), "T", "1011.250"),
		signOCMF(t, meter, 3, end, "E", "1015.5"),
	}
	msgs, _, want := ocmfSession(t, k, contracts.Usage{Device: carID, Provider: cp.id}, raw)

	paidBefore := car.paid(t)
	answers, err := ocppstation.Run(ctx, ocppstation.Config{
		Dir: filepath.Join("..", "..", "ocpp", "gateway", "m2mbilling", "testdata", "station"),
		URL: strings.Replace(srv.URL, "https://", "wss://", 1) + "/ocpp", CAFile: ca,
		Station: "CS1", Password: "s3cret-password-1", Token: "1F2D3A4B", Readings: raw,
		OnStopWanted: func() {
			if n, err := gw.StopPayer(ctx, carID); n != 1 || err != nil {
				t.Errorf("StopPayer: %d, %v", n, err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if answers.Status("Started") != "Accepted" || answers.Status("AuthorizeUnknown") != "Unknown" || answers["Ended"] == nil {
		t.Fatalf("station got %v", answers)
	}
	id := ocmf.EventID(msgs)
	rs := cp.receipts(t, id)
	assertPaid(t, rs, hash, want.TotalMsat)
	if !ocmf.BindsReadings(rs[0].Events[0], raw) {
		t.Fatalf("receipt names event %q, which does not bind the readings", rs[0].Events[0])
	}
	if rs[0].HoldID == ([16]byte{}) {
		t.Fatal("the session's payment did not capture its hold")
	}
	cdr := cp.cdr(t, id)
	h.drained(t, ctx)
	paid := car.paid(t) - paidBefore
	if paid != want.TotalMsat || cdr.M2MHub.TotalMsat != paid {
		t.Fatalf("the car's channel paid %d msat, the tariff asks %d, the CDR says %d", paid, want.TotalMsat, cdr.M2MHub.TotalMsat)
	}
	if cdr.TotalEnergy.String() != "15.5" || cdr.CdrToken.UID != "1F2D3A4B" || cdr.CdrLocation.ID != "CS1" {
		t.Fatalf("CDR energy %s, token %q, location %q", cdr.TotalEnergy, cdr.CdrToken.UID, cdr.CdrLocation.ID)
	}
	// The CDR gives the meter's signed readings, with the station's
	// configured meter key, so the driver can check them.
	if sd := cdr.SignedData; sd == nil || len(sd.SignedValues) != len(raw) || sd.PublicKey != pub.Base64() || cdr.MeterID != "0901454D4800007F9F3E" {
		t.Fatalf("CDR signed data %+v, meter %q", sd, cdr.MeterID)
	} else {
		for i, v := range sd.SignedValues {
			if v.SignedData != base64.StdEncoding.EncodeToString([]byte(raw[i])) {
				t.Fatalf("CDR signed value %d is not reading %d", i, i)
			}
		}
	}
	car.holdsClosed(t)
	t.Logf("OCPP session of 15.5 kWh through the gateway: hold captured %d msat = the car's channel paid = CDR total %s %s excl. VAT",
		paid, cdr.TotalCost.ExclVAT, cdr.Currency)
}

// cdr waits for the provider's CDR notice covering event id.
func (p *meterProvider) cdr(t *testing.T, id string) contracts.CDR {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n, ok := <-p.notices:
			if !ok {
				t.Fatalf("%s: notice stream ended", p.id)
			}
			if n.CDR == nil {
				t.Fatalf("%s: notice %+v, want a CDR", p.id, n)
			}
			if len(n.CDREvents) != 1 || n.CDREvents[0] != id {
				t.Fatalf("%s: CDR for events %v, want %s", p.id, n.CDREvents, id)
			}
			var c contracts.CDR
			if err := json.Unmarshal(n.CDR, &c); err != nil {
				t.Fatal(err)
			}
			return c
		case <-timeout:
			t.Fatalf("%s: no CDR for %s after 20 s", p.id, id)
		}
	}
}

// holdsClosed waits until the device has no active hold left (the hub's
// HoldClosed reached it).
func (py *payer) holdsClosed(t *testing.T) {
	t.Helper()
	py.balanceWhen(t, func(b m2mclient.Balance) bool { return b.Reserved == 0 },
		func(b m2mclient.Balance) string {
			return fmt.Sprintf("still reserves %d msat for holds", uint64(b.Reserved))
		})
}
