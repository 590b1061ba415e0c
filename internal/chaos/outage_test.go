package chaos

import (
	"flag"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

var outageDown = flag.Duration("outage", 2*time.Second,
	"how long each dependency stays paused or killed in TestOutagesUnderLoad (make chaos-deps: 30s)")

// build compiles pkg into dir.
func build(t *testing.T, dir, pkg string) {
	t.Helper()
	out, err := exec.Command("go", "build", "-o", dir+"/", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
}

// TestOutagesUnderLoad is the dependency-outage trial: devices pay and
// providers meter against a real hubd while its external NATS, its Redis
// and its btcd are each paused (SIGSTOP) and then killed -9 in turn.
// Throughout, /healthz answers within its bound and names what is down;
// after each outage the same hubd reports everything ok again; and at
// the end no acknowledged payment is lost or doubled and every event
// Meter reported sent is charged or dead-lettered.
func TestOutagesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd, btcd, NATS and Redis as processes")
	}
	bin := t.TempDir()
	for _, pkg := range []string{"github.com/m2mhub/m2mhub/cmd/hubd", "github.com/btcsuite/btcd", "github.com/nats-io/nats-server/v2"} {
		build(t, bin, pkg)
	}
	res, err := Run(t.Context(), Config{
		HubdBinary: filepath.Join(bin, "hubd"), NATSBinary: filepath.Join(bin, "nats-server"), Dir: t.TempDir(),
		Devices: 3, Providers: 2, MinGap: 2 * time.Second, Outages: Outages(*outageDown), Seed: 7,
		Say: func(format string, args ...any) { t.Logf(format, args...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("payments acknowledged %d; events accepted %d (charged %d, dead-lettered %d); failed pays during outages %v",
		res.Acked, res.Accepted, res.Charged, res.DeadLettered, res.PayErrors)
	for _, p := range res.Problems {
		t.Error(p)
	}
	if res.Acked == 0 || res.Accepted == 0 {
		t.Errorf("no load ran: %d payments, %d events", res.Acked, res.Accepted)
	}
	if !res.OK() {
		t.Fatal(res.Line())
	}
	t.Log(res.Line())
}
