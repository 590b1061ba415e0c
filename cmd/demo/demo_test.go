package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
)

// TestDemo runs the demo end to end against real binaries and checks what it
// reports, not just that it exits.
func TestDemo(t *testing.T) {
	bin := t.TempDir()
	for _, pkg := range []string{"../hubd", "github.com/btcsuite/btcd"} {
		if out, err := exec.Command("go", "build", "-o", bin+"/", pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	sum, err := run(ctx, &out, bin+"/hubd", "", false, false)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !sum.Authenticated || sum.StrangerRefusal != "unknown-key" || sum.AuditEntries != 2+sum.Metering.Audited ||
		sum.Metering.Audited == 0 || sum.DeviceID == "" {
		t.Fatalf("summary %+v", sum)
	}
	c := sum.Channel
	const paid = 12_345_678 + 2_500_500 + 777
	if c.Payments != 3 || c.PaidMsat != paid || c.ProviderReceipt != 3 || c.ClaimableSat != paid/1000 ||
		c.DeviceGotSat != c.CapacitySat-paid/1000 || c.CloseTxID == "" {
		t.Fatalf("channel summary %+v", c)
	}
	// Metering: the figures of contracts/examples_test.go (bandwidth in
	// its first tier here: 20 MB at 50 msat), each receipted but the
	// refunded shipment, and conservation to the msat.
	m := sum.Metering
	want := []struct {
		kind        string
		amount, fee uint64
	}{
		{"ev_charging", 3_256_000, 32_560}, {"toll", 60_000, 300}, {"bandwidth", 1_000, 30},
		{"energy", 308_000, 3_080}, {"energy", 154_000, 1_540},
		{"conditional_release", 27_500_000, 276_000}, {"conditional_release", 0, 0},
	}
	if len(m.Events) != len(want) {
		t.Fatalf("metering rows %+v", m.Events)
	}
	var total, fees uint64
	for i, w := range want {
		e := m.Events[i]
		if e.Kind != w.kind || e.AmountMsat != w.amount || e.FeeMsat != w.fee || (e.Receipt == "") != (w.amount == 0) {
			t.Fatalf("metering row %d: %+v, want %+v", i, e, w)
		}
		total += w.amount
		fees += w.fee
	}
	if m.Receipts != 6 || m.PaidMsat != total || m.FeesMsat != fees || m.EarnedMsat+m.FeesMsat != m.PaidMsat {
		t.Fatalf("metering summary %+v", m)
	}
	if len(sum.HubPubKey) != 66 || !strings.Contains(out.String(), "demo OK") {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
}

// TestDemoContractsMatchExamples keeps the demo's copies of the example
// contracts identical (by contract hash) to contracts/testdata/examples,
// whose figures contracts/examples_test.go checks.
func TestDemoContractsMatchExamples(t *testing.T) {
	for _, kind := range []string{"ev_charging", "toll", "bandwidth", "energy"} {
		doc, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", kind+".json"))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := contracts.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := contracts.Parse([]byte(demoContracts[kind]))
		if err != nil {
			t.Fatal(err)
		}
		if ex.Hash() != ours.Hash() {
			t.Fatalf("the demo's %s contract differs from the example", kind)
		}
	}
}
