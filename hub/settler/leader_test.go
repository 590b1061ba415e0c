package settler_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// pausableLease is the store's real lease seen from an instance that can
// be paused: while paused its lease requests do not go out (as a process
// under SIGSTOP, or cut off from the store), so its lease lapses while its
// run goes on holding the old token.
type pausableLease struct {
	hub.LeaderLease
	mu     sync.Mutex
	paused chan struct{}
}

func (p *pausableLease) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = make(chan struct{})
}

func (p *pausableLease) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.paused)
	p.paused = nil
}

func (p *pausableLease) wait(ctx context.Context) error {
	p.mu.Lock()
	ch := p.paused
	p.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pausableLease) Acquire(ctx context.Context, instance string, ttl time.Duration) (hub.Leader, error) {
	if err := p.wait(ctx); err != nil {
		return hub.Leader{}, err
	}
	return p.LeaderLease.Acquire(ctx, instance, ttl)
}

func (p *pausableLease) Renew(ctx context.Context, l hub.Leader, ttl time.Duration) (hub.Leader, error) {
	if err := p.wait(ctx); err != nil {
		return hub.Leader{}, err
	}
	return p.LeaderLease.Renew(ctx, l, ttl)
}

const testLeaseTTL = 600 * time.Millisecond

// waitLeading polls s's view of the lease until it leads.
func waitLeading(t *testing.T, s *settler.Service) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := s.Leadership(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if l.Leading {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never took the lease (leader %+v)", l.Instance, l.Leader)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaderHandOver runs two settlement services on one store, each
// elected through the store's lease. Only the leader settles: the other
// answers hub.ErrNotLeader naming it. The leader is then paused right
// after each durable state of a run (planned, signing, signed, broadcast)
// until its lease lapses: the other takes the lease, resumes the run from
// the store and settles the epoch exactly once, with the same txid once
// signed; the paused leader, let go, writes nothing more (its writes carry
// its old fencing token and are refused with hub.ErrFenced). The time from
// the pause to the new leader's first settlement write is logged
// ("hand-over").
func TestLeaderHandOver(t *testing.T) {
	for _, at := range []settlement.RunState{
		settlement.RunPlanned, settlement.RunSigning, settlement.RunSigned, settlement.RunBroadcast,
	} {
		t.Run(string(at), func(t *testing.T) { leaderHandOverTrial(t, at) })
	}
}

func leaderHandOverTrial(t *testing.T, at settlement.RunState) {
	e, chans := crashEpoch(t)
	store := e.h.Store()
	leaseA := &pausableLease{LeaderLease: store}
	reached, release := make(chan settlement.Run, 1), make(chan struct{})
	var pausedAt time.Time
	var once sync.Once
	a := e.settlement(func(c *settler.Config) {
		c.Lease, c.Instance, c.LeaseTTL = leaseA, "hub-a", testLeaseTTL
		c.AfterState = func(r settlement.Run) error {
			if r.State != at {
				return nil
			}
			hit := false
			once.Do(func() { hit = true })
			if hit {
				leaseA.pause()
				pausedAt = time.Now()
				reached <- r
				<-release
			}
			return nil
		}
	})
	// Registered after a's own cleanup, so it runs first: a failing
	// test never leaves a's run blocked while Close waits for it.
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release); leaseA.resume() }) }
	t.Cleanup(letGo)
	a.Start()
	waitLeading(t, a)

	firstWrite := make(chan time.Time, 1)
	b := e.settlement(func(c *settler.Config) {
		c.Lease, c.Instance, c.LeaseTTL = store, "hub-b", testLeaseTTL
		c.AfterState = func(settlement.Run) error {
			select {
			case firstWrite <- time.Now():
			default:
			}
			return nil
		}
	})
	b.Start()
	// One leader: b neither settles nor polls.
	if _, err := b.Settle(t.Context()); !errors.Is(err, hub.ErrNotLeader) || !strings.Contains(err.Error(), "hub-a") {
		t.Fatalf("Settle on the follower: %v, want hub.ErrNotLeader naming hub-a", err)
	}
	if err := b.Poll(t.Context()); !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("Poll on the follower: %v, want hub.ErrNotLeader", err)
	}
	if l, err := b.Leadership(t.Context()); err != nil || l.Leading || l.Leader.Instance != "hub-a" {
		t.Fatalf("follower's view %+v, %v; want hub-a leading", l, err)
	}

	settleErr := make(chan error, 1)
	go func() {
		_, err := a.Settle(context.Background())
		settleErr <- err
	}()
	var before settlement.Run
	select {
	case before = <-reached:
	case err := <-settleErr:
		t.Fatalf("Settle on the leader ended before %s: %v", at, err)
	}

	// b takes over once a's lease lapses, and resumes the run itself.
	waitLeading(t, b)
	r := e.confirm(b, 1)
	select {
	case w := <-firstWrite:
		// After broadcast the new leader's first write is the
		// confirmation, so that figure includes mining.
		t.Logf("hand-over after %s: %s to the new leader's first settlement write (lease ttl %s)", at, w.Sub(pausedAt), testLeaseTTL)
	default:
		t.Fatal("new leader wrote nothing")
	}

	// Every device was told its channel moved before the paused leader
	// could tell any (after broadcast, by b following a's run).
	e.mu.Lock()
	for _, op := range chans {
		rec, err := store.Channel(t.Context(), op)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := e.done[rec.DeviceID]; !ok || d.Old != op || d.Next.Hash != hubtest.RunTxids(t, r)[0] {
			t.Errorf("device of %v not told by the new leader its channel moved (%+v, %v)", op, d, ok)
		}
	}
	e.mu.Unlock()

	// Let the paused leader go: whatever it writes next is refused.
	epochs, _ := store.Epochs(t.Context(), 10)
	runs, _ := store.Runs(t.Context(), 10)
	letGo()
	err := <-settleErr
	if at != settlement.RunBroadcast && !errors.Is(err, hub.ErrFenced) {
		t.Fatalf("paused leader's run after its lease lapsed: %v, want hub.ErrFenced", err)
	}
	if err := a.Poll(t.Context()); !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("Poll on the former leader: %v, want hub.ErrNotLeader", err)
	}
	if _, err := a.Settle(t.Context()); !errors.Is(err, hub.ErrNotLeader) || !strings.Contains(err.Error(), "hub-b") {
		t.Fatalf("Settle on the former leader: %v, want hub.ErrNotLeader naming hub-b", err)
	}
	epochsAfter, _ := store.Epochs(t.Context(), 10)
	runsAfter, _ := store.Runs(t.Context(), 10)
	if !slices.EqualFunc(epochs, epochsAfter, func(x, y settlement.Epoch) bool { return x.Number == y.Number && x.End.Equal(y.End) }) ||
		!slices.EqualFunc(runs, runsAfter, func(x, y settlement.Run) bool {
			return x.Epoch.Number == y.Epoch.Number && x.Attempt == y.Attempt && x.State == y.State
		}) {
		t.Fatalf("the former leader wrote after losing its lease: epochs %v → %v, runs %v → %v", epochs, epochsAfter, runs, runsAfter)
	}

	// The epoch settled once: one batch spending every channel, the same
	// txid as before the pause once it was signed, two epochs in all.
	if len(r.Txs) != 1 {
		t.Fatalf("%d batch transactions", len(r.Txs))
	}
	txid := hubtest.RunTxids(t, r)[0]
	if (at == settlement.RunSigned || at == settlement.RunBroadcast) && hubtest.RunTxids(t, before)[0] != txid {
		t.Errorf("batch rebuilt after the hand-over at %s", at)
	}
	tx := e.chainTx(txid)
	for _, op := range chans {
		if hubtest.IndexOfInput(tx, op) < 0 {
			t.Errorf("channel %v not settled by the batch", op)
		}
		rec, err := store.Channel(t.Context(), op)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != hub.ChannelClosed || rec.CloseTx == nil || *rec.CloseTx != txid {
			t.Errorf("channel %v: %s closed by %v", op, rec.Status, rec.CloseTx)
		}
	}
	if len(epochsAfter) != 2 {
		t.Errorf("%d epochs, want 2", len(epochsAfter))
	}
	if len(e.reuse) > 0 {
		t.Errorf("nonces reused: %v", e.reuse)
	}
}
