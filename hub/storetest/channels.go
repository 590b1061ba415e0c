package storetest

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
)

// ChannelStoreUnderTest is a hub.ChannelStore the suite can close, so it can
// check what survives a reopen.
type ChannelStoreUnderTest interface {
	hub.ChannelStore
	Close() error
}

// ReceiptSize is the size of the receipts the suite and the benchmarks
// store: about what a hub-signed channel.Receipt takes.
const ReceiptSize = 250

// RunChannels runs the channel store suite against the stores newStore
// makes. newStore follows the same rules as for Run: the first call for a
// test returns an empty store, a later call with the same t (after the
// earlier store was closed) reopens the same data, and Close may be called
// twice.
func RunChannels(t *testing.T, newStore func(t *testing.T) ChannelStoreUnderTest) {
	open := closing(newStore)

	t.Run("PutThenRead", func(t *testing.T) { testPutThenRead(t, open(t)) })
	t.Run("IndexByFundingAndDevice", func(t *testing.T) { testIndexByFundingAndDevice(t, open(t)) })
	t.Run("ApplyPaymentOK", func(t *testing.T) { testApplyPaymentOK(t, open(t)) })
	t.Run("ErrNotFound", func(t *testing.T) { testChannelErrNotFound(t, open(t)) })
	t.Run("ErrSeqConflict", func(t *testing.T) { testErrSeqConflict(t, open(t)) })
	t.Run("ErrHoldConflict", func(t *testing.T) { testErrHoldConflict(t, open(t)) })
	t.Run("HoldCapturedAccumulates", func(t *testing.T) { testHoldCapturedAccumulates(t, open(t)) })
	t.Run("ActiveHolds", func(t *testing.T) { testActiveHolds(t, open(t)) })
	t.Run("ApplyOwedWithinLimit", func(t *testing.T) { testApplyOwedWithinLimit(t, open(t)) })
	t.Run("ErrCreditLimit", func(t *testing.T) { testErrCreditLimit(t, open(t)) })
	t.Run("ErrInvalid", func(t *testing.T) { testChannelErrInvalid(t, open(t)) })
	t.Run("PutChannelKeepsState", func(t *testing.T) { testPutChannelKeepsState(t, open(t)) })
	t.Run("ReceiptsPaging", func(t *testing.T) { testReceiptsPaging(t, open(t)) })
	t.Run("ReopenKeepsPayments", func(t *testing.T) { testReopenKeepsPayments(t, newStore) })
	t.Run("PaymentLowersStoredOwed", func(t *testing.T) { testPaymentLowersStoredOwed(t, open(t)) })
	t.Run("ConservationUnderConcurrency", func(t *testing.T) { testConservation(t, open(t)) })
}

func testPutThenRead(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	d := NewDevice(t)
	c := NewChannel(t, d.ID)
	closeTx := c.Funding.Hash
	c.CloseTx = &closeTx
	MustPutChannel(t, s, c)

	got, err := s.ChannelByPending(ctx, c.PendingID)
	if err != nil {
		t.Fatalf("ChannelByPending: %v", err)
	}
	assertChannel(t, got, c)
	assertChannel(t, MustChannel(t, s, c.Funding), c)
	all, err := s.Channels(ctx)
	if err != nil {
		t.Fatalf("Channels: %v", err)
	}
	if len(all) != 1 {
		t.Fatalf("Channels() = %d channels, want 1", len(all))
	}
	assertChannel(t, all[0], c)

	h := NewHold(t, c.Funding, d.ID, 5000)
	mustPutHold(t, s, h)
	assertHold(t, mustHold(t, s, h.ID), h)
	hs, err := s.Holds(ctx, c.Funding)
	if err != nil {
		t.Fatalf("Holds: %v", err)
	}
	if len(hs) != 1 {
		t.Fatalf("Holds = %d holds, want 1", len(hs))
	}
	assertHold(t, hs[0], h)

	// Replacing the record changes what PutChannel may change.
	c.Status = hub.ChannelFrozen
	c.CloseTx = nil
	MustPutChannel(t, s, c)
	assertChannel(t, MustChannel(t, s, c.Funding), c)
}

func testChannelErrNotFound(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-x")
	if _, err := s.ChannelByPending(ctx, c.PendingID); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("ChannelByPending of an unknown id: error = %v, want ErrNotFound", err)
	}
	if _, err := s.Channel(ctx, c.Funding); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Channel of an unknown outpoint: error = %v, want ErrNotFound", err)
	}
	if _, err := s.ApplyPayment(ctx, Payment(c.Funding, 1, 1000)); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("ApplyPayment to an unknown channel: error = %v, want ErrNotFound", err)
	}
	if err := s.ApplyOwed(ctx, c.Funding, nil, 10, 1000); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("ApplyOwed to an unknown channel: error = %v, want ErrNotFound", err)
	}
	if _, err := s.Hold(ctx, [16]byte{1}); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Hold of an unknown id: error = %v, want ErrNotFound", err)
	}
	// A payment naming a hold that does not exist is refused as unknown
	// too, and writes nothing.
	MustPutChannel(t, s, c)
	u := Payment(c.Funding, 1, 1000)
	u.HoldID, u.Amount = &[16]byte{2}, 1000
	if _, err := s.ApplyPayment(ctx, u); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("ApplyPayment against an unknown hold: error = %v, want ErrNotFound", err)
	}
	assertUnchanged(t, s, c)
	if rs := mustReceipts(t, s, c.Funding, 0, 10); len(rs) != 0 {
		t.Fatalf("Receipts of a channel without payments = %d, want none", len(rs))
	}
	if ds, err := s.ChannelsByDevice(ctx, "dev-nobody"); err != nil || len(ds) != 0 {
		t.Fatalf("ChannelsByDevice of an unknown device = %d channels, %v; want none", len(ds), err)
	}
}

func testIndexByFundingAndDevice(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	a, b := NewDevice(t), NewDevice(t)

	// Offered, not yet funded: found by pending id only.
	pending := NewChannel(t, a.ID)
	op := pending.Funding
	pending.Funding = wire.OutPoint{}
	pending.Status = hub.ChannelPending
	MustPutChannel(t, s, pending)
	if _, err := s.Channel(ctx, op); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Channel before funding is named: error = %v, want ErrNotFound", err)
	}

	var want []hub.ChannelRecord
	want = append(want, pending)
	for i := range 3 {
		c := NewChannel(t, a.ID)
		c.CreatedAt = epoch().Add(time.Duration(i+1) * time.Minute)
		MustPutChannel(t, s, c)
		want = append(want, c)
		MustPutChannel(t, s, NewChannel(t, b.ID))
	}

	// The device names the funding output: now found by it as well.
	pending.Funding = op
	pending.Status = hub.ChannelReady
	pending.UpdatedAt = epoch().Add(time.Hour)
	MustPutChannel(t, s, pending)
	want[0] = pending
	assertChannel(t, MustChannel(t, s, op), pending)

	got, err := s.ChannelsByDevice(ctx, a.ID)
	if err != nil {
		t.Fatalf("ChannelsByDevice: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ChannelsByDevice = %d channels, want %d", len(got), len(want))
	}
	for i := range want {
		assertChannel(t, got[i], want[i])
	}

	// Status filter.
	frozen := want[2]
	frozen.Status = hub.ChannelFrozen
	MustPutChannel(t, s, frozen)
	fs, err := s.Channels(ctx, hub.ChannelFrozen, hub.ChannelClosed)
	if err != nil {
		t.Fatalf("Channels(frozen, closed): %v", err)
	}
	if len(fs) != 1 {
		t.Fatalf("Channels(frozen, closed) = %d channels, want 1", len(fs))
	}
	assertChannel(t, fs[0], frozen)
	ready, err := s.Channels(ctx, hub.ChannelReady)
	if err != nil {
		t.Fatalf("Channels(ready): %v", err)
	}
	if len(ready) != 6 {
		t.Fatalf("Channels(ready) = %d channels, want 6", len(ready))
	}
	if all, err := s.Channels(ctx); err != nil || len(all) != 7 {
		t.Fatalf("Channels() = %d channels, %v; want 7", len(all), err)
	}

	// One funding output cannot back two channels.
	thief := NewChannel(t, b.ID)
	thief.Funding = op
	if err := s.PutChannel(ctx, thief); !errors.Is(err, hub.ErrAlreadyExists) {
		t.Fatalf("PutChannel with a taken funding outpoint: error = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.ChannelByPending(ctx, thief.PendingID); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("refused channel is stored: ChannelByPending error = %v", err)
	}
	assertChannel(t, MustChannel(t, s, op), pending)
}

func testApplyPaymentOK(t *testing.T, s hub.ChannelStore) {
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	u1 := Payment(c.Funding, 1, 1_500)
	MustApplyPayment(t, s, u1)
	assertChannel(t, MustChannel(t, s, c.Funding), withState(c, u1))

	u2 := Payment(c.Funding, 2, 2_750)
	MustApplyPayment(t, s, u2)
	assertChannel(t, MustChannel(t, s, c.Funding), withState(c, u2))
	got, err := s.ChannelByPending(context.Background(), c.PendingID)
	if err != nil {
		t.Fatal(err)
	}
	assertChannel(t, got, withState(c, u2))

	rs := mustReceipts(t, s, c.Funding, 1, 10)
	if len(rs) != 2 || string(rs[0]) != string(u1.Receipt) || string(rs[1]) != string(u2.Receipt) {
		t.Fatalf("Receipts = %d receipts, want the two applied, in order", len(rs))
	}
}

func testErrSeqConflict(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	u1 := Payment(c.Funding, 1, 1_000)
	MustApplyPayment(t, s, u1)
	MustApplyPayment(t, s, Payment(c.Funding, 2, 2_000))
	at2 := MustChannel(t, s, c.Funding)

	cases := map[string]hub.PaymentUpdate{
		"Replay":  Payment(c.Funding, 2, 2_000),
		"Stale":   Payment(c.Funding, 1, 5_000),
		"Gap":     Payment(c.Funding, 4, 4_000),
		"FarAway": Payment(c.Funding, 1<<40, 4_000),
	}
	for name, u := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.ApplyPayment(ctx, u); !errors.Is(err, hub.ErrSeqConflict) {
				t.Fatalf("ApplyPayment(seq %d) on seq 2: error = %v, want ErrSeqConflict", u.Seq, err)
			}
			assertUnchanged(t, s, at2)
		})
	}
	t.Run("SeqZero", func(t *testing.T) {
		if _, err := s.ApplyPayment(ctx, Payment(c.Funding, 0, 0)); err == nil {
			t.Fatal("ApplyPayment(seq 0) succeeded")
		}
		assertUnchanged(t, s, at2)
	})

	t.Run("ConcurrentDuplicate", func(t *testing.T) {
		// Each contender offers seq 3 with a different amount; exactly one
		// may win, and the stored state and receipt must be the winner's.
		const n = 32
		var wg sync.WaitGroup
		errs := make([]error, n)
		ups := make([]hub.PaymentUpdate, n)
		for i := range n {
			ups[i] = Payment(c.Funding, 3, msat.Amount(3_000+i))
			ups[i].Receipt[len(ups[i].Receipt)-1] = byte(i)
		}
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = s.ApplyPayment(ctx, ups[i])
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("contenders %d and %d both applied seq 3", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, hub.ErrSeqConflict):
				t.Fatalf("contender %d: error = %v, want nil or ErrSeqConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no contender applied seq 3")
		}
		assertChannel(t, MustChannel(t, s, c.Funding), withState(c, ups[winner]))
		rs := mustReceipts(t, s, c.Funding, 3, 10)
		if len(rs) != 1 || string(rs[0]) != string(ups[winner].Receipt) {
			t.Fatalf("Receipts from seq 3 = %d receipts, want the winner's only", len(rs))
		}
	})
}

func testErrHoldConflict(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	other := NewChannel(t, "dev-b")
	MustPutChannel(t, s, other)

	h := NewHold(t, c.Funding, c.DeviceID, 10_000)
	mustPutHold(t, s, h)
	released := NewHold(t, c.Funding, c.DeviceID, 10_000)
	released.Status = hub.HoldReleased
	mustPutHold(t, s, released)
	expired := NewHold(t, c.Funding, c.DeviceID, 10_000)
	expired.Status = hub.HoldExpired
	mustPutHold(t, s, expired)
	foreign := NewHold(t, other.Funding, other.DeviceID, 10_000)
	mustPutHold(t, s, foreign)

	// Bring h to 9,000 captured, so 1,000 is left.
	u := Payment(c.Funding, 1, 9_000)
	u.HoldID, u.Amount = &h.ID, 9_000
	MustApplyPayment(t, s, u)
	c = withState(c, u)
	h.Captured = 9_000

	cases := []struct {
		name   string
		hold   hub.Hold
		amount msat.Amount
	}{
		{"MoreThanLeft", h, 1_001},
		{"Released", released, 1},
		{"Expired", expired, 1},
		{"OtherChannel", foreign, 1},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			u := Payment(c.Funding, 2, c.Paid+cs.amount)
			u.HoldID, u.Amount = &cs.hold.ID, cs.amount
			if _, err := s.ApplyPayment(ctx, u); !errors.Is(err, hub.ErrHoldConflict) {
				t.Fatalf("ApplyPayment: error = %v, want ErrHoldConflict", err)
			}
			if err := s.ApplyOwed(ctx, c.Funding, &cs.hold.ID, cs.amount, 1<<40); !errors.Is(err, hub.ErrHoldConflict) {
				t.Fatalf("ApplyOwed: error = %v, want ErrHoldConflict", err)
			}
			assertUnchanged(t, s, c, cs.hold)
		})
	}

	// Exactly what is left still goes through.
	u = Payment(c.Funding, 2, c.Paid+1_000)
	u.HoldID, u.Amount = &h.ID, 1_000
	MustApplyPayment(t, s, u)
	if got := mustHold(t, s, h.ID); got.Captured != got.Max || got.Remaining() != 0 {
		t.Fatalf("hold after capturing the rest: captured %d of %d", got.Captured, got.Max)
	}
}

func testHoldCapturedAccumulates(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	h := NewHold(t, c.Funding, c.DeviceID, 100_000)
	h2 := NewHold(t, c.Funding, c.DeviceID, 50_000)
	mustPutHold(t, s, h)
	mustPutHold(t, s, h2)

	var paid, captured msat.Amount
	for seq := uint64(1); seq <= 10; seq++ {
		amt := msat.Amount(seq * 1_000)
		paid += amt
		u := Payment(c.Funding, seq, paid)
		if seq%2 == 1 {
			u.HoldID, u.Amount = &h.ID, amt
			captured += amt
		}
		MustApplyPayment(t, s, u)
	}
	if err := s.ApplyOwed(ctx, c.Funding, &h.ID, 500, 1_000); err != nil {
		t.Fatalf("ApplyOwed against the hold: %v", err)
	}
	captured += 500
	if got := mustHold(t, s, h.ID).Captured; got != captured {
		t.Fatalf("Captured = %d, want %d", got, captured)
	}
	if got := mustHold(t, s, h2.ID).Captured; got != 0 {
		t.Fatalf("untouched hold Captured = %d, want 0", got)
	}

	// Releasing the hold with PutHold (from a copy read before the
	// captures) must not lower what it captured.
	h.Status = hub.HoldReleased
	mustPutHold(t, s, h)
	h.Captured = captured
	assertHold(t, mustHold(t, s, h.ID), h)

	hs, err := s.Holds(ctx, c.Funding)
	if err != nil {
		t.Fatalf("Holds: %v", err)
	}
	if len(hs) != 2 {
		t.Fatalf("Holds = %d holds, want 2", len(hs))
	}
	byID := map[[16]byte]hub.Hold{hs[0].ID: hs[0], hs[1].ID: hs[1]}
	assertHold(t, byID[h.ID], h)
	assertHold(t, byID[h2.ID], h2)
	if other, err := s.Holds(ctx, NewOutPoint(t)); err != nil || len(other) != 0 {
		t.Fatalf("Holds of another channel = %d holds, %v; want none", len(other), err)
	}
}

// testActiveHolds: ActiveHolds lists the active holds of every channel,
// with what they captured, and no released or expired one.
func testActiveHolds(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	if hs, err := s.ActiveHolds(ctx); err != nil || len(hs) != 0 {
		t.Fatalf("ActiveHolds of an empty store = %d holds, %v", len(hs), err)
	}
	a, b := NewChannel(t, "dev-a"), NewChannel(t, "dev-b")
	MustPutChannel(t, s, a)
	MustPutChannel(t, s, b)
	a1, a2 := NewHold(t, a.Funding, a.DeviceID, 10_000), NewHold(t, a.Funding, a.DeviceID, 20_000)
	b1, b2 := NewHold(t, b.Funding, b.DeviceID, 30_000), NewHold(t, b.Funding, b.DeviceID, 40_000)
	for _, h := range []hub.Hold{a1, a2, b1, b2} {
		mustPutHold(t, s, h)
	}
	MustApplyPayment(t, s, hub.PaymentUpdate{Channel: a.Funding, Seq: 1, Paid: 1_500, HoldID: &a1.ID, Amount: 1_500,
		Receipt: Receipt(a.Funding, 1), Time: epoch()})
	a1.Captured = 1_500
	a2.Status = hub.HoldReleased
	mustPutHold(t, s, a2)
	b2.Status = hub.HoldExpired
	mustPutHold(t, s, b2)

	hs, err := s.ActiveHolds(ctx)
	if err != nil {
		t.Fatalf("ActiveHolds: %v", err)
	}
	if len(hs) != 2 {
		t.Fatalf("ActiveHolds = %d holds, want 2 (a1, b1)", len(hs))
	}
	byID := map[[16]byte]hub.Hold{hs[0].ID: hs[0], hs[1].ID: hs[1]}
	assertHold(t, byID[a1.ID], a1)
	assertHold(t, byID[b1.ID], b1)
}

func testApplyOwedWithinLimit(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	MustApplyPayment(t, s, Payment(c.Funding, 1, 1_000))
	for range 3 {
		if err := s.ApplyOwed(ctx, c.Funding, nil, 300, 999); err != nil {
			t.Fatalf("ApplyOwed: %v", err)
		}
	}
	got := MustChannel(t, s, c.Funding)
	if got.Owed != 900 || got.Seq != 1 || got.Paid != 1_000 {
		t.Fatalf("after 3 × 300 owed: seq %d paid %d owed %d, want 1, 1000, 900", got.Seq, got.Paid, got.Owed)
	}
	// Reaching the limit exactly is allowed.
	if err := s.ApplyOwed(ctx, c.Funding, nil, 99, 999); err != nil {
		t.Fatalf("ApplyOwed up to the limit: %v", err)
	}
	// A signed state that covers the debt clears it.
	u := Payment(c.Funding, 2, 1_999)
	u.Amount = 999
	MustApplyPayment(t, s, u)
	assertChannel(t, MustChannel(t, s, c.Funding), withState(c, u))
}

func testErrCreditLimit(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	h := NewHold(t, c.Funding, c.DeviceID, 10_000)
	mustPutHold(t, s, h)
	if err := s.ApplyOwed(ctx, c.Funding, &h.ID, 600, 1_000); err != nil {
		t.Fatalf("ApplyOwed: %v", err)
	}
	c.Owed, h.Captured = 600, 600

	for name, amt := range map[string]msat.Amount{"OneOver": 401, "Huge": 1 << 50} {
		t.Run(name, func(t *testing.T) {
			if err := s.ApplyOwed(ctx, c.Funding, &h.ID, amt, 1_000); !errors.Is(err, hub.ErrCreditLimit) {
				t.Fatalf("ApplyOwed(%d) with 400 left: error = %v, want ErrCreditLimit", amt, err)
			}
			assertUnchanged(t, s, c, h)
		})
	}
	// A lower limit than what is already owed refuses any amount.
	if err := s.ApplyOwed(ctx, c.Funding, nil, 1, 500); !errors.Is(err, hub.ErrCreditLimit) {
		t.Fatalf("ApplyOwed over a lowered limit: error = %v, want ErrCreditLimit", err)
	}
	assertUnchanged(t, s, c, h)
}

func testPutChannelKeepsState(t *testing.T, s hub.ChannelStore) {
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	MustApplyPayment(t, s, Payment(c.Funding, 1, 1_000))
	u := Payment(c.Funding, 2, 2_000)
	MustApplyPayment(t, s, u)

	// A status change written from a copy read before the payments: it
	// must not roll the payment state back.
	stale := c
	stale.Status = hub.ChannelFrozen
	MustPutChannel(t, s, stale)
	want := withState(stale, u)
	assertChannel(t, MustChannel(t, s, c.Funding), want)

	// Nor may a copy carrying made-up state move it forward.
	forged := stale
	forged.Seq, forged.Paid, forged.DeviceSig, forged.Owed = 99, 1, [64]byte{9}, 0
	MustPutChannel(t, s, forged)
	assertChannel(t, MustChannel(t, s, c.Funding), want)

	// Payments continue from the kept state.
	MustApplyPayment(t, s, Payment(c.Funding, 3, 3_000))
	if got := MustChannel(t, s, c.Funding); got.Seq != 3 || got.Status != hub.ChannelFrozen {
		t.Fatalf("after seq 3: seq %d status %s, want 3 frozen", got.Seq, got.Status)
	}
}

func testReceiptsPaging(t *testing.T, s hub.ChannelStore) {
	const n = 25
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	// A neighbour with an adjacent key space: its receipts must not leak in.
	next := NewChannel(t, "dev-a")
	next.Funding = c.Funding
	next.Funding.Index++
	MustPutChannel(t, s, next)
	for seq := uint64(1); seq <= n; seq++ {
		MustApplyPayment(t, s, Payment(c.Funding, seq, msat.Amount(seq*10)))
		MustApplyPayment(t, s, Payment(next.Funding, seq, msat.Amount(seq*10)))
	}

	cases := []struct {
		name      string
		from      uint64
		limit     int
		wantFirst uint64
		wantLen   int
	}{
		{"All", 1, 100, 1, n},
		{"FromZeroMeansFirst", 0, 3, 1, 3},
		{"Middle", 10, 5, 10, 5},
		{"TailShort", 23, 10, 23, 3},
		{"LastOnly", n, 10, n, 1},
		{"PastHead", n + 1, 10, 0, 0},
		{"FarPastHead", 1 << 60, 10, 0, 0},
		{"ZeroLimit", 1, 0, 0, 0},
		{"NegativeLimit", 1, -1, 0, 0},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			rs := mustReceipts(t, s, c.Funding, cs.from, cs.limit)
			if len(rs) != cs.wantLen {
				t.Fatalf("Receipts(%d, %d) = %d receipts, want %d", cs.from, cs.limit, len(rs), cs.wantLen)
			}
			for i, r := range rs {
				if want := Receipt(c.Funding, cs.wantFirst+uint64(i)); string(r) != string(want) {
					t.Fatalf("receipt %d is not the one stored for seq %d", i, cs.wantFirst+uint64(i))
				}
			}
		})
	}
}

func testReopenKeepsPayments(t *testing.T, newStore func(t *testing.T) ChannelStoreUnderTest) {
	ctx := context.Background()
	s := newStore(t)
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	h := NewHold(t, c.Funding, c.DeviceID, 10_000)
	mustPutHold(t, s, h)
	var last hub.PaymentUpdate
	for seq := uint64(1); seq <= 5; seq++ {
		last = Payment(c.Funding, seq, msat.Amount(seq*1_000))
		last.HoldID, last.Amount = &h.ID, 1_000
		MustApplyPayment(t, s, last)
	}
	if err := s.ApplyOwed(ctx, c.Funding, nil, 70, 100); err != nil {
		t.Fatal(err)
	}
	want := withState(c, last)
	want.Owed = 70
	h.Captured = 5_000
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true

	s2 := newStore(t)
	t.Cleanup(func() { s2.Close() })
	assertChannel(t, MustChannel(t, s2, c.Funding), want)
	assertHold(t, mustHold(t, s2, h.ID), h)
	if rs := mustReceipts(t, s2, c.Funding, 1, 10); len(rs) != 5 {
		t.Fatalf("Receipts after reopen = %d, want 5", len(rs))
	}
	byDev, err := s2.ChannelsByDevice(ctx, c.DeviceID)
	if err != nil || len(byDev) != 1 {
		t.Fatalf("ChannelsByDevice after reopen = %d channels, %v; want 1", len(byDev), err)
	}
	// The reopened store keeps enforcing the sequence.
	if _, err := s2.ApplyPayment(ctx, Payment(c.Funding, 5, 9_999)); !errors.Is(err, hub.ErrSeqConflict) {
		t.Fatalf("replay after reopen: error = %v, want ErrSeqConflict", err)
	}
	MustApplyPayment(t, s2, Payment(c.Funding, 6, 6_000))
}

func testConservation(t *testing.T, s hub.ChannelStore) {
	// Payers race on shared channels as a hub's sessions and retries do:
	// each reads the state, builds on it and retries on ErrSeqConflict. The
	// money the store ends with must be exactly the money it acknowledged.
	const channels, workers, perWorker = 8, 16, 40
	ctx := context.Background()
	chans := make([]hub.ChannelRecord, channels)
	for i := range chans {
		chans[i] = NewChannel(t, fmt.Sprintf("dev-%d", i%3))
		MustPutChannel(t, s, chans[i])
	}
	var acked [channels]atomic.Uint64
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(w), 7))
			for range perWorker {
				i := r.IntN(channels)
				amt := msat.Amount(1 + r.IntN(10_000))
				for attempt := 0; ; attempt++ {
					if attempt > 1000 {
						t.Errorf("worker %d: no progress on channel %d", w, i)
						return
					}
					cur, err := s.Channel(ctx, chans[i].Funding)
					if err != nil {
						t.Error(err)
						return
					}
					_, err = s.ApplyPayment(ctx, Payment(cur.Funding, cur.Seq+1, cur.Paid+amt))
					if errors.Is(err, hub.ErrSeqConflict) {
						conflicts.Add(1)
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					acked[i].Add(uint64(amt))
					break
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var seqs uint64
	for i, c := range chans {
		got := MustChannel(t, s, c.Funding)
		if uint64(got.Paid) != acked[i].Load() {
			t.Fatalf("channel %d: Paid = %d msat, acknowledged %d msat", i, got.Paid, acked[i].Load())
		}
		rs := mustReceipts(t, s, c.Funding, 1, 10*perWorker*workers)
		if uint64(len(rs)) != got.Seq {
			t.Fatalf("channel %d: %d receipts for seq %d", i, len(rs), got.Seq)
		}
		seqs += got.Seq
	}
	if seqs != workers*perWorker {
		t.Fatalf("%d states stored, %d payments acknowledged", seqs, workers*perWorker)
	}
	t.Logf("%d payments on %d channels; %d seq conflicts retried", seqs, channels, conflicts.Load())
}

// testChannelErrInvalid pins that every store refuses, writing nothing,
// what the domain validators refuse (hub.ChannelRecord.Validate,
// hub.Hold.Validate, hub.PaymentUpdate.Validate); the stores once
// differed on a zero byte in a device id.
func testChannelErrInvalid(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	d := NewDevice(t)
	good := NewChannel(t, d.ID)
	noPending := NewChannel(t, d.ID)
	noPending.PendingID = [32]byte{}
	for name, c := range map[string]hub.ChannelRecord{
		"no pending id":       noPending,
		"no device id":        NewChannel(t, ""),
		"zero byte in device": NewChannel(t, d.ID+"\x00x"),
	} {
		if err := s.PutChannel(ctx, c); !errors.Is(err, hub.ErrInvalid) {
			t.Fatalf("PutChannel(%s) = %v, want ErrInvalid", name, err)
		}
		if _, err := s.ChannelByPending(ctx, c.PendingID); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("ChannelByPending after a refused PutChannel(%s): %v, want ErrNotFound", name, err)
		}
	}
	MustPutChannel(t, s, good)
	if _, err := s.ApplyPayment(ctx, Payment(good.Funding, 0, 1)); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("ApplyPayment with seq 0 = %v, want ErrInvalid", err)
	}
	h := NewHold(t, good.Funding, d.ID, 1_000)
	h.ID = [16]byte{}
	if err := s.PutHold(ctx, h); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("PutHold without id = %v, want ErrInvalid", err)
	}
	if hs, err := s.Holds(ctx, good.Funding); err != nil || len(hs) != 0 {
		t.Fatalf("Holds after a refused PutHold = %v, %v, want none", hs, err)
	}
	assertUnchanged(t, s, good)
}

// testPaymentLowersStoredOwed pins the rule that a payment lowers the
// stored Owed by its amount inside the store's atomic write: credit
// charged by another hubd after this one read the channel (ApplyOwed does
// not move Seq, so the seq check cannot catch it) must survive the payment.
func testPaymentLowersStoredOwed(t *testing.T, s hub.ChannelStore) {
	ctx := context.Background()
	c := NewChannel(t, "dev-a")
	MustPutChannel(t, s, c)
	if err := s.ApplyOwed(ctx, c.Funding, nil, 1_000, 1_000_000); err != nil {
		t.Fatalf("ApplyOwed: %v", err)
	}
	cached := MustChannel(t, s, c.Funding) // this instance's cache: owed 1000
	// Another instance charges on credit after the cache was read.
	if err := s.ApplyOwed(ctx, c.Funding, nil, 500, 1_000_000); err != nil {
		t.Fatalf("ApplyOwed from another instance: %v", err)
	}
	u := Payment(c.Funding, 1, 700)
	u.Amount = 700 // computed from the stale cache: it saw owed 1000
	owed, err := s.ApplyPayment(ctx, u)
	if err != nil {
		t.Fatalf("ApplyPayment: %v", err)
	}
	want := cached.Owed + 500 - u.Amount
	if got := MustChannel(t, s, c.Funding).Owed; got != want || owed != want {
		t.Fatalf("after a payment of 700 on 1000+500 owed: stored owed %d msat, returned %d, want %d", got, owed, want)
	}
	// A payment above what is owed clears it to 0, not below.
	u = Payment(c.Funding, 2, 700+1_000)
	u.Amount = 1_000
	if owed, err = s.ApplyPayment(ctx, u); err != nil || owed != 0 {
		t.Fatalf("ApplyPayment of 1000 on 800 owed = %d msat, %v; want 0", owed, err)
	}
	if got := MustChannel(t, s, c.Funding).Owed; got != 0 {
		t.Fatalf("stored owed after overpaying = %d msat, want 0", got)
	}
}
