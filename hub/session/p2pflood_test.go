package session_test

import (
	"context"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
)

// raiseNoFile makes room for n more file descriptors in this process, which
// holds both ends of every flood connection. As root it raises the hard
// limit too; otherwise a hard limit too low fails the test with a message
// rather than skipping it.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	want := n + 2048
	if lim.Cur >= want {
		return
	}
	old := lim
	lim.Cur = want
	lim.Max = max(lim.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("RLIMIT_NOFILE is %d (hard %d); this test needs %d: run it as root or raise the hard limit (ulimit -Hn): %v",
			old.Cur, old.Max, want, err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// stallFlood is an attacker holding connections to the hub from several
// loopback source addresses: half stop after a valid act one, half send
// nothing at all. It keeps dialing replacements until stop, so the slots
// the hub frees are retaken and its accept loop stays busy.
type stallFlood struct {
	addr   string
	actOne [brontide.ActOneSize]byte

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	held   []net.Conn
	dialed int
	errs   int
}

// startStallFlood opens perSource connections from each of sources
// (127.0.0.2, 127.0.0.3, ...) and returns once all are open.
func startStallFlood(t *testing.T, addr string, hubKey *btcec.PublicKey, sources, perSource int) *stallFlood {
	t.Helper()
	// This process holds the attacker's end of every connection; the
	// hub's ends of refused ones are closed as soon as they are accepted.
	raiseNoFile(t, uint64(sources*perSource))
	attacker, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	// One act one, sent on every connection: the hub answers each with a
	// fresh act two and then waits for an act three that never comes.
	m := brontide.NewBrontideMachine(true, &keychain.PrivKeyECDH{PrivKey: attacker}, hubKey)
	actOne, err := m.GenActOne()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &stallFlood{addr: addr, actOne: actOne, cancel: cancel}
	t.Cleanup(f.stop)

	var ready sync.WaitGroup
	for i := range sources {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
		// A few dialers per source, so opening 10,000 takes a second.
		for j := range 4 {
			ready.Add(1)
			f.wg.Add(1)
			go f.run(ctx, src, perSource/4, j, &ready)
		}
	}
	ready.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dialed < sources*perSource {
		t.Fatalf("flood opened only %d of %d connections (%d dial errors)", f.dialed, sources*perSource, f.errs)
	}
	return f
}

// run opens n connections from src, then keeps dialing more, closing its
// oldest so it holds n, until ctx ends.
func (f *stallFlood) run(ctx context.Context, src *net.TCPAddr, n, variant int, ready *sync.WaitGroup) {
	defer f.wg.Done()
	d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
	var mine []net.Conn
	defer func() {
		for _, c := range mine {
			_ = c.Close()
		}
	}()
	signalled := false
	for i := 0; ctx.Err() == nil; i++ {
		if !signalled && len(mine) >= n {
			signalled = true
			ready.Done()
		}
		if signalled {
			// Holding: re-dial every 5 ms per dialer (3,200/s in
			// all), enough to retake every slot the hub frees long
			// before its act timeout. Unpaced, dialers on the same
			// two cores as the hub only measure who gets the CPU.
			select {
			case <-ctx.Done():
				continue
			case <-time.After(5 * time.Millisecond):
			}
		}
		c, err := d.DialContext(ctx, "tcp", f.addr)
		if err != nil {
			f.mu.Lock()
			f.errs++
			f.mu.Unlock()
			if !signalled && ctx.Err() == nil {
				// The initial fill tolerates a few transient
				// failures, not an endless loop.
				time.Sleep(time.Millisecond)
			}
			continue
		}
		if (i+variant)%2 == 0 {
			_, _ = c.Write(f.actOne[:])
		}
		mine = append(mine, c)
		if len(mine) > n {
			_ = mine[0].Close()
			mine = mine[1:]
		}
		f.mu.Lock()
		f.dialed++
		f.mu.Unlock()
	}
	if !signalled {
		ready.Done()
	}
}

func (f *stallFlood) stop() {
	f.cancel()
	f.wg.Wait()
}

// TestStalledHandshakeFlood holds 10,000 stalled connections to a real hub
// from four loopback sources (half stalled after act one, half silent, and
// re-dialed as the hub closes them) while a registered device connects with
// the client library: it must complete Init within 2 s. The bound is
// functional (the connection takes milliseconds when the hub is idle); with
// lnd's brontide listener, 50 handshake slots of 5 s each, the device
// waited behind the flood until its dial timed out.
//
// FairAdmission shrinks the hub's handshake budget below what the flood's
// sources may hold together, so the device's connection is admitted only
// by taking a slot from the largest holder.
func TestStalledHandshakeFlood(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*p2plisten.Config)
	}{
		{"Defaults", nil},
		{"FairAdmission", func(c *p2plisten.Config) { c.MaxHandshakes = 16; c.MaxHandshakesPerSource = 8 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hubtest.Start(t, hubtest.Config{Listener: tc.cfg})
			key, id := h.EnrolDevice(t, hub.RolePayer)
			f := startStallFlood(t, h.Addr(), h.PubKey(), 4, 2500)

			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			s, err := m2mclient.Dial(ctx, h.Addr(), h.PubKey(), key,
				m2mclient.WithLogger(h.Logger()), m2mclient.WithDialTimeout(2*time.Second),
				m2mclient.WithBackoff(20*time.Millisecond, 100*time.Millisecond))
			took := time.Since(start)
			if err != nil {
				f.mu.Lock()
				dialed := f.dialed
				f.mu.Unlock()
				t.Fatalf("device locked out by %d stalled connections (%d dialed so far): %v after %v",
					10000, dialed, err, took)
			}
			defer s.Close()
			t.Logf("device connected in %v under a flood of 10,000 stalled connections", took)
			h.WaitSession(t, id)
			f.stop()
		})
	}
}
