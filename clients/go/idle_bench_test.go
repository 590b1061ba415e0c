package m2mclient_test

import (
	"context"
	"flag"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/idledial"
)

// idleCount is how many idle devices BenchmarkPayAmongIdle holds on the
// hub: by default the design's sessions per hubd.
var idleCount = flag.Int("idle.sessions", 10_000, "idle sessions BenchmarkPayAmongIdle holds on the hub")

// BenchmarkPayAmongIdle measures BenchmarkPay's RoundTrip (one device
// paying sequentially through the Go client, in-process hub, bbolt with
// fsync) while -idle.sessions other enrolled devices (10,000) hold idle sessions on
// the same hub, their ends in a child process (idledial). In the same run
// it first measures the same payments with the payer alone: the
// baseline. It reports both latencies, p50 and p99, and the hub
// process's heap and stacks per idle session. Run it with
// -benchtime=1000x.
func BenchmarkPayAmongIdle(b *testing.B) {
	idleSessions := *idleCount
	h := hubtest.Start(b, hubtest.Config{
		Channels: func(c *channels.Config) { c.PayRate, c.PayBurst = 1_000_000, 1_000_000 },
		Server: func(c *session.Config) {
			c.MaxSessions, c.MaxSessionsPerIP = 2*idleSessions, 2*idleSessions
			c.PingInterval = time.Hour
		},
	})
	_, provID := h.EnrolDevice(b, hub.RoleProvider)
	p := openPayers(b, h, 1)[0]
	keys := enrolIdle(b, h.Registry(), idleSessions)
	ctx := context.Background()
	pay := func() []time.Duration {
		lat := make([]time.Duration, 0, b.N)
		for range b.N {
			start := time.Now()
			if _, err := p.dev.Pay(ctx, p.chID, provID, 1, ""); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}

	b.ResetTimer()
	alone := pay()
	b.StopTimer()
	before := heapAndStacks()
	stop := idledial.Spawn(b, "TestIdleDevices", h.Server().Addr(), h.PubKey(), keys)
	hubtest.WaitFor(b, time.Minute, "every idle session listed", func() bool {
		return h.Server().Sessions() >= idleSessions+1 // and the payer's
	})
	perSession := float64(heapAndStacks()-before) / float64(idleSessions)
	b.StartTimer()
	among := pay()
	b.StopTimer()
	if n := h.Server().Sessions(); n < idleSessions+1 {
		b.Fatalf("%d sessions left after the payments, want %d", n, idleSessions+1)
	}
	stop()

	slices.Sort(alone)
	slices.Sort(among)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(among[len(among)/2]), "p50-ms")
	b.ReportMetric(ms(among[len(among)*99/100]), "p99-ms")
	b.ReportMetric(ms(alone[len(alone)/2]), "alone-p50-ms")
	b.ReportMetric(ms(alone[len(alone)*99/100]), "alone-p99-ms")
	b.ReportMetric(perSession, "hub-B/session")
}

// TestIdleDevices, run by BenchmarkPayAmongIdle as a child, holds the idle
// devices' sessions (idledial.Serve).
func TestIdleDevices(t *testing.T) { idledial.Serve(t) }

// enrolIdle enrols n payers, one after the other (each enrolment extends
// the audit log's hash chain, so concurrent ones only retry), and returns
// their keys.
func enrolIdle(b *testing.B, reg *registry.Registry, n int) []*btcec.PrivateKey {
	keys := make([]*btcec.PrivateKey, n)
	for i := range keys {
		keys[i] = hubtest.NewKey(b)
		req := registry.EnrolRequest{Key: hub.PubKeyOf(keys[i].PubKey()), Roles: []hub.Role{hub.RolePayer}}
		if _, err := reg.Enrol(b.Context(), req, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	return keys
}

// heapAndStacks is this process's heap and stack bytes in use after a GC.
func heapAndStacks() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
