package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// PaidCutStoreUnderTest is a store that holds charges and epochs, so it
// orders paid marks against cuts (hub.ChargeStore.SetChargeStatus).
type PaidCutStoreUnderTest interface {
	hub.ChargeStore
	hub.SettlementStore
	hub.ChannelStore
	Close() error
}

// RunPaidCut pins the paid time rule of a store holding both charges and
// epochs: a charge marked paid at a time before the open epoch's start
// (its clock read before a cut, its write after it) is stamped with that
// start, so it is listed in the open epoch's window and not in the closed
// one, whose ledger may have read the paid charges already; epoch 1 keeps
// earlier times (it holds everything before it), and so does a store with
// no epoch.
func RunPaidCut(t *testing.T, newStore func(t *testing.T) PaidCutStoreUnderTest) {
	open := closing(newStore)

	t.Run("MarkedBeforeCutWrittenAfter", func(t *testing.T) { testMarkedBeforeCutWrittenAfter(t, open(t)) })
	t.Run("MarksRacingCut", func(t *testing.T) { testMarksRacingCut(t, open(t)) })
}

// recordPaidCut records n owed charges of cpo-1 with a share each.
func recordPaidCut(t *testing.T, s PaidCutStoreUnderTest, n int) []hub.Charge {
	t.Helper()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	cs := make([]hub.Charge, n)
	for i := range cs {
		cs[i] = NewCharge("cpo-1", fmt.Sprintf("evt-%03d", i), "payer-1", c.Funding, 1000, epoch())
		cs[i].Shares = []hub.Share{{Payee: "host-1", Msat: 300}}
	}
	MustRecordCharges(t, s, cs, noLimit)
	return cs
}

func mustChargesPaid(t *testing.T, s hub.ChargeStore, from, to time.Time) []hub.Charge {
	t.Helper()
	got, err := s.ChargesPaid(context.Background(), from, to)
	if err != nil {
		t.Fatalf("ChargesPaid: %v", err)
	}
	return got
}

func testMarkedBeforeCutWrittenAfter(t *testing.T, s PaidCutStoreUnderTest) {
	ctx := context.Background()
	cs := recordPaidCut(t, s, 4)
	mark := func(id string, at time.Time) hub.Charge {
		t.Helper()
		if err := s.SetChargeStatus(ctx, "cpo-1", []string{id}, hub.ChargePaid, at); err != nil {
			t.Fatalf("SetChargeStatus(%s paid at %v): %v", id, at, err)
		}
		return MustCharge(t, s, "cpo-1", id)
	}
	// No epoch stored: the time is kept.
	if got := mark(cs[0].EventID, epoch().Add(-time.Hour)); !got.Paid.Equal(epoch().Add(-time.Hour)) {
		t.Fatalf("paid with no epoch stored at %v, want %v", got.Paid, epoch().Add(-time.Hour))
	}
	// Epoch 1 holds everything before its start: the time is kept.
	MustCut(t, s, settlement.Epoch{}, first())
	if got := mark(cs[1].EventID, epoch().Add(-time.Minute)); !got.Paid.Equal(epoch().Add(-time.Minute)) {
		t.Fatalf("paid in epoch 1 at %v, want %v", got.Paid, epoch().Add(-time.Minute))
	}

	closed, successor := MustCutNext(t, s)
	cut := closed.End
	// Read before the cut, written after it: stamped with the cut.
	late := mark(cs[2].EventID, cut.Add(-time.Second))
	if !late.Paid.Equal(cut) {
		t.Fatalf("marked at %v after a cut at %v: paid %v, want the cut", cut.Add(-time.Second), cut, late.Paid)
	}
	// A time in the open epoch is kept.
	after := mark(cs[3].EventID, cut.Add(time.Second))
	if !after.Paid.Equal(cut.Add(time.Second)) {
		t.Fatalf("paid at %v, want %v", after.Paid, cut.Add(time.Second))
	}
	// Marked again with an early time: the first paid time stays.
	if got := mark(cs[2].EventID, epoch()); !got.Paid.Equal(cut) {
		t.Fatalf("marked again: paid %v, want %v", got.Paid, cut)
	}

	assertCharges(t, mustChargesPaid(t, s, successor.From(), cut.Add(time.Hour)), []hub.Charge{late, after})
	inClosed := mustChargesPaid(t, s, closed.From(), closed.End)
	if len(inClosed) != 2 || inClosed[0].EventID != cs[0].EventID || inClosed[1].EventID != cs[1].EventID {
		t.Fatalf("closed epoch lists %+v, want %s and %s", inClosed, cs[0].EventID, cs[1].EventID)
	}
}

// testMarksRacingCut: charges are marked paid, each at a time before the
// cut, by writers running while the epoch is cut and the closed epoch's
// paid charges are read, as a ledger reads them; the last mark of each
// writer is written after that read. Every charge is then paid in exactly
// one epoch: in what the read listed, or in the successor.
func testMarksRacingCut(t *testing.T, s PaidCutStoreUnderTest) {
	const writers, each = 4, 10
	ctx := context.Background()
	cs := recordPaidCut(t, s, writers*each)
	MustCut(t, s, settlement.Epoch{}, first())
	before := first().Start.Add(time.Hour - time.Millisecond) // MustCutNext cuts at Start + 1h

	read := make(chan struct{})
	started := make(chan struct{}, writers)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				switch i {
				case 1:
					started <- struct{}{}
				case each - 1:
					<-read
				}
				id := cs[w*each+i].EventID
				if err := s.SetChargeStatus(ctx, "cpo-1", []string{id}, hub.ChargePaid, before); err != nil {
					errs <- fmt.Errorf("SetChargeStatus(%s): %w", id, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		<-started
	}
	closed, successor := MustCutNext(t, s)
	ledger := mustChargesPaid(t, s, closed.From(), closed.End)
	close(read)
	wg.Wait()
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	if got := mustChargesPaid(t, s, closed.From(), closed.End); len(got) != len(ledger) {
		t.Fatalf("closed epoch lists %d paid charges after its ledger read %d", len(got), len(ledger))
	}
	next := mustChargesPaid(t, s, successor.From(), closed.End.Add(time.Hour))
	seen := make(map[string]int)
	for _, c := range append(ledger, next...) {
		seen[c.EventID]++
	}
	for _, c := range cs {
		if seen[c.EventID] != 1 {
			t.Fatalf("charge %s is paid in %d epochs (ledger %d, successor %d)", c.EventID, seen[c.EventID], len(ledger), len(next))
		}
	}
	if len(next) < writers {
		t.Fatalf("successor lists %d charges, want at least the %d marked after the ledger read", len(next), writers)
	}
}
