package session

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/idledial"
)

func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestIdleFloodBounded opens 300 TCP connections from one address that
// never start the noise handshake. The hub keeps at most
// MaxHandshakesPerSource of them, each for up to ActTimeout, and closes the
// rest as soon as it accepts them: goroutines and memory stay flat. A
// legitimate device from the same address retries through the flood and
// gets in once those slots time out.
func TestIdleFloodBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the act timeout (3 s)")
	}
	checkLeaks(t)
	h := startHub(t, nil)
	time.Sleep(50 * time.Millisecond)
	g0, m0 := runtime.NumGoroutine(), memInUse()

	const flood = 300
	for range flood {
		c, err := net.Dial("tcp", h.Addr().String())
		if err != nil {
			// Reset by the hub before connect returned: refused at
			// once, as it should be.
			continue
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	time.Sleep(500 * time.Millisecond)
	g1, m1 := runtime.NumGoroutine(), memInUse()
	t.Logf("idle flood of %d: goroutines %d -> %d, heap+stacks %d KiB -> %d KiB", flood, g0, g1, m0>>10, m1>>10)
	// A handshake goroutine per admitted connection plus slack for the
	// runtime; nothing for the refused ones.
	if g1-g0 > 60 {
		t.Fatalf("goroutines grew by %d for %d idle connections", g1-g0, flood)
	}
	if m1 > m0 && m1-m0 > 16<<20 {
		t.Fatalf("memory grew by %d KiB", (m1-m0)>>10)
	}
	if h.Sessions() != 0 {
		t.Fatalf("sessions = %d", h.Sessions())
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dev, err := m2mclient.Dial(ctx, h.Addr().String(), h.key.PubKey(), h.auth.add(t, hub.StatusActive),
		m2mclient.WithLogger(quietLogger()), m2mclient.WithBackoff(100*time.Millisecond, time.Second))
	if err != nil {
		t.Fatalf("legit device locked out by the flood: %v", err)
	}
	defer dev.Close()
	t.Logf("legit device connected %v after the flood started draining", time.Since(start))
}

// hello is rawSession without the testing.TB: it connects key, exchanges
// Init and returns the conn or the error.
func (h *testHub) hello(key *btcec.PrivateKey) (*brontide.Conn, error) {
	return helloAt(h.Addr().(*net.TCPAddr), h.key.PubKey(), key)
}

// helloAt is hello to the hub at addr whose identity is hubKey.
func helloAt(addr *net.TCPAddr, hubKey *btcec.PublicKey, key *btcec.PrivateKey) (*brontide.Conn, error) {
	return idledial.Hello(addr, hubKey, key)
}

// BenchmarkHandshake measures noise handshake + Init exchange + registry
// lookup per second, two devices connecting at a time over loopback. Both
// ends run in this process, so the figure is a lower bound for the hub alone.
func BenchmarkHandshake(b *testing.B) {
	h := startHub(b, func(c *Config) {
		c.MaxSessionsPerIP = 1 << 20
		c.MaxSessions = 1 << 20
		c.PingInterval = time.Hour
	})
	var failed atomic.Int64
	b.ResetTimer()
	b.SetParallelism(1)
	b.RunParallel(func(pb *testing.PB) {
		// One device per goroutine: the same key twice at once would
		// replace its own session.
		key := h.auth.add(b, hub.StatusActive)
		for pb.Next() {
			c, err := h.hello(key)
			if err != nil {
				if failed.Add(1) == 1 {
					b.Logf("first failure: %v", err)
				}
				continue
			}
			_ = c.Close()
		}
	})
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d handshakes failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkIdleSessionMemory reports the heap and stack bytes one idle,
// authenticated session costs, with 1,000 and with 10,000 sessions open
// (the design's per-hubd target). The device ends of the connections live
// in a child process (internal/idledial), so the figure is the hub's share
// alone. clients/go's BenchmarkPayAmongIdle measures a payment among
// 10,000 of them. Run it with -benchtime=1x.
func BenchmarkIdleSessionMemory(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) { benchIdleSessions(b, n) })
	}
}

func benchIdleSessions(b *testing.B, n int) {
	for range b.N {
		b.StopTimer()
		h := startHub(b, func(c *Config) {
			c.MaxSessions = n
			c.MaxSessionsPerIP = 2 * n
			c.PingInterval = time.Hour
		})
		keys := make([]*btcec.PrivateKey, n)
		for i := range keys {
			keys[i] = h.auth.add(b, hub.StatusActive)
		}
		before := memInUse()
		b.StartTimer()
		// The device ends live in a child process (this binary running
		// TestIdleDialer): the hub's share alone is measured.
		stop := idledial.Spawn(b, "TestIdleDialer", h.Addr(), h.key.PubKey(), keys)
		b.StopTimer()
		// A session is listed just after its Init reply is queued.
		for deadline := time.Now().Add(30 * time.Second); h.Sessions() != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("sessions = %d, want %d", h.Sessions(), n)
			}
		}
		after := memInUse()
		b.ReportMetric(float64(after-before)/float64(n), "B/session")
		stop()
		_ = h.Close()
	}
}

// TestIdleDialer, run by BenchmarkIdleSessionMemory as a child, holds the
// devices' idle sessions (idledial.Serve).
func TestIdleDialer(t *testing.T) { idledial.Serve(t) }
