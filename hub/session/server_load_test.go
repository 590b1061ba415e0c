package session

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
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
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: hubKey, Address: addr},
		5*time.Second, net.DialTimeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(c, wire.NewInit()); err != nil {
		_ = c.Close()
		return nil, err
	}
	msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
	if err == nil {
		if _, ok := msg.(*wire.Init); !ok {
			err = fmt.Errorf("hub answered init with %T", msg)
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
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
// in the same process and are included, so the figure over-states the
// hub's share. Run it with -benchtime=1x.
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
		var keys strings.Builder
		fmt.Fprintf(&keys, "%s %x\n", h.Addr(), h.key.PubKey().SerializeCompressed())
		for range n {
			fmt.Fprintf(&keys, "%x\n", h.auth.add(b, hub.StatusActive).Serialize())
		}
		before := memInUse()
		b.StartTimer()
		// The device ends live in a child process (this binary running
		// TestIdleDialer): the hub's share alone is measured, and each
		// process stays within its open-file limit.
		cmd := exec.Command(os.Args[0], "-test.run", "^TestIdleDialer$")
		cmd.Env = append(os.Environ(), idleDialerEnv+"=1")
		cmd.Stdin = strings.NewReader(keys.String())
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "connected" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			b.Fatalf("dialer: %q %v", line, err)
		}
		b.StopTimer()
		// A session is listed just after its Init reply is queued.
		for deadline := time.Now().Add(30 * time.Second); h.Sessions() != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("sessions = %d, want %d", h.Sessions(), n)
			}
		}
		after := memInUse()
		b.ReportMetric(float64(after-before)/float64(n), "B/session")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = h.Close()
	}
}

// idleDialerEnv makes TestIdleDialer run: it is the device side of
// BenchmarkIdleSessionMemory.
const idleDialerEnv = "M2M_IDLE_DIALER"

// TestIdleDialer, run by BenchmarkIdleSessionMemory as a child, reads the
// hub's address and key and then one device key per line from stdin,
// opens an idle session for each (four dialers), prints "connected" and
// holds them until it is killed.
func TestIdleDialer(t *testing.T) {
	if os.Getenv(idleDialerEnv) == "" {
		t.Skip("the device side of BenchmarkIdleSessionMemory")
	}
	sc := bufio.NewScanner(os.Stdin)
	if !sc.Scan() {
		t.Fatal("no hub line")
	}
	addr, keyHex, _ := strings.Cut(sc.Text(), " ")
	hk, err := hex.DecodeString(keyHex)
	if err != nil {
		t.Fatal(err)
	}
	hubKey, err := btcec.ParsePubKey(hk)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var keys []*btcec.PrivateKey
	for sc.Scan() {
		kb, err := hex.DecodeString(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		k, _ := btcec.PrivKeyFromBytes(kb)
		keys = append(keys, k)
	}
	conns := make([]*brontide.Conn, len(keys))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += 4 {
				c, err := helloAt(tcp, hubKey, keys[i])
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fmt.Println("connected")
	select {} // until killed
}
