package channels_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// pausedChargeStore holds every RecordCharges call inside the store until
// release is closed, telling entered when one arrives.
type pausedChargeStore struct {
	hub.ChargeStore
	entered chan struct{}
	release chan struct{}
}

func (s *pausedChargeStore) RecordCharges(ctx context.Context, cs []hub.Charge, limit msat.Amount) ([]hub.ChargeResult, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.ChargeStore.RecordCharges(ctx, cs, limit)
}

// TestRecordChargesShareChannel: while one batch of charges on a channel
// is in its store write, another batch naming the same channel is let in
// (the intake's workers do not go one at a time), a close or hold is not
// (it would write an Owed computed before the charges), and once both
// batches are durable the cached Owed is the store's, to the msat.
func TestRecordChargesShareChannel(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	st := &pausedChargeStore{ChargeStore: h.Store, entered: make(chan struct{}), release: make(chan struct{})}
	charge := func(id string, amount msat.Amount) hub.Charge {
		now := time.Now()
		return hub.Charge{Provider: prov.ID, EventID: id, Payer: payer.ID, Amount: amount,
			Channel: c.Op, Status: hub.ChargeOwed, EventTime: now, Charged: now}
	}
	batches := [][]hub.Charge{{charge("a1", 1_001), charge("a2", 2_002)}, {charge("b1", 3_003)}}

	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.Ch.RecordCharges(context.Background(), st, b)
			if err == nil && len(res) != len(b) {
				err = fmt.Errorf("%d results for %d charges", len(res), len(b))
			}
			errs[i] = err
		}()
		<-st.entered
		// Checked while batch i is in its store write.
		shared, exclusive := channels.TryShareChannel(t, h.Ch, c.Op)
		if !shared {
			close(st.release)
			wg.Wait()
			t.Fatalf("batch %d in its store write keeps other charges on the channel out", i)
		}
		if exclusive {
			t.Errorf("batch %d in its store write lets the whole channel be taken", i)
		}
	}
	close(st.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}

	const want = msat.Amount(1_001 + 2_002 + 3_003)
	cached, ready, err := h.Ch.ChannelOwed(context.Background(), c.Op)
	if err != nil || !ready {
		t.Fatalf("ChannelOwed: %v, ready %v", err, ready)
	}
	stored, err := h.Store.Channel(context.Background(), c.Op)
	if err != nil {
		t.Fatal(err)
	}
	if cached != want || stored.Owed != want {
		t.Errorf("owed: cached %d, stored %d msat, want %d", cached, stored.Owed, want)
	}
}

// pausedPayStore holds ApplyPayment calls inside the store, once armed,
// until release is closed, telling entered when one arrives: a payment in
// its durable write.
type pausedPayStore struct {
	hub.ChannelStore
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *pausedPayStore) ApplyPayment(ctx context.Context, u hub.PaymentUpdate) (msat.Amount, error) {
	if s.armed.Load() {
		s.entered <- struct{}{}
		<-s.release
	}
	return s.ChannelStore.ApplyPayment(ctx, u)
}

// TestRecordChargesBesidePayment: a batch of charges naming a payer is
// recorded while the payer's payment is in its durable write (the intake
// does not wait for the payer's commit), and once both are durable the
// cached Owed is the store's, to the msat, and a later payment lowers it
// from there.
func TestRecordChargesBesidePayment(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	ps := &pausedPayStore{entered: make(chan struct{}), release: make(chan struct{})}
	h := chantest.NewHarness(t, f, func(cfg *channels.Config) {
		ps.ChannelStore = cfg.Store
		cfg.Store = ps
	})
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	ctx := context.Background()
	charge := func(id string, amount msat.Amount) hub.Charge {
		now := time.Now()
		return hub.Charge{Provider: prov.ID, EventID: id, Payer: payer.ID, Amount: amount,
			Channel: c.Op, Status: hub.ChargeOwed, EventTime: now, Charged: now}
	}
	if _, err := h.Ch.RecordCharges(ctx, h.Store, []hub.Charge{charge("e1", 2_000)}); err != nil {
		t.Fatal(err)
	}

	ps.armed.Store(true)
	payer.Send(payer.PayMsg(c, 1, 1_000, 1_000, prov.ID))
	<-ps.entered
	done := make(chan error, 1)
	go func() {
		res, err := h.Ch.RecordCharges(ctx, h.Store, []hub.Charge{charge("e2", 3_003)})
		if err == nil && (len(res) != 1 || res[0].Stored.Status != hub.ChargeOwed) {
			err = fmt.Errorf("charge not recorded as owed: %+v", res)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a guard against a deadlock, not a speed bound
		close(ps.release)
		<-done
		t.Fatal("charges on the payer wait for its payment's durable write")
	}
	ps.armed.Store(false)
	close(ps.release)
	ack := chantest.Expect[*wire.PayAck](payer)
	if ack.Seq != 1 {
		t.Fatalf("ack for seq %d", ack.Seq)
	}
	c.Seq, c.Paid = 1, 1_000

	check := func(want msat.Amount) {
		t.Helper()
		cached, _, err := h.Ch.ChannelOwed(ctx, c.Op)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := h.Store.Channel(ctx, c.Op)
		if err != nil {
			t.Fatal(err)
		}
		if cached != want || stored.Owed != want {
			t.Errorf("owed: cached %d, stored %d msat, want %d", cached, stored.Owed, want)
		}
	}
	check(2_000 + 3_003 - 1_000)
	payer.Pay(c, 2_500, prov.ID)
	check(2_000 + 3_003 - 1_000 - 2_500)
}
