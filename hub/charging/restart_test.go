package charging_test

import (
	"context"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// restart replaces env's charging with a fresh one over the same store and
// channel manager, as a hubd restart does: everything charging kept in
// memory is gone.
func (env *chargeEnv) restart() {
	env.t.Helper()
	if err := env.chg.Close(); err != nil {
		env.t.Fatal(err)
	}
	env.chg = env.newCharging(testInstance)
}

// answer sends the device's payment of req, from env.ch (which the tests
// that use it keep as it was before their payments: a refused one leaves
// the channel there).
func (env *chargeEnv) answer(req *wire.PaymentRequest) {
	m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &req.ReqID
	env.payer.Send(m)
}

// quiet asserts the payer is sent nothing for a while.
func (env *chargeEnv) payerHearsNothing() {
	env.t.Helper()
	select {
	case m := <-env.payer.In:
		env.t.Fatalf("payer was sent %T %+v, want nothing", m, m)
	case <-time.After(200 * time.Millisecond):
	}
}

// bandwidthEvent is the example bandwidth event with its own id and
// quantity.
func (env *chargeEnv) bandwidthEvent(k *contracts.Contract, id, mb string) charging.Usage {
	ev := env.event(k, "bandwidth", id)
	ev.Usage.Quantity = contracts.MustDec(mb)
	return ev
}

// priceAt is what a bandwidth event costs after cum MB in its window.
func priceAt(t *testing.T, k *contracts.Contract, ev charging.Usage, cum string) msat.Amount {
	t.Helper()
	u := ev.Usage
	u.Device, u.Provider, u.EventTime, u.CumulativeMB = ev.Payer, ev.Provider, ev.Time, contracts.MustDec(cum)
	b, err := contracts.Price(k, u)
	if err != nil {
		t.Fatal(err)
	}
	return b.TotalMsat
}

// TestChargingRestartKeepsBandwidthTier restarts charging in the middle
// of a billing window: the volume counted before the restart still
// decides the tier after it, and a redelivered event is not counted
// twice.
func TestChargingRestartKeepsBandwidthTier(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("bandwidth")
	first := env.bandwidthEvent(k, "bw-1", "990")
	if o := env.charge(first); o[0].Amount != priceAt(t, k, first, "0") {
		t.Fatalf("first event %d msat", o[0].Amount)
	}
	if q := env.stored("bw-1").Quantity; q != "990" {
		t.Fatalf("stored quantity %q, want 990", q)
	}

	env.restart()
	// 10 MB at the first tier's price, 10 at the second's.
	second := env.bandwidthEvent(k, "bw-2", "20")
	want, fresh := priceAt(t, k, second, "990"), priceAt(t, k, second, "0")
	if want == fresh {
		t.Fatal("test needs a tier boundary inside the second event")
	}
	if o := env.charge(first); !o[0].Duplicate {
		t.Fatalf("redelivered first event: %+v, want a duplicate", o[0])
	}
	if o := env.charge(second); o[0].Amount != want {
		t.Fatalf("after the restart: %d msat, want %d (990 MB counted), not %d (0 MB)", o[0].Amount, want, fresh)
	}
	third := env.bandwidthEvent(k, "bw-3", "20")
	if o := env.charge(third); o[0].Amount != priceAt(t, k, third, "1010") {
		t.Fatalf("third event %d msat, want the price after 1010 MB", o[0].Amount)
	}

	// Another window starts at zero whatever the store holds.
	env.restart()
	next := env.bandwidthEvent(k, "bw-4", "20")
	next.Time = next.Time.AddDate(0, 1, 0)
	if o := env.charge(next); o[0].Amount != priceAt(t, k, next, "0") {
		t.Fatalf("next window's event %d msat, want the price at 0 MB", o[0].Amount)
	}
}

// TestChargingRestartRequestsOwed: charges owed when charging stops are
// requested by the next run, paid once, and never requested again.
func TestChargingRestartRequestsOwed(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("bandwidth")
	a, b := env.bandwidthEvent(k, "bw-a", "5"), env.bandwidthEvent(k, "bw-b", "5")
	out := env.charge(a, b)
	owed := out[0].Amount + out[1].Amount
	if out[0].Status != hub.ChargeOwed || out[1].Status != hub.ChargeOwed {
		t.Fatalf("outcomes %+v, want owed", out)
	}

	env.restart()
	_, r, evs := env.payRequest(owed)
	if r.EventCount != 2 || len(evs) != 2 {
		t.Fatalf("receipt covers %d events (%v), want the 2 owed before the restart", r.EventCount, evs)
	}
	for _, id := range []string{"bw-a", "bw-b"} {
		if st := env.stored(id).Status; st != hub.ChargePaid {
			t.Fatalf("%s is %s after payment, want paid", id, st)
		}
	}

	env.restart()
	env.chg.Flush(context.Background())
	env.payerHearsNothing()
}

// askTwo charges bw-a and bw-b under k and has them requested: what they
// owe and the payer's one request for it.
func (env *chargeEnv) askTwo(k *contracts.Contract) (msat.Amount, *wire.PaymentRequest) {
	env.t.Helper()
	out := env.charge(env.bandwidthEvent(k, "bw-a", "5"), env.bandwidthEvent(k, "bw-b", "5"))
	owed := out[0].Amount + out[1].Amount
	env.chg.Flush(context.Background())
	req := chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != owed {
		env.t.Fatalf("request of %d msat, want %d", req.Amount, owed)
	}
	return owed, req
}

// TestChargingRestartAfterUnmarkedPayment: the hub stops after a payment
// is durable but before its charges are marked paid. The next run finds
// the payment among the channel's stored receipts by the request's
// record, marks the charges paid and does not ask the payer again.
func TestChargingRestartAfterUnmarkedPayment(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("bandwidth")
	_, req := env.askTwo(k)
	m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	id := req.ReqID
	m.ReqID = &id
	env.payer.Send(m)
	chantest.Expect[*wire.PayAck](env.payer)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	// Stopped before the flusher heard of the payment; restarted a
	// little later.
	restarted := chargeStart.Add(2 * time.Second)
	env.clock.SetTime(restarted)
	env.restart()
	// A charge recorded after the restart, before the first flush, is
	// requested on its own.
	late := env.charge(env.bandwidthEvent(k, "bw-c", "5"))[0]
	env.chg.Flush(context.Background())
	req = chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != late.Amount || req.Memo != "1 events" {
		t.Fatalf("request %+v, want only the late charge's %d msat", req, late.Amount)
	}
	for _, id := range []string{"bw-a", "bw-b"} {
		// Marked paid at the restart: their receipt is not known there,
		// and a later time settles their fees in an epoch not built yet.
		if c := env.stored(id); c.Status != hub.ChargePaid || !c.Paid.Equal(restarted) {
			t.Fatalf("%s is %s paid at %v, want paid (its payment was durable) at the restart %v", id, c.Status, c.Paid, restarted)
		}
	}
	if st := env.stored("bw-c").Status; st != hub.ChargeOwed {
		t.Fatalf("bw-c is %s, want owed", st)
	}
}

// TestChargingRestartPublishesStoredReceipt: the device's payment is
// stored, but charging stops before it settles the answer (no flush
// runs). The next run finds the payment among the channel's stored
// receipts by the request's record, marks the charges paid and publishes
// that receipt, once, for exactly the request's events; a run after that
// publishes nothing and asks nothing.
func TestChargingRestartPublishesStoredReceipt(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	owed, req := env.askTwo(env.publish("bandwidth"))
	m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &req.ReqID
	env.payer.Send(m)
	ack := chantest.Expect[*wire.PayAck](env.payer)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 0 {
		t.Fatalf("published %+v before the restart", got)
	}

	env.restart()
	env.chg.Flush(context.Background())
	got := env.pub.take(charging.ProviderMsgReceipt)
	if len(got) != 1 || got[0].msg.Receipt != hex.EncodeToString(ack.Receipt) ||
		!slices.Equal(slices.Sorted(slices.Values(got[0].msg.Events)), []string{"bw-a", "bw-b"}) {
		t.Fatalf("published %+v after the restart, want the payment's receipt for bw-a and bw-b", got)
	}
	for _, id := range []string{"bw-a", "bw-b"} {
		if st := env.stored(id).Status; st != hub.ChargePaid {
			t.Fatalf("%s is %s, want paid (its payment was durable)", id, st)
		}
	}
	rec, err := env.h.Store.Channel(context.Background(), env.ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != owed || rec.Owed != 0 {
		t.Fatalf("channel paid %d owed %d, want paid %d once, owed 0", rec.Paid, rec.Owed, owed)
	}
	env.payerHearsNothing()

	env.restart()
	env.chg.Flush(context.Background())
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 0 {
		t.Fatalf("published %+v again on the next restart", got)
	}
	env.payerHearsNothing()
}

// TestChargingClosedRequestUnpayable: charging stops with its request out
// and hands the charges on (Close releases their claims); the device's
// payment of that request, coming after, is refused (request-unknown) and
// moves nothing, and the next run asks for the charges again and is paid
// once.
func TestChargingClosedRequestUnpayable(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	owed, req := env.askTwo(env.publish("bandwidth"))
	if err := env.chg.Close(); err != nil {
		t.Fatal(err)
	}
	env.answer(req)
	if e := chantest.Expect[*wire.ChannelError](env.payer); e.Code != wire.ChanRequestUnknown {
		t.Fatalf("paying a request of a closed run: %s %s, want %s", e.Code, e.Message, wire.ChanRequestUnknown)
	}
	if rec, err := env.h.Store.Channel(context.Background(), env.ch.Op); err != nil || rec.Seq != env.ch.Seq || rec.Paid != env.ch.Paid {
		t.Fatalf("a refused payment moved the channel: %+v (%v)", rec, err)
	}

	env.chg = env.newCharging(testInstance)
	env.chg.Flush(context.Background())
	again := chantest.Expect[*wire.PaymentRequest](env.payer)
	if again.Amount != owed || again.ReqID == req.ReqID {
		t.Fatalf("asked again for %d msat as request %d, want %d msat as a new request (not %d)", again.Amount, again.ReqID, owed, req.ReqID)
	}
	env.answer(again)
	chantest.Expect[*wire.PayAck](env.payer)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	env.chg.Flush(context.Background())
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 1 {
		t.Fatalf("published %d receipts, want one", len(got))
	}
	rec, err := env.h.Store.Channel(context.Background(), env.ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != env.ch.Paid+owed || rec.Owed != 0 {
		t.Fatalf("channel paid %d owed %d, want paid %d once, owed 0", rec.Paid, rec.Owed, env.ch.Paid+owed)
	}
}
