package btcdchain_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// returnsWithin fails the test if fn has not returned after d: the calls
// below must end on their own deadline, and a hang must fail, not stall the
// suite until its timeout.
func returnsWithin(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s still blocked after %v", what, d)
	}
}

// A stopped (SIGSTOP) node accepts connections and never answers. Every
// call, even one whose context has no deadline, ends at the call timeout
// with ErrUnavailable, many at once do not queue behind one another, and
// the node is used again as soon as it is continued.
func TestCallsEndWhenNodeStopped(t *testing.T) {
	node, err := regtest.Start(t.Context(), regtest.Config{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop(context.Background())
	c := mustClientTimeout(t, node.RPC(), 300*time.Millisecond)
	if err := c.Healthy(t.Context()); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(node.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	defer func() {
		if !continued {
			syscall.Kill(node.Pid(), syscall.SIGCONT)
		}
	}()

	// More calls than rpcclient's queue of 100 held.
	const calls = 150
	errs := make([]error, calls)
	returnsWithin(t, 20*time.Second, "calls to a stopped node", func() {
		var wg sync.WaitGroup
		for i := range calls {
			wg.Go(func() {
				if i%2 == 0 {
					errs[i] = c.Healthy(context.Background())
				} else {
					_, errs[i] = c.BlockCount(context.Background())
				}
			})
		}
		wg.Wait()
	})
	for i, err := range errs {
		if !errors.Is(err, btcdchain.ErrUnavailable) {
			t.Fatalf("call %d: err = %v, want ErrUnavailable", i, err)
		}
	}

	if err := syscall.Kill(node.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	// btcd first works off the connections it accepted while stopped, so
	// the first calls may still time out.
	if _, err := eventually(t, func() (int32, error) { return c.BlockCount(t.Context()) }); err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
}

// eventually retries fn while it fails with ErrUnavailable, for up to two
// minutes, and returns its last answer.
func eventually[T any](t *testing.T, fn func() (T, error)) (T, error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := fn()
		if !errors.Is(err, btcdchain.ErrUnavailable) || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-t.Context().Done():
			return v, err
		case <-tick.C:
		}
	}
}

// A killed node restarted by its supervisor is reached again by the same
// client: calls fail with ErrUnavailable while it is down and answer, on
// the same chain, once it is back.
func TestClientReconnectsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")
	addr, err := btcdchain.KeyAddress(keyPath, regtestParams)
	if err != nil {
		t.Fatal(err)
	}
	s, err := regtest.Supervise(t.Context(), regtest.Config{
		Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	c := mustClient(t, s.RPC())
	if _, err := c.Mine(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Node().SyncArchive(t.Context()); err != nil {
		t.Fatal(err)
	}
	height, err := c.BlockCount(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	old := s.Node()
	if err := syscall.Kill(old.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-old.Exited()
	if _, err := c.BlockCount(t.Context()); !errors.Is(err, btcdchain.ErrUnavailable) {
		t.Fatalf("BlockCount with btcd dead: err = %v, want ErrUnavailable", err)
	}
	// The supervisor's restart takes a few seconds (replay included);
	// the client needs no reconnect call, only a retry, and never sees
	// the chain half replayed.
	got, err := eventually(t, func() (int32, error) { return c.BlockCount(t.Context()) })
	if err != nil {
		t.Fatalf("BlockCount after restart: %v", err)
	}
	if got != height {
		t.Fatalf("height %d after restart, want %d", got, height)
	}
	if s.Restarts() != 1 {
		t.Fatalf("Restarts = %d, want 1", s.Restarts())
	}
}
