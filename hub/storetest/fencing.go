package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// FencedStoreUnderTest is a settlement store that also keeps the
// settlement leader lease.
type FencedStoreUnderTest interface {
	SettlementStoreUnderTest
	hub.LeaderLease
}

// RunFencing pins the settlement lease and the fencing rule: one live
// lease at a time; every acquisition issues a larger token; a settlement
// write (CutEpoch, PutRun, CommitRollover) made with hub.WithFence(token)
// goes through only while the lease is live and holds token, and is
// otherwise refused with hub.ErrFenced (wrapping hub.ErrNotLeader) with
// nothing written; a write with no token is not fenced. newStore follows
// RunSettlement's rules.
func RunFencing(t *testing.T, newStore func(t *testing.T) FencedStoreUnderTest) {
	open := func(t *testing.T) FencedStoreUnderTest {
		s := newStore(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Run("OneLeader", func(t *testing.T) { testOneLeader(t, open(t)) })
	t.Run("ExpiredLeaseFenced", func(t *testing.T) { testExpiredLeaseFenced(t, open(t)) })
	t.Run("FormerLeaderFenced", func(t *testing.T) { testFormerLeaderFenced(t, open(t)) })
	t.Run("ReleaseHandsOver", func(t *testing.T) { testReleaseHandsOver(t, open(t)) })
}

func mustAcquire(t *testing.T, s hub.LeaderLease, instance string, ttl time.Duration) hub.Leader {
	t.Helper()
	l, err := s.Acquire(context.Background(), instance, ttl)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", instance, err)
	}
	if l.Instance != instance || l.Token == 0 {
		t.Fatalf("Acquire(%s) = %+v", instance, l)
	}
	return l
}

func testOneLeader(t *testing.T, s FencedStoreUnderTest) {
	ctx := context.Background()
	if _, err := s.Leader(ctx); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Leader on an empty store: %v, want hub.ErrNotFound", err)
	}
	a := mustAcquire(t, s, "a", time.Minute)
	held, err := s.Acquire(ctx, "b", time.Minute)
	if !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("Acquire(b) while a leads: %v, want hub.ErrNotLeader", err)
	}
	if held.Instance != "a" || held.Token != a.Token {
		t.Fatalf("Acquire(b) names %+v, want a's lease %+v", held, a)
	}
	if _, err := s.Renew(ctx, hub.Leader{Instance: "b", Token: a.Token}, time.Minute); !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("Renew by b: %v, want hub.ErrNotLeader", err)
	}
	r, err := s.Renew(ctx, a, time.Minute)
	if err != nil || r.Token != a.Token {
		t.Fatalf("Renew(a) = %+v, %v; want token %d", r, err, a.Token)
	}
	// A restarted a takes a new token, fencing its former self.
	a2 := mustAcquire(t, s, "a", time.Minute)
	if a2.Token <= a.Token {
		t.Fatalf("second acquisition token %d, want above %d", a2.Token, a.Token)
	}
	if _, err := s.Renew(ctx, a, time.Minute); !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("Renew with the old token: %v, want hub.ErrNotLeader", err)
	}
	got, err := s.Leader(ctx)
	if err != nil || got.Instance != "a" || got.Token != a2.Token || !got.Expires.After(time.Now()) {
		t.Fatalf("Leader = %+v, %v; want a with token %d, live", got, err, a2.Token)
	}
	if err := s.CutEpoch(hub.WithFence(ctx, a.Token), settlement.Epoch{}, first()); !errors.Is(err, hub.ErrFenced) {
		t.Fatalf("cut with the old token: %v, want hub.ErrFenced", err)
	}
	if err := s.CutEpoch(hub.WithFence(ctx, a2.Token), settlement.Epoch{}, first()); err != nil {
		t.Fatalf("cut with the live token: %v", err)
	}
}

// waitExpired polls until no lease is live.
func waitExpired(t *testing.T, s hub.LeaderLease) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Leader(context.Background())
		if errors.Is(err, hub.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("Leader: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("lease did not expire")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fencedWritesRefused checks that every settlement write with token is
// refused with hub.ErrFenced and leaves the store as it was.
func fencedWritesRefused(t *testing.T, s FencedStoreUnderTest, token uint64) {
	t.Helper()
	ctx := hub.WithFence(context.Background(), token)
	before := mustEpochs(t, s, 10)
	open := MustOpenEpoch(t, s)
	c, n, err := open.Cut(open.Start.Add(time.Hour), open.StartHeight+6)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CutEpoch(ctx, c, n); !errors.Is(err, hub.ErrFenced) || !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("CutEpoch with token %d: %v, want hub.ErrFenced", token, err)
	}
	assertEpochs(t, mustEpochs(t, s, 10), before)
	closed := before[1]
	prev := MustRun(t, s, closed.Number)
	if err := s.PutRun(ctx, NewRun(t, closed, prev.Attempt+1, settlement.RunPlanned)); !errors.Is(err, hub.ErrFenced) {
		t.Fatalf("PutRun with token %d: %v, want hub.ErrFenced", token, err)
	}
	assertRun(t, MustRun(t, s, closed.Number), prev)
	old := paidChannels(t, s, 2, "car-1")
	r, next := NewRollover(t, closed, prev.Attempt+1, old)
	if err := s.CommitRollover(ctx, r, old, next); !errors.Is(err, hub.ErrFenced) {
		t.Fatalf("CommitRollover with token %d: %v, want hub.ErrFenced", token, err)
	}
	assertRun(t, MustRun(t, s, closed.Number), prev)
	for _, c := range old {
		assertChannel(t, MustChannel(t, s, c.Funding), c)
	}
	for _, c := range next {
		if _, err := s.Channel(context.Background(), c.Funding); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("next channel of a refused rollover: %v, want hub.ErrNotFound", err)
		}
	}
}

// leadTwoEpochs cuts epochs 1 and 2 with token and records epoch 1 as
// broadcast, so a further cut is allowed.
func leadTwoEpochs(t *testing.T, s FencedStoreUnderTest, token uint64) {
	t.Helper()
	ctx := hub.WithFence(context.Background(), token)
	if err := s.CutEpoch(ctx, settlement.Epoch{}, first()); err != nil {
		t.Fatalf("first cut with the live token: %v", err)
	}
	open := MustOpenEpoch(t, s)
	c, n, err := open.Cut(open.Start.Add(time.Hour), open.StartHeight+6)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CutEpoch(ctx, c, n); err != nil {
		t.Fatalf("cut with the live token: %v", err)
	}
	if err := s.PutRun(ctx, NewRun(t, c, 1, settlement.RunBroadcast)); err != nil {
		t.Fatalf("PutRun with the live token: %v", err)
	}
}

func testExpiredLeaseFenced(t *testing.T, s FencedStoreUnderTest) {
	a := mustAcquire(t, s, "a", 300*time.Millisecond)
	leadTwoEpochs(t, s, a.Token)
	waitExpired(t, s)
	// Nobody took the lease, yet a's token is dead: a paused leader that
	// wakes after its lease expired writes nothing.
	fencedWritesRefused(t, s, a.Token)
	if _, err := s.Renew(context.Background(), a, time.Minute); !errors.Is(err, hub.ErrNotLeader) {
		t.Fatalf("Renew of an expired lease: %v, want hub.ErrNotLeader", err)
	}
}

func testFormerLeaderFenced(t *testing.T, s FencedStoreUnderTest) {
	a := mustAcquire(t, s, "a", 300*time.Millisecond)
	leadTwoEpochs(t, s, a.Token)
	waitExpired(t, s)
	b := mustAcquire(t, s, "b", time.Minute)
	if b.Token <= a.Token {
		t.Fatalf("b's token %d, want above a's %d", b.Token, a.Token)
	}
	fencedWritesRefused(t, s, a.Token)
	// The live token writes, and so does an unfenced writer.
	closed := mustEpochs(t, s, 10)[1]
	if err := s.PutRun(hub.WithFence(context.Background(), b.Token), NewRun(t, closed, 2, settlement.RunConfirmed)); err != nil {
		t.Fatalf("PutRun with b's token: %v", err)
	}
	MustPutRun(t, s, NewRun(t, closed, 3, settlement.RunConfirmed))
}

func testReleaseHandsOver(t *testing.T, s FencedStoreUnderTest) {
	ctx := context.Background()
	a := mustAcquire(t, s, "a", time.Minute)
	// Releasing someone else's lease does nothing.
	if err := s.Release(ctx, hub.Leader{Instance: "b", Token: a.Token}); err != nil {
		t.Fatalf("Release by b: %v", err)
	}
	if l, err := s.Leader(ctx); err != nil || l.Instance != "a" {
		t.Fatalf("Leader after b's release = %+v, %v; want a", l, err)
	}
	if err := s.Release(ctx, a); err != nil {
		t.Fatalf("Release(a): %v", err)
	}
	b := mustAcquire(t, s, "b", time.Minute)
	if err := s.CutEpoch(hub.WithFence(ctx, a.Token), settlement.Epoch{}, first()); !errors.Is(err, hub.ErrFenced) {
		t.Fatalf("cut with a released token: %v, want hub.ErrFenced", err)
	}
	if err := s.CutEpoch(hub.WithFence(ctx, b.Token), settlement.Epoch{}, first()); err != nil {
		t.Fatalf("cut with b's token: %v", err)
	}
}
