package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
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
	if !sum.Authenticated || sum.StrangerRefusal != "unknown-key" || sum.AuditEntries != 2 || sum.DeviceID == "" {
		t.Fatalf("summary %+v", sum)
	}
	c := sum.Channel
	const paid = 12_345_678 + 2_500_500 + 777
	if c.Payments != 3 || c.PaidMsat != paid || c.ProviderReceipt != 3 || c.ClaimableSat != paid/1000 ||
		c.DeviceGotSat != c.CapacitySat-paid/1000 || c.CloseTxID == "" {
		t.Fatalf("channel summary %+v", c)
	}
	if len(sum.HubPubKey) != 66 || !strings.Contains(out.String(), "demo OK") {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
}
