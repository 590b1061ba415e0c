package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/shopspring/decimal"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/ocppstation"
	"github.com/m2mhub/m2mhub/metering/ocmf"
)

// TestOCPPGatewayProcess runs the ocppgw binary as docs/ev-charging.md
// ("Connecting chargers") tells a CPO to: the gateway registered as a
// provider (its key and NATS seed in files), the station file, a TLS
// certificate, the OCPI tariff file with the flags it was published
// with. A Go charging station connects over TLS with basic auth, and its
// session ends in the hub's CDR, which states what the car's channel paid
// and carries the meter's signed readings.
func TestOCPPGatewayProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd with its regtest btcd and the gateway")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := startMeterHub(t, t.TempDir())
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The tariff as section 1 publishes it.
	doc, k := exampleTariff(t)
	h.publish(t, ctx, doc)

	// 1. The gateway's provider identity, its payout; 2. the car.
	gwKey, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pr, err := h.admin.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(gwKey.PubKey()), Owner: "acme-charging", Kind: "cpo"})
	if err != nil || pr.NATS == nil {
		t.Fatalf("add provider: %+v, %v", pr, err)
	}
	carKey, carID := h.enrol(t, ctx, "car", hub.RolePayer)
	car := h.connectWith(t, ctx, carKey, carID, false, func(c *m2mclient.DeviceConfig) { c.AutoAuthorize = true })
	h.fund(t, ctx, 1_000_000, car)

	// 3. The station file with the meter's key; 4. TLS.
	meterKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	meter := &ocppstation.Meter{Key: meterKey, Serial: "ACME-0001", Token: "1F2D3A4B"}
	pub, err := meter.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	stations, err := json.Marshal(map[string]any{
		"stations": map[string]any{"CS1": map[string]string{"password": "s3cret-password-1", "meter_public_key": pub}},
		"tokens":   map[string]string{"1F2D3A4B": carID},
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, pool, err := ocppstation.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-listen", "127.0.0.1:0",
		"-tls-cert", write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})),
		"-tls-key", write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})),
		"-config", write("stations.json", stations),
		"-hub", h.p.rt.P2PAddr, "-hub-key", hex.EncodeToString(h.hubKey.SerializeCompressed()),
		"-provider-id", pr.Device.ID, "-provider-key", write("provider.key", []byte(hex.EncodeToString(gwKey.Serialize())+"\n")),
		"-nats", h.p.rt.NATSURL, "-nats-seed", write("provider.nkey", []byte(pr.NATS.Seed+"\n")),
		"-tariff", exampleTariffFile, "-rate-msat-per-unit", "1000000", "-time-zone", "Europe/Berlin", "-hold-msat", "50000000"}
	url := startOCPPGW(t, args)

	// 5. The station: boot, authorise, a session of signed readings.
	st, err := ocppstation.Dial(ctx, ocppstation.DialConfig{URL: url, Station: "CS1", Password: "s3cret-password-1",
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Boot(ctx, "AC-22", "Acme", 1); err != nil {
		t.Fatal(err)
	}
	if err := st.Authorize(ctx, "1F2D3A4B"); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	start := end.Add(-90 * time.Minute)
	var rs []ocppstation.Reading
	for i, r := range []struct {
		at  time.Time
		tx  string
		kwh int64
	}{{start, "B", 1000_000}, {start.Add(time.Hour), "C", 1011_250}, {end, "E", 1015_500}} {
		sr, err := meter.Sign(i+1, r.at, r.tx, decimal.New(r.kwh, -3))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, sr)
	}
	msgs, _, want := ocmfSession(t, k, contracts.Usage{Device: carID}, []string{rs[0].OCMF, rs[1].OCMF, rs[2].OCMF})
	paidBefore := car.paid(t)
	tx, err := st.Start(ctx, "tx-1", 1, "1F2D3A4B", rs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Update(ctx, rs[1:2]); err != nil {
		t.Fatal(err)
	}
	if err := tx.End(ctx, rs[2]); err != nil {
		t.Fatal(err)
	}

	// The hub's CDR for the session, as the operator reads it.
	var rec hub.CDRRecord
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		cdrs, err := h.admin.CDRs(ctx, pr.Device.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(cdrs) == 1 {
			rec = cdrs[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR after 20 s: %+v", cdrs)
		}
	}
	h.drained(t, ctx)
	car.holdsClosed(t)
	var cdr contracts.CDR
	if err := json.Unmarshal(rec.CDR, &cdr); err != nil {
		t.Fatal(err)
	}
	paid := car.paid(t) - paidBefore
	if paid != want.TotalMsat || rec.TotalMsat != paid || cdr.M2MHub.TotalMsat != paid || rec.Events[0] != ocmf.EventID(msgs) {
		t.Fatalf("the car paid %d msat, the tariff asks %d, the CDR says %d (record %d, events %v)",
			uint64(paid), uint64(want.TotalMsat), uint64(cdr.M2MHub.TotalMsat), uint64(rec.TotalMsat), rec.Events)
	}
	if sd := cdr.SignedData; sd == nil || len(sd.SignedValues) != 3 || sd.PublicKey != pub || cdr.CdrLocation.ID != "CS1" {
		t.Fatalf("CDR signed data %+v, location %q", cdr.SignedData, cdr.CdrLocation.ID)
	}
	for i, v := range cdr.SignedData.SignedValues {
		if v.SignedData != base64.StdEncoding.EncodeToString([]byte(rs[i].OCMF)) {
			t.Fatalf("CDR signed value %d is not reading %d", i, i)
		}
	}
	t.Logf("ocppgw process: session of %s kWh, CDR %s: %d msat paid by the car", cdr.TotalEnergy, cdr.ID, uint64(paid))
}

// startOCPPGW starts the ocppgw binary with args and returns its stations'
// endpoint once it listens; the gateway is stopped (SIGTERM) and must
// exit cleanly when the test ends.
func startOCPPGW(t *testing.T, args []string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "ocppgw"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	var logs strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		re := regexp.MustCompile(`msg="ocppgw listening" addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		if err := cmd.Wait(); err != nil {
			t.Errorf("ocppgw: %v\n%s", err, logs.String())
		}
	})
	select {
	case a := <-addr:
		return fmt.Sprintf("wss://%s/ocpp", a)
	case <-done:
		t.Fatalf("ocppgw ended before it listened:\n%s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("ocppgw does not listen after 30 s")
	}
	return ""
}
