package charging_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// newCharging is a hubd's charging over env's store and channel manager,
// claiming charges as instance, with opts applied to its Config; it is
// closed at the test's end.
func (env *chargeEnv) newCharging(instance string, opts ...func(*charging.Config)) *charging.Service {
	env.t.Helper()
	cfg := charging.Config{
		Contracts: env.h.Store, Charges: env.h.Store, Devices: env.h.Reg, Channels: env.h.Ch, Freezer: env.h.Reg,
		Publisher: env.pub, Clock: env.clock, FlushInterval: time.Hour, Logger: chantest.Quiet(), Instance: instance,
	}
	for _, o := range opts {
		o(&cfg)
	}
	chg, err := charging.New(cfg)
	if err != nil {
		env.t.Fatal(err)
	}
	env.t.Cleanup(func() { chg.Close() })
	return chg
}

// TestChargingOwedNotForgivenByOtherPayments: a charge left owed by a
// stopped hub, never asked for, is asked for by the next run although the
// payer's other payments on the channel have paid its Owed down: Owed
// does not say which charges are paid, so it must not forgive one
// unreceipted.
func TestChargingOwedNotForgivenByOtherPayments(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("bandwidth")
	x := env.charge(env.bandwidthEvent(k, "bw-x", "5"))[0]
	if x.Status != hub.ChargeOwed {
		t.Fatalf("bw-x is %s, want owed", x.Status)
	}
	env.restart() // stopped before its first flush: bw-x was never asked for
	env.payer.Pay(env.ch, x.Amount, env.prov.ID)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	if rec, err := env.h.Store.Channel(context.Background(), env.ch.Op); err != nil || rec.Owed != 0 {
		t.Fatalf("channel owes %d (%v) after the payment, want 0", rec.Owed, err)
	}
	env.chg.Flush(context.Background())
	req := chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != x.Amount || req.Memo != "1 events" {
		t.Fatalf("request %+v, want bw-x's %d msat", req, x.Amount)
	}
	if st := env.stored("bw-x").Status; st != hub.ChargeOwed {
		t.Fatalf("bw-x is %s before its payment, want owed", st)
	}
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 0 {
		t.Fatalf("published %+v, want nothing before bw-x is paid", got)
	}
}

// TestChargingClaimedChargesAskedOnce: two hubd share a store. A charge
// one of them has asked for is not asked for by the other, at its start
// or at its scans; once paid its receipt is published once. A charge the
// first recorded and never asked for (it stopped) is asked for by the
// other's next scan, not only at a restart.
func TestChargingClaimedChargesAskedOnce(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("bandwidth")
	a := env.chg
	x := env.charge(env.bandwidthEvent(k, "bw-x", "5"))[0]
	a.Flush(context.Background())
	req := chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != x.Amount {
		t.Fatalf("request of %d msat, want bw-x's %d", req.Amount, x.Amount)
	}

	b := env.newCharging("hubd-other")
	b.Flush(context.Background()) // its start: bw-x is a's
	charging.ScanOwed(context.Background(), b)
	b.Flush(context.Background())
	env.payerHearsNothing()

	m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &req.ReqID
	env.payer.Send(m)
	chantest.Expect[*wire.PayAck](env.payer)
	env.ch.Seq, env.ch.Paid = env.ch.Seq+1, env.ch.Paid+req.Amount
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	a.Flush(context.Background())
	b.Flush(context.Background())
	got := env.pub.take(charging.ProviderMsgReceipt)
	if len(got) != 1 || !slices.Equal(got[0].msg.Events, []string{"bw-x"}) {
		t.Fatalf("published %+v, want bw-x's receipt once", got)
	}

	y := env.charge(env.bandwidthEvent(k, "bw-y", "5"))[0]
	if err := a.Close(); err != nil { // stopped before asking for bw-y
		t.Fatal(err)
	}
	charging.ScanOwed(context.Background(), b)
	b.Flush(context.Background())
	req = chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != y.Amount || req.Memo != "1 events" {
		t.Fatalf("request %+v, want bw-y's %d msat", req, y.Amount)
	}
	m = env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	m.ReqID = &req.ReqID
	env.payer.Send(m)
	chantest.Expect[*wire.PayAck](env.payer)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	b.Flush(context.Background())
	got = env.pub.take(charging.ProviderMsgReceipt)
	if len(got) != 1 || !slices.Equal(got[0].msg.Events, []string{"bw-y"}) {
		t.Fatalf("published %+v, want bw-y's receipt once", got)
	}
	for _, id := range []string{"bw-x", "bw-y"} {
		if st := env.stored(id).Status; st != hub.ChargePaid {
			t.Fatalf("%s is %s, want paid", id, st)
		}
	}
	rec, err := env.h.Store.Channel(context.Background(), env.ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != x.Amount+y.Amount || rec.Owed != 0 {
		t.Fatalf("channel paid %d owed %d, want paid %d, owed 0", rec.Paid, rec.Owed, x.Amount+y.Amount)
	}
	env.payerHearsNothing()
}

// TestChargingLostRequestUnpayable: the failover that paid one batch
// twice. Hubd a asks for bw-x and loses its claim (as when a is killed:
// the claim expires); hubd b claims bw-x and asks for it again. The
// device's payment of a's request, which its session still holds, is
// refused (request-unknown) and moves nothing; b's is paid, and bw-x's
// receipt published once.
func TestChargingLostRequestUnpayable(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("bandwidth")
	x := env.charge(env.bandwidthEvent(k, "bw-x", "5"))[0]
	env.chg.Flush(context.Background())
	first := chantest.Expect[*wire.PaymentRequest](env.payer)

	// a's claim lapses: release it in the store as expiry would.
	if err := env.h.Store.ReleaseCharges(context.Background(), env.prov.ID, []string{"bw-x"}, testInstance); err != nil {
		t.Fatal(err)
	}
	b := env.newCharging("hubd-other")
	charging.ScanOwed(context.Background(), b)
	b.Flush(context.Background())
	second := chantest.Expect[*wire.PaymentRequest](env.payer)
	if second.Amount != x.Amount || second.ReqID == first.ReqID {
		t.Fatalf("b asked %+v, want a new request for bw-x's %d msat", second, x.Amount)
	}

	env.answer(first)
	if e := chantest.Expect[*wire.ChannelError](env.payer); e.Code != wire.ChanRequestUnknown {
		t.Fatalf("paying a's lost request: %s %s, want %s", e.Code, e.Message, wire.ChanRequestUnknown)
	}
	env.answer(second)
	chantest.Expect[*wire.PayAck](env.payer)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	env.chg.Flush(context.Background())
	b.Flush(context.Background())
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 1 || !slices.Equal(got[0].msg.Events, []string{"bw-x"}) {
		t.Fatalf("published %+v, want bw-x's receipt once", got)
	}
	rec, err := env.h.Store.Channel(context.Background(), env.ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != env.ch.Paid+x.Amount || rec.Owed != 0 {
		t.Fatalf("channel paid %d owed %d, want paid %d once, owed 0", rec.Paid, rec.Owed, env.ch.Paid+x.Amount)
	}
}
