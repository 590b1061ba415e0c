package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// SettlementStoreUnderTest is what the settlement suite needs of a store:
// the settlement store, the channel store whose channels a rollover moves,
// and Close, so it can check what survives a reopen.
type SettlementStoreUnderTest interface {
	hub.SettlementStore
	hub.ChannelStore
	Close() error
}

// RunSettlement runs the epoch and run store suite against the stores
// newStore makes. newStore follows the same rules as for Run: the first
// call for a test returns an empty store, a later call with the same t
// (after the earlier store was closed) reopens the same data, and Close may
// be called twice.
//
// Beyond hub.SettlementStore's documentation, the suite pins these choices:
// CommitRollover sets each old channel's CloseTx to the transaction of the
// run that spends its funding, keeps its payment state (Seq, Paid,
// DeviceSig: what the batch claimed) and moves its UpdatedAt to the run's
// Updated when that is later; a second rollover of an already closed
// channel is refused with hub.ErrSeqConflict, and two concurrent rollovers
// of the same channels let exactly one through; PutRun refuses a run whose
// epoch number or attempt is zero with hub.ErrInvalid; CutEpoch checks the
// open epoch before the previous epoch's run (a stale cut is
// hub.ErrEpochConflict whatever the runs).
func RunSettlement(t *testing.T, newStore func(t *testing.T) SettlementStoreUnderTest) {
	open := closing(newStore)

	t.Run("FirstEpoch", func(t *testing.T) { testFirstEpoch(t, open(t)) })
	t.Run("CutEpochOK", func(t *testing.T) { testCutEpochOK(t, open(t)) })
	t.Run("ErrEpochConflict", func(t *testing.T) { testErrEpochConflict(t, open(t)) })
	t.Run("ErrEpochConflictConcurrent", func(t *testing.T) { testErrEpochConflictConcurrent(t, open(t)) })
	t.Run("ErrRunOpen", func(t *testing.T) { testErrRunOpen(t, open(t)) })
	t.Run("ErrRunOpenConcurrent", func(t *testing.T) { testErrRunOpenConcurrent(t, open(t)) })
	t.Run("EpochsNewestFirst", func(t *testing.T) { testEpochsNewestFirst(t, open(t)) })
	t.Run("PutRunReplace", func(t *testing.T) { testPutRunReplace(t, open(t)) })
	t.Run("RunLatestAttempt", func(t *testing.T) { testRunLatestAttempt(t, open(t)) })
	t.Run("RunsNewestFirst", func(t *testing.T) { testRunsNewestFirst(t, open(t)) })
	t.Run("CommitRolloverAtomic", func(t *testing.T) { testCommitRolloverAtomic(t, open(t)) })
	t.Run("CommitRolloverMissingChannel", func(t *testing.T) { testCommitRolloverMissingChannel(t, open(t)) })
	t.Run("CommitRolloverTwice", func(t *testing.T) { testCommitRolloverTwice(t, open(t)) })
	t.Run("CommitRolloverConcurrent", func(t *testing.T) { testCommitRolloverConcurrent(t, open(t)) })
	t.Run("CommitRolloverStaleRead", func(t *testing.T) { testCommitRolloverStaleRead(t, open(t)) })
	t.Run("ReopenKeepsRuns", func(t *testing.T) { testReopenKeepsRuns(t, newStore) })
}

func first() settlement.Epoch { return settlement.FirstEpoch(epoch(), 100) }

func testFirstEpoch(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	if e, err := s.OpenEpoch(ctx); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("OpenEpoch on an empty store = %+v, %v; want hub.ErrNotFound", e, err)
	}
	if es := mustEpochs(t, s, 10); len(es) != 0 {
		t.Fatalf("Epochs on an empty store = %+v", es)
	}
	if rs := mustRuns(t, s, 10); len(rs) != 0 {
		t.Fatalf("Runs on an empty store = %+v", rs)
	}
	if r, err := s.Run(ctx, 1); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Run(1) on an empty store = %+v, %v; want hub.ErrNotFound", r, err)
	}
	// Only a cut of "epoch 0" opens the first epoch.
	if err := s.CutEpoch(ctx, settlement.Epoch{Number: 1, Start: epoch(), End: epoch().Add(time.Hour)}, settlement.Epoch{Number: 2, Start: epoch().Add(time.Hour)}); !errors.Is(err, hub.ErrEpochConflict) {
		t.Fatalf("cut of epoch 1 on an empty store: %v, want hub.ErrEpochConflict", err)
	}

	MustCut(t, s, settlement.Epoch{}, first())
	if got := MustOpenEpoch(t, s); got != first() {
		t.Fatalf("OpenEpoch = %+v, want %+v", got, first())
	}
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{first()})

	// Opening the first epoch again is a conflict: another hub did it.
	again := settlement.FirstEpoch(epoch().Add(time.Minute), 101)
	if err := s.CutEpoch(ctx, settlement.Epoch{}, again); !errors.Is(err, hub.ErrEpochConflict) {
		t.Fatalf("second first epoch: %v, want hub.ErrEpochConflict", err)
	}
	if got := MustOpenEpoch(t, s); got != first() {
		t.Fatalf("OpenEpoch after the refused cut = %+v, want %+v", got, first())
	}
}

func testCutEpochOK(t *testing.T, s SettlementStoreUnderTest) {
	MustCut(t, s, settlement.Epoch{}, first())
	closed, successor, err := first().Cut(epoch().Add(time.Hour), 106)
	if err != nil {
		t.Fatal(err)
	}
	MustCut(t, s, closed, successor)
	if got := MustOpenEpoch(t, s); got != successor {
		t.Fatalf("OpenEpoch = %+v, want %+v", got, successor)
	}
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{successor, closed})

	closed2, successor2 := MustCutNext(t, s)
	if closed2.Number != 2 || successor2.Number != 3 || !closed2.End.Equal(successor2.Start) {
		t.Fatalf("second cut: closed %+v, successor %+v", closed2, successor2)
	}
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{successor2, closed2, closed})
}

func testErrEpochConflict(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	MustCut(t, s, settlement.Epoch{}, first())
	a1, a2, err := first().Cut(epoch().Add(time.Hour), 106)
	if err != nil {
		t.Fatal(err)
	}
	b1, b2, err := first().Cut(epoch().Add(2*time.Hour), 112)
	if err != nil {
		t.Fatal(err)
	}
	MustCut(t, s, a1, a2)
	MustPutRun(t, s, NewRun(t, a1, 1, settlement.RunConfirmed))
	if err := s.CutEpoch(ctx, b1, b2); !errors.Is(err, hub.ErrEpochConflict) {
		t.Fatalf("second cut of epoch 1: %v, want hub.ErrEpochConflict", err)
	}
	// The first cut stands, untouched by the refused one.
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{a2, a1})

	// A cut of a later epoch than the open one is a conflict too.
	c1, c2, err := a2.Cut(epoch().Add(3*time.Hour), 120)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2, err := c2.Cut(epoch().Add(4*time.Hour), 130)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CutEpoch(ctx, d1, d2); !errors.Is(err, hub.ErrEpochConflict) {
		t.Fatalf("cut of epoch 3 while 2 is open: %v, want hub.ErrEpochConflict", err)
	}
	MustCut(t, s, c1, c2)
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{c2, c1, a1})
}

func testErrEpochConflictConcurrent(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	const racers = 8

	// race runs one cut per racer at once and returns the index of the one
	// that won; every other must get hub.ErrEpochConflict.
	race := func(cut func(i int) error) int {
		t.Helper()
		errs := atOnce(racers, cut)
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("racers %d and %d both cut the same epoch", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, hub.ErrEpochConflict):
				t.Fatalf("racer %d: %v, want nil or hub.ErrEpochConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("no racer cut the epoch")
		}
		return winner
	}

	firsts := make([]settlement.Epoch, racers)
	for i := range firsts {
		firsts[i] = settlement.FirstEpoch(epoch().Add(time.Duration(i)*time.Second), 100+uint32(i))
	}
	w := race(func(i int) error { return s.CutEpoch(ctx, settlement.Epoch{}, firsts[i]) })
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{firsts[w]})

	closed := make([]settlement.Epoch, racers)
	successors := make([]settlement.Epoch, racers)
	for i := range closed {
		var err error
		closed[i], successors[i], err = firsts[w].Cut(epoch().Add(time.Hour+time.Duration(i)*time.Second), 110+uint32(i))
		if err != nil {
			t.Fatal(err)
		}
	}
	w2 := race(func(i int) error { return s.CutEpoch(ctx, closed[i], successors[i]) })
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{successors[w2], closed[w2]})
}

// testErrRunOpen: epoch 2 cannot be cut until epoch 1's latest run has
// settled it (broadcast, confirmed or empty): with no run, or a latest run
// planned, signing, signed, failed or replaced, the cut is refused with
// hub.ErrRunOpen and nothing changes.
func testErrRunOpen(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	MustCut(t, s, settlement.Epoch{}, first())
	e1, e2 := MustCutNext(t, s)
	c2, c3, err := e2.Cut(e2.Start.Add(time.Hour), e2.StartHeight+6)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(what string) {
		t.Helper()
		if err := s.CutEpoch(ctx, c2, c3); !errors.Is(err, hub.ErrRunOpen) {
			t.Fatalf("cut with epoch 1 %s: %v, want hub.ErrRunOpen", what, err)
		}
		assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{e2, e1})
	}
	refused("without a run")
	for _, st := range []settlement.RunState{settlement.RunPlanned, settlement.RunSigning, settlement.RunSigned} {
		MustPutRun(t, s, NewRun(t, e1, 1, st))
		refused(string(st))
	}
	MustPutRun(t, s, NewRun(t, e1, 1, settlement.RunBroadcast))
	// A later attempt is what counts: attempt 2 failed reopens the epoch.
	MustPutRun(t, s, NewRun(t, e1, 2, settlement.RunFailed))
	refused("failed on its latest attempt")
	MustPutRun(t, s, NewRun(t, e1, 3, settlement.RunReplaced))
	refused("replaced on its latest attempt")
	MustPutRun(t, s, NewRun(t, e1, 4, settlement.RunEmpty))
	MustCut(t, s, c2, c3)
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{c3, c2, e1})
}

// testErrRunOpenConcurrent: racers each try to cut the open epoch and
// then the next one without a run in between; exactly one cut goes
// through, every other is hub.ErrEpochConflict or hub.ErrRunOpen.
func testErrRunOpenConcurrent(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	MustCut(t, s, settlement.Epoch{}, first())
	e1, e2 := MustCutNext(t, s)
	MustPutRun(t, s, NewRun(t, e1, 1, settlement.RunConfirmed))
	errs := atOnce(8, func(i int) error {
		// Each racer cuts the epoch it last saw open, as a hub does:
		// epoch 2, or epoch 3 once another cut 2.
		open, err := s.OpenEpoch(ctx)
		if err != nil {
			return err
		}
		c, n, err := open.Cut(open.Start.Add(time.Hour+time.Duration(i)*time.Second), open.StartHeight+6)
		if err != nil {
			return err
		}
		return s.CutEpoch(ctx, c, n)
	})
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, hub.ErrEpochConflict) && !errors.Is(err, hub.ErrRunOpen):
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d racers cut, want exactly 1", won)
	}
	if es := mustEpochs(t, s, 10); len(es) != 3 || es[1].Number != e2.Number {
		t.Fatalf("epochs after the race: %+v", es)
	}
}

func testEpochsNewestFirst(t *testing.T, s SettlementStoreUnderTest) {
	MustCut(t, s, settlement.Epoch{}, first())
	all := []settlement.Epoch{first()}
	for range 5 {
		closed, successor := MustCutNext(t, s)
		all[len(all)-1] = closed
		all = append(all, successor)
	}
	want := make([]settlement.Epoch, len(all))
	for i, e := range all {
		want[len(all)-1-i] = e
	}
	assertEpochs(t, mustEpochs(t, s, 100), want)
	assertEpochs(t, mustEpochs(t, s, 3), want[:3])
	if es := mustEpochs(t, s, 0); len(es) != 0 {
		t.Fatalf("Epochs(0) = %d epochs, want none", len(es))
	}
}

func testPutRunReplace(t *testing.T, s SettlementStoreUnderTest) {
	closed, _ := cutTwo(t, s)
	r := NewRun(t, closed, 1, settlement.RunPlanned)
	MustPutRun(t, s, r)
	assertRun(t, MustRun(t, s, closed.Number), r)

	// The next state replaces the record of the same attempt.
	if err := r.Transition(settlement.RunSigning, r.Created.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	r.Txs = append(r.Txs, []byte{0xaa, 0xbb})
	MustPutRun(t, s, r)
	assertRun(t, MustRun(t, s, closed.Number), r)
	assertRuns(t, mustRuns(t, s, 10), []settlement.Run{r})
}

// cutTwo opens epoch 1 and cuts it; it returns the closed epoch and the
// open epoch 2.
func cutTwo(t *testing.T, s SettlementStoreUnderTest) (closed, open settlement.Epoch) {
	t.Helper()
	MustCut(t, s, settlement.Epoch{}, first())
	return MustCutNext(t, s)
}

func testRunLatestAttempt(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	MustCut(t, s, settlement.Epoch{}, first())
	e1, _ := MustCutNext(t, s)
	e2, _ := MustCutNext(t, s)
	e3, _ := MustCutNext(t, s)

	r1 := NewRun(t, e1, 1, settlement.RunConfirmed)
	r2a := NewRun(t, e2, 1, settlement.RunReplaced)
	r2b := NewRun(t, e2, 2, settlement.RunBroadcast)
	r2c := NewRun(t, e2, 300, settlement.RunSigning)
	r3 := NewRun(t, e3, 1, settlement.RunPlanned)
	for _, r := range []settlement.Run{r3, r2c, r2b, r1, r2a} {
		MustPutRun(t, s, r)
	}
	// Attempts compare as numbers, not as text ("300" after "2").
	assertRun(t, MustRun(t, s, 2), r2c)
	assertRun(t, MustRun(t, s, 1), r1)
	assertRun(t, MustRun(t, s, 3), r3)

	// Replacing an earlier attempt does not make it the latest.
	r2a.Error = "rewritten"
	MustPutRun(t, s, r2a)
	assertRun(t, MustRun(t, s, 2), r2c)

	for _, n := range []uint64{0, 4, 1 << 40} {
		if r, err := s.Run(ctx, n); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("Run(%d) = %+v, %v; want hub.ErrNotFound", n, r, err)
		}
	}
	if err := s.PutRun(ctx, NewRun(t, e1, 0, settlement.RunPlanned)); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("PutRun with attempt 0: %v, want hub.ErrInvalid", err)
	}
}

func testRunsNewestFirst(t *testing.T, s SettlementStoreUnderTest) {
	MustCut(t, s, settlement.Epoch{}, first())
	var latest []settlement.Run
	for n := range 5 {
		e, _ := MustCutNext(t, s)
		// Epoch n has n+1 attempts; the last one is what Runs lists.
		var r settlement.Run
		// The latest settled the epoch (the next cut needs it).
		for a := uint32(1); a <= uint32(n)+1; a++ {
			st := settlement.RunFailed
			if a == uint32(n)+1 {
				st = settlement.RunEmpty
			}
			r = NewRun(t, e, a, st)
			MustPutRun(t, s, r)
		}
		latest = append([]settlement.Run{r}, latest...)
	}
	assertRuns(t, mustRuns(t, s, 100), latest)
	assertRuns(t, mustRuns(t, s, 2), latest[:2])
	if rs := mustRuns(t, s, 0); len(rs) != 0 {
		t.Fatalf("Runs(0) = %d runs, want none", len(rs))
	}
}

// paidChannels stores n channels of the given devices (round robin) with a
// payment and some unsigned balance each, and returns them as stored.
func paidChannels(t *testing.T, s SettlementStoreUnderTest, n int, devices ...string) []hub.ChannelRecord {
	t.Helper()
	out := make([]hub.ChannelRecord, n)
	for i := range out {
		c := NewChannel(t, devices[i%len(devices)])
		MustPutChannel(t, s, c)
		MustApplyPayment(t, s, Payment(c.Funding, 1, 250_000+1000*msat.Amount(i)))
		if err := s.ApplyOwed(context.Background(), c.Funding, nil, 777+msat.Amount(i), 1_000_000); err != nil {
			t.Fatalf("ApplyOwed: %v", err)
		}
		out[i] = MustChannel(t, s, c.Funding)
	}
	return out
}

func testCommitRolloverAtomic(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	closed, _ := cutTwo(t, s)
	old := paidChannels(t, s, 3, "car-1", "car-2")
	bystander := paidChannels(t, s, 1, "car-1")[0]
	r, next := NewRollover(t, closed, 1, old)

	if err := s.CommitRollover(ctx, r, old, next); err != nil {
		t.Fatalf("CommitRollover: %v", err)
	}
	assertRun(t, MustRun(t, s, closed.Number), r)
	for i, c := range old {
		got := MustChannel(t, s, c.Funding)
		assertChannel(t, got, closedBy(t, c, r))
		if got.CloseTx == nil || *got.CloseTx != next[i].Funding.Hash {
			t.Fatalf("channel %d CloseTx = %v, want the batch %s", i, got.CloseTx, next[i].Funding.Hash)
		}
	}
	for i, n := range next {
		got := MustChannel(t, s, n.Funding)
		if got.Seq != 0 || got.Paid != 0 || got.DeviceSig != ([64]byte{}) || got.Owed != old[i].Owed {
			t.Fatalf("next channel %d: seq %d, paid %d, owed %d; want 0, 0, %d carried", i, got.Seq, got.Paid, got.Owed, old[i].Owed)
		}
		assertChannel(t, got, n)
		byPending, err := s.ChannelByPending(ctx, n.PendingID)
		if err != nil {
			t.Fatalf("ChannelByPending(next %d): %v", i, err)
		}
		assertChannel(t, byPending, n)
	}
	// The device index lists each device's channels in creation order: the
	// old ones, the bystander, then the new ones.
	wantCar1 := []hub.ChannelRecord{closedBy(t, old[0], r), closedBy(t, old[2], r), bystander, next[0], next[2]}
	wantCar2 := []hub.ChannelRecord{closedBy(t, old[1], r), next[1]}
	for dev, want := range map[string][]hub.ChannelRecord{"car-1": wantCar1, "car-2": wantCar2} {
		got := mustChannelsByDevice(t, s, dev)
		if len(got) != len(want) {
			t.Fatalf("ChannelsByDevice(%s) = %d channels, want %d", dev, len(got), len(want))
		}
		for i := range want {
			assertChannel(t, got[i], want[i])
		}
	}
	assertChannel(t, MustChannel(t, s, bystander.Funding), bystander)
	ready, err := s.Channels(ctx, hub.ChannelReady)
	if err != nil {
		t.Fatalf("Channels(ready): %v", err)
	}
	if len(ready) != 4 {
		t.Fatalf("Channels(ready) = %d channels, want the 3 new ones and the bystander", len(ready))
	}
	// A new channel takes payments from seq 1.
	MustApplyPayment(t, s, Payment(next[0].Funding, 1, 1000))
}

func testCommitRolloverMissingChannel(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	closed, _ := cutTwo(t, s)
	old := paidChannels(t, s, 2, "car-1")
	// The unknown channel comes last, so a store that writes as it checks
	// would already have moved the first two.
	unknown := NewChannel(t, "car-1")
	r, next := NewRollover(t, closed, 1, append(old, unknown))

	err := s.CommitRollover(ctx, r, append(old, unknown), next)
	if !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("CommitRollover with an unknown channel: %v, want hub.ErrNotFound", err)
	}
	for _, c := range old {
		assertChannel(t, MustChannel(t, s, c.Funding), c)
	}
	for _, n := range next {
		assertNoChannel(t, s, n)
	}
	if got := mustChannelsByDevice(t, s, "car-1"); len(got) != len(old) {
		t.Fatalf("ChannelsByDevice = %d channels after a refused rollover, want %d", len(got), len(old))
	}
	if got, err := s.Run(ctx, closed.Number); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Run after a refused rollover = %+v, %v; want hub.ErrNotFound", got, err)
	}

	// A next channel that already exists refuses the rollover the same way.
	r, next = NewRollover(t, closed, 1, old)
	MustPutChannel(t, s, next[1])
	if err := s.CommitRollover(ctx, r, old, next); !errors.Is(err, hub.ErrAlreadyExists) {
		t.Fatalf("CommitRollover onto an existing channel: %v, want hub.ErrAlreadyExists", err)
	}
	for _, c := range old {
		assertChannel(t, MustChannel(t, s, c.Funding), c)
	}
	assertNoChannel(t, s, next[0])
	if _, err := s.Run(ctx, closed.Number); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Run after a refused rollover: %v, want hub.ErrNotFound", err)
	}
}

func testCommitRolloverTwice(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	closed, _ := cutTwo(t, s)
	old := paidChannels(t, s, 2, "car-1")
	r, next := NewRollover(t, closed, 1, old)
	if err := s.CommitRollover(ctx, r, old, next); err != nil {
		t.Fatalf("CommitRollover: %v", err)
	}

	// The same rollover again, and a second attempt with fresh next
	// channels: both find the old channels closed.
	if err := s.CommitRollover(ctx, r, old, next); !errors.Is(err, hub.ErrSeqConflict) {
		t.Fatalf("repeated CommitRollover: %v, want hub.ErrSeqConflict", err)
	}
	r2, next2 := NewRollover(t, closed, 2, old)
	if err := s.CommitRollover(ctx, r2, old, next2); !errors.Is(err, hub.ErrSeqConflict) {
		t.Fatalf("second attempt over closed channels: %v, want hub.ErrSeqConflict", err)
	}
	// One fresh channel among closed ones does not get through either.
	fresh := paidChannels(t, s, 1, "car-1")[0]
	mixed := []hub.ChannelRecord{fresh, old[0]}
	r3, next3 := NewRollover(t, closed, 3, mixed)
	if err := s.CommitRollover(ctx, r3, mixed, next3); !errors.Is(err, hub.ErrSeqConflict) {
		t.Fatalf("rollover of a fresh and a closed channel: %v, want hub.ErrSeqConflict", err)
	}

	assertRun(t, MustRun(t, s, closed.Number), r)
	assertChannel(t, MustChannel(t, s, fresh.Funding), fresh)
	for i, c := range old {
		assertChannel(t, MustChannel(t, s, c.Funding), closedBy(t, c, r))
		assertChannel(t, MustChannel(t, s, next[i].Funding), next[i])
	}
	for _, n := range append(next2, next3...) {
		assertNoChannel(t, s, n)
	}
	// Nothing doubled: the two old, the two next and the fresh one.
	if got := mustChannelsByDevice(t, s, "car-1"); len(got) != 5 {
		t.Fatalf("ChannelsByDevice = %d channels, want 5", len(got))
	}
}

// testCommitRolloverStaleRead: a charge recorded on an old channel after
// the settlement read it (Owed up, same Seq) makes the rollover computed
// from that read fail with ErrSeqConflict, writing nothing, so the charge
// is not carried short; the rollover computed from a fresh read commits
// and carries it.
func testCommitRolloverStaleRead(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	closed, _ := cutTwo(t, s)
	old := paidChannels(t, s, 2, "car-1")
	r, next := NewRollover(t, closed, 1, old)

	if err := s.ApplyOwed(ctx, old[1].Funding, nil, 50, 1_000_000); err != nil {
		t.Fatalf("ApplyOwed: %v", err)
	}
	moved := MustChannel(t, s, old[1].Funding)
	if err := s.CommitRollover(ctx, r, old, next); !errors.Is(err, hub.ErrSeqConflict) {
		t.Fatalf("CommitRollover from a stale read: %v, want hub.ErrSeqConflict", err)
	}
	assertChannel(t, MustChannel(t, s, old[0].Funding), old[0])
	assertChannel(t, MustChannel(t, s, old[1].Funding), moved)
	for _, n := range next {
		assertNoChannel(t, s, n)
	}
	if _, err := s.Run(ctx, closed.Number); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Run after a refused rollover: %v, want hub.ErrNotFound", err)
	}

	fresh := []hub.ChannelRecord{MustChannel(t, s, old[0].Funding), moved}
	r, next = NewRollover(t, closed, 1, fresh)
	if err := s.CommitRollover(ctx, r, fresh, next); err != nil {
		t.Fatalf("CommitRollover from a fresh read: %v", err)
	}
	if got := MustChannel(t, s, next[1].Funding); got.Owed != old[1].Owed+50 {
		t.Fatalf("next channel owes %d msat, want %d", got.Owed, old[1].Owed+50)
	}
}

func testCommitRolloverConcurrent(t *testing.T, s SettlementStoreUnderTest) {
	ctx := context.Background()
	MustCut(t, s, settlement.Epoch{}, first())
	// Several rounds, one epoch each, because a race lost by luck in one
	// round is hard to tell from a store that serializes correctly.
	const rounds, racers = 5, 6
	for round := range rounds {
		closed, _ := MustCutNext(t, s)
		dev := fmt.Sprintf("car-%d", round)
		old := paidChannels(t, s, 3, dev)
		runs := make([]settlement.Run, racers)
		nexts := make([][]hub.ChannelRecord, racers)
		for i := range racers {
			runs[i], nexts[i] = NewRollover(t, closed, uint32(i+1), old)
		}
		errs := make([]error, racers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = s.CommitRollover(ctx, runs[i], old, nexts[i])
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: rollovers %d and %d both went through", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, hub.ErrSeqConflict):
				t.Fatalf("round %d: rollover %d: %v, want nil or hub.ErrSeqConflict", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no rollover went through", round)
		}
		for i, next := range nexts {
			for _, n := range next {
				if i == winner {
					assertChannel(t, MustChannel(t, s, n.Funding), n)
				} else {
					assertNoChannel(t, s, n)
				}
			}
		}
		for _, c := range old {
			assertChannel(t, MustChannel(t, s, c.Funding), closedBy(t, c, runs[winner]))
		}
		assertRun(t, MustRun(t, s, closed.Number), runs[winner])
		if got := mustChannelsByDevice(t, s, dev); len(got) != 2*len(old) {
			t.Fatalf("round %d: ChannelsByDevice = %d channels, want %d", round, len(got), 2*len(old))
		}
	}
}

func testReopenKeepsRuns(t *testing.T, newStore func(t *testing.T) SettlementStoreUnderTest) {
	s := newStore(t)
	closed, open := cutTwo(t, s)
	old := paidChannels(t, s, 2, "car-1")
	failed := NewRun(t, closed, 1, settlement.RunFailed)
	MustPutRun(t, s, failed)
	r, next := NewRollover(t, closed, 2, old)
	if err := s.CommitRollover(context.Background(), r, old, next); err != nil {
		t.Fatalf("CommitRollover: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = newStore(t)
	defer s.Close()
	if got := MustOpenEpoch(t, s); got != open {
		t.Fatalf("OpenEpoch after reopen = %+v, want %+v", got, open)
	}
	assertEpochs(t, mustEpochs(t, s, 10), []settlement.Epoch{open, closed})
	assertRun(t, MustRun(t, s, closed.Number), r)
	assertRuns(t, mustRuns(t, s, 10), []settlement.Run{r})
	for i, c := range old {
		assertChannel(t, MustChannel(t, s, c.Funding), closedBy(t, c, r))
		assertChannel(t, MustChannel(t, s, next[i].Funding), next[i])
	}
	// The closed channels stay closed across the restart.
	if err := s.CommitRollover(context.Background(), r, old, next); !errors.Is(err, hub.ErrSeqConflict) {
		t.Fatalf("rollover after reopen: %v, want hub.ErrSeqConflict", err)
	}
	// And the cut continues from the stored open epoch.
	MustCutNext(t, s)
}

// atOnce runs f(0) … f(n-1) in n goroutines released together, so their
// store writes race, and returns each one's error.
func atOnce(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}
