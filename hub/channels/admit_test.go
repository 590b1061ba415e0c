package channels_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// paidListener records the charge requests reported paid.
type paidListener struct {
	mu   sync.Mutex
	paid []uint64
}

func (l *paidListener) ChargePaid(reqID uint64, _ []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.paid = append(l.paid, reqID)
}

func (l *paidListener) ChargeRefused(uint64, string, string) {}
func (l *paidListener) ChargeFailed(uint64, string)          {}

// TestChargePaymentSkipsPaySlots: with every slot for the devices' own
// payments taken, a payment answering the hub's charge request is still
// worked on at once, while the device's own next payment waits for a slot
// and goes through when one frees.
func TestChargePaymentSkipsPaySlots(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.PaySlots = 2 })
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	l := &paidListener{}
	id, err := h.Ch.RequestPayment(context.Background(), channels.PaymentRequest{
		Listener: l, Payer: payer.ID, Payee: prov.ID, Channel: c.Op, Amount: 7_000, EventCount: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	req := chantest.Expect[*wire.PaymentRequest](payer)
	free := channels.FillPaySlots(h.Ch)
	freed := false
	defer func() {
		if !freed {
			free()
		}
	}()

	m := payer.PayMsg(c, c.Seq+1, c.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &id
	payer.Send(m)
	if ack := chantest.Expect[*wire.PayAck](payer); ack.Seq != 1 {
		t.Fatalf("charge payment acknowledged at seq %d", ack.Seq)
	}
	c.Seq, c.Paid = 1, req.Amount
	l.mu.Lock()
	if len(l.paid) != 1 || l.paid[0] != id {
		t.Fatalf("listener heard %v, want request %d paid", l.paid, id)
	}
	l.mu.Unlock()

	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	select {
	case msg := <-payer.In:
		t.Fatalf("own payment answered (%T) while every slot was taken", msg)
	case <-time.After(200 * time.Millisecond):
	}
	free()
	freed = true
	if ack := chantest.Expect[*wire.PayAck](payer); ack.Seq != 2 {
		t.Fatalf("own payment acknowledged at seq %d", ack.Seq)
	}
}

// TestChargeRequestPassesOwnPayment: with every slot taken and the payer's
// own payment waiting for one, a charge request to that payer lets the
// waiting payment through (the device pays one payment at a time, so the
// charge's payment is behind it), and the charge is paid; the pass is used
// up, so the payer's next own payment waits for a slot again.
func TestChargeRequestPassesOwnPayment(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.PaySlots = 1 })
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	free := channels.FillPaySlots(h.Ch)
	freed := false
	defer func() {
		if !freed {
			free()
		}
	}()

	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	channels.WaitPayWaiting(t, h.Ch, payer.ID)
	l := &paidListener{}
	id, err := h.Ch.RequestPayment(context.Background(), channels.PaymentRequest{
		Listener: l, Payer: payer.ID, Payee: prov.ID, Channel: c.Op, Amount: 7_000, EventCount: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The request and the own payment's ack, in either order.
	var req *wire.PaymentRequest
	for range 2 {
		switch m := payer.Next(5 * time.Second).(type) {
		case *wire.PaymentRequest:
			req = m
		case *wire.PayAck:
			if m.Seq != 1 {
				t.Fatalf("own payment acknowledged at seq %d", m.Seq)
			}
		default:
			t.Fatalf("got %T, want the charge request and the own payment's ack", m)
		}
	}
	if req == nil || req.ReqID != id {
		t.Fatalf("charge request %+v, want id %d", req, id)
	}
	c.Seq, c.Paid = 1, 1_000

	m := payer.PayMsg(c, c.Seq+1, c.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &id
	payer.Send(m)
	if ack := chantest.Expect[*wire.PayAck](payer); ack.Seq != 2 {
		t.Fatalf("charge payment acknowledged at seq %d", ack.Seq)
	}
	c.Seq, c.Paid = 2, c.Paid+req.Amount
	l.mu.Lock()
	if len(l.paid) != 1 || l.paid[0] != id {
		t.Fatalf("listener heard %v, want request %d paid", l.paid, id)
	}
	l.mu.Unlock()

	// No request outstanding: the next own payment waits for a slot.
	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	channels.WaitPayWaiting(t, h.Ch, payer.ID)
	free()
	freed = true
	if ack := chantest.Expect[*wire.PayAck](payer); ack.Seq != 3 {
		t.Fatalf("own payment acknowledged at seq %d", ack.Seq)
	}
}

// TestPayerChannelWithoutLock: a payer's only ready channel is found while
// a payment holds the channel's lock (charging's intake asks for it for
// every batch); with two ready channels the one with more free capacity
// is chosen, which needs their locks.
func TestPayerChannelWithoutLock(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	small := payer.Open(f, 50_000, chantest.TestHeight+500)
	ctx := context.Background()

	unlock := channels.LockChannel(t, h.Ch, small.Op)
	done := make(chan error, 1)
	go func() {
		got, err := h.Ch.PayerChannel(ctx, payer.ID)
		if err == nil && got != small.Op {
			err = fmt.Errorf("got %v, want %v", got, small.Op)
		}
		done <- err
	}()
	select {
	case err := <-done:
		unlock()
		if err != nil {
			t.Fatalf("PayerChannel with its only channel locked: %v", err)
		}
	case <-time.After(5 * time.Second):
		unlock()
		<-done
		t.Fatal("PayerChannel waited for the lock of the payer's only channel")
	}

	big := payer.Open(f, 100_000, chantest.TestHeight+500)
	if got, err := h.Ch.PayerChannel(ctx, payer.ID); err != nil || got != big.Op {
		t.Fatalf("PayerChannel of two: %v, %v; want the freer %v", got, err, big.Op)
	}
}

// TestChargePaymentNotRateLimited: a device that used up its payment rate
// still pays what the hub asked it for, and the request's listener hears
// it; its own next payment is refused as before. The device does not
// retry a refused answer to a payment request, so a charge payment caught
// by the device's rate limit left its request unanswered until charging
// gave up on it, and its events without a receipt.
func TestChargePaymentNotRateLimited(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	// The bucket's clock stands still: no token comes back meanwhile.
	clk := clock.NewTestClock(time.Now())
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.PayRate, c.PayBurst, c.Clock = 1, 3, clk })
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	for range 3 {
		payer.Pay(c, 1_000, prov.ID)
	}
	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	chantest.Refusal(payer, wire.ChanRateLimited)

	l := &paidListener{}
	id, err := h.Ch.RequestPayment(context.Background(), channels.PaymentRequest{
		Listener: l, Payer: payer.ID, Payee: prov.ID, Channel: c.Op, Amount: 7_000, EventCount: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	req := chantest.Expect[*wire.PaymentRequest](payer)
	m := payer.PayMsg(c, c.Seq+1, c.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &req.ReqID
	payer.Send(m)
	if ack := chantest.Expect[*wire.PayAck](payer); ack.Seq != c.Seq+1 {
		t.Fatalf("charge payment acknowledged at seq %d, want %d", ack.Seq, c.Seq+1)
	}
	c.Seq, c.Paid = c.Seq+1, c.Paid+req.Amount
	l.mu.Lock()
	if len(l.paid) != 1 || l.paid[0] != id {
		t.Fatalf("listener heard %v, want request %d paid", l.paid, id)
	}
	l.mu.Unlock()

	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	chantest.Refusal(payer, wire.ChanRateLimited)
}
