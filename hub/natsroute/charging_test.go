package natsroute

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/internal/redistest"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// natsPublisher publishes provider messages on the real NATS connection.
type natsPublisher struct{ nc *nats.Conn }

func (p natsPublisher) Publish(_ context.Context, subject string, data []byte) error {
	return p.nc.Publish(subject, data)
}

// chargeRig is two instances on one Redis and NATS, a provider, a payer
// connected to B with a channel, and charging on A publishing receipts on
// NATS (subscribed to for the provider).
type chargeRig struct {
	a, b     *sharedInstance
	prov     *chantest.Device
	payerKey *btcec.PrivateKey
	d        hub.Device
	payer    *chantest.Device
	ch       *chantest.Channel
	chg      *charging.Service
	receipts chan *nats.Msg
	contract hub.Hash
	u        contracts.Usage
	at       time.Time
}

func newChargeRig(t *testing.T) *chargeRig {
	t.Helper()
	rds := redistest.Start(t)
	natsURL := startNATS(t)
	chain := chantest.NewFakeChain(chantest.TestHeight)
	key := chantest.MustKey(t)
	rg := &chargeRig{
		a: newShared(t, rds.URL(), natsURL, "a", key, chain),
		b: newShared(t, rds.URL(), natsURL, "b", key, chain),
	}
	ctx := context.Background()
	rg.prov = rg.b.h.Enrol(hub.RoleProvider)
	rg.payerKey = chantest.MustKey(t)
	d, err := rg.b.h.Reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(rg.payerKey.PubKey()), Roles: []hub.Role{hub.RolePayer}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	rg.d = d
	rg.payer = rg.b.h.Connect(rg.payerKey, d.ID)
	waitRouted(t, rg.b.r, d.ID, true)
	rg.ch = rg.payer.Open(chain, 1_000_000, chantest.TestHeight+500)

	start := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)
	doc, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", "toll.json"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := contracts.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rg.a.store.PutContract(ctx, hub.ContractRecord{
		Hash: k.Hash(), Kind: string(k.Kind), Name: k.ID, Version: int(k.Version), Document: k.Canonical(), Published: start,
	}); err != nil {
		t.Fatal(err)
	}
	ub, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "usage", "toll.json"))
	if err != nil {
		t.Fatal(err)
	}
	rg.u, err = contracts.ParseUsage(ub)
	if err != nil {
		t.Fatal(err)
	}
	rg.contract = k.Hash()
	rg.u.Contract = hex.EncodeToString(rg.contract[:])
	rg.at = rg.u.EventTime
	if rg.at.IsZero() {
		rg.at = start
	}

	rg.receipts = make(chan *nats.Msg, 8)
	sub, err := connect(t, natsURL).ChanSubscribe(charging.ReceiptsSubject(rg.prov.ID), rg.receipts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	rg.chg, err = charging.New(charging.Config{
		Contracts: rg.a.store, Charges: rg.a.store, Devices: rg.a.h.Reg, Channels: rg.a.r, Freezer: rg.a.h.Reg,
		Publisher: natsPublisher{connect(t, natsURL)}, Clock: clock.NewTestClock(start), FlushInterval: time.Hour,
		Logger: chantest.Quiet(), CDRs: rg.a.store,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rg
}

// usage is a toll passage of the payer metered by provider.
func (rg *chargeRig) usage(id, provider string) charging.Usage {
	return charging.Usage{ID: id, Provider: provider, Payer: rg.d.ID, Contract: rg.contract, Time: rg.at, Usage: rg.u}
}

// paidOnce checks the end of a charge of ev-1 for amount paid once by ack:
// the provider was told pm, the ack's receipt; the charge is paid, the
// channel paid amount once and owes nothing; and nothing more is asked
// or published.
func (rg *chargeRig) paidOnce(t *testing.T, dev *chantest.Device, amount msat.Amount, ack *wire.PayAck, pm charging.ProviderMessage) {
	t.Helper()
	ctx := context.Background()
	if raw, err := hex.DecodeString(pm.Receipt); err != nil || ack == nil || pm.Kind != charging.ProviderMsgReceipt ||
		string(raw) != string(ack.Receipt) || len(pm.Events) != 1 || pm.Events[0] != "ev-1" {
		t.Fatalf("published %+v, want the ack's receipt for ev-1", pm)
	}
	c, err := rg.a.store.Charge(ctx, rg.prov.ID, "ev-1")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := rg.a.store.Channel(ctx, rg.ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != hub.ChargePaid || rec.Paid != amount || rec.Owed != 0 || rec.Seq != 1 {
		t.Fatalf("charge %s, channel paid %d owed %d seq %d; want paid once: %d msat, owed 0, seq 1",
			c.Status, rec.Paid, rec.Owed, rec.Seq, amount)
	}
	rg.chg.Flush(ctx)
	select {
	case m := <-dev.In:
		t.Fatalf("after the payment the hub sent %T", m)
	case msg := <-rg.receipts:
		t.Fatalf("a second provider message: %s", msg.Data)
	case <-time.After(200 * time.Millisecond):
	}
	if err := rg.chg.Close(); err != nil {
		t.Fatal(err)
	}
}

// A usage event charged by instance A (as the shared intake consumer may
// hand it to any instance) for a payer whose session is on instance B: B
// asks the device, the device pays once, A marks the charge paid and
// publishes one receipt; charged, requested, paid and stored agree to the
// msat, and charging the event again changes nothing.
func TestChargeOnAPaidOnB(t *testing.T) {
	rg := newChargeRig(t)
	a, payer, ch, chg, receipts, ctx := rg.a, rg.payer, rg.ch, rg.chg, rg.receipts, context.Background()
	prov := rg.prov
	prov2 := rg.b.h.Enrol(hub.RoleProvider)
	ev := rg.usage("ev-1", prov.ID)
	ev2 := rg.usage("ev-2", prov2.ID)
	out, err := chg.ChargeUsage(ctx, []charging.Usage{ev, ev2})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Amount == 0 || out[0].Status != hub.ChargeOwed || out[1].Status != hub.ChargeOwed {
		t.Fatalf("outcomes %+v", out)
	}
	amount, amount2 := out[0].Amount, out[1].Amount

	// A asks, one request per provider; they go to B, B to the device.
	chg.Flush(ctx)
	reqs := map[string]*wire.PaymentRequest{}
	for range 2 {
		pr := chantest.Expect[*wire.PaymentRequest](payer)
		reqs[pr.Payee] = pr
	}
	if reqs[prov.ID] == nil || reqs[prov.ID].Amount != amount || reqs[prov2.ID] == nil || reqs[prov2.ID].Amount != amount2 {
		t.Fatalf("device asked %+v, charged %d and %d", reqs, amount, amount2)
	}
	payReq := func(pr *wire.PaymentRequest) *wire.PayAck {
		m := payer.PayMsg(ch, ch.Seq+1, ch.Paid+pr.Amount, pr.Amount, pr.Payee)
		rid := pr.ReqID
		m.ReqID = &rid
		payer.Send(m)
		ack := chantest.Expect[*wire.PayAck](payer)
		ch.Seq++
		ch.Paid += pr.Amount
		return ack
	}
	ack := payReq(reqs[prov.ID])
	// B wrote Owed from the store's value (A recorded both charges), not
	// from its own cache, which knew of neither.
	rec, err := a.store.Channel(ctx, ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Owed != amount2 {
		t.Fatalf("owed %d msat after paying %d of %d+%d", rec.Owed, amount, amount, amount2)
	}
	payReq(reqs[prov2.ID])

	// A hears the outcome over NATS; its flusher marks the charge paid.
	deadline := time.Now().Add(5 * time.Second)
	for {
		chg.Flush(ctx)
		c, err := a.store.Charge(ctx, prov.ID, "ev-1")
		if err != nil {
			t.Fatal(err)
		}
		if c.Status == hub.ChargePaid {
			if c.Amount != amount {
				t.Fatalf("stored charge %d msat, charged %d", c.Amount, amount)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("charge still %s after the device paid on B", c.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var pm charging.ProviderMessage
	select {
	case msg := <-receipts:
		if err := json.Unmarshal(msg.Data, &pm); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt published")
	}
	raw, err := hex.DecodeString(pm.Receipt)
	if err != nil || string(raw) != string(ack.Receipt) || pm.Kind != charging.ProviderMsgReceipt {
		t.Fatalf("published %+v, want the ack's receipt (%v)", pm, err)
	}
	var rc channel.Receipt
	if err := rc.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if rc.Amount != amount || !rc.CoversEvents([]string{"ev-1"}) {
		t.Fatalf("receipt %d msat for %v", rc.Amount, pm.Events)
	}

	// The same event again (a redelivery to either instance): a
	// duplicate, nothing more is asked or paid.
	again, err := chg.ChargeUsage(ctx, []charging.Usage{ev})
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || !again[0].Outcome.Duplicate {
		t.Fatalf("second charge %+v, want a duplicate", again)
	}
	chg.Flush(ctx)
	for _, id := range []string{"ev-1", "ev-2"} {
		p := prov.ID
		if id == "ev-2" {
			p = prov2.ID
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := a.store.Charge(ctx, p, id)
			if err != nil {
				t.Fatal(err)
			}
			if c.Status == hub.ChargePaid {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("charge %s is %s", id, c.Status)
			}
			chg.Flush(ctx)
			time.Sleep(5 * time.Millisecond)
		}
	}
	rec, err = a.store.Channel(ctx, ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != amount+amount2 || rec.Owed != 0 || rec.Seq != 2 {
		t.Fatalf("channel paid %d owed %d seq %d, want paid %d owed 0 seq 2", rec.Paid, rec.Owed, rec.Seq, amount+amount2)
	}
	if n := remoteLen(a.r); n != 0 {
		t.Fatalf("%d remote requests still tracked", n)
	}
	if err := chg.Close(); err != nil {
		t.Fatal(err)
	}
}

// A charge request whose session ends before the device answers it is
// asked again on the device's next session, on either instance, and paid
// once: the instance holding the session reports it failed when the
// session ends (after the session's payments were handled), charging asks
// again, and the device's payment naming the old request, sent again on
// its next session, is refused. Owed, paid and the one receipt agree to
// the msat.
func TestSessionEndAsksAgain(t *testing.T) {
	for _, tc := range []struct {
		name string
		// onA: the device takes the request on A (the instance that
		// charges) and moves to B; else on B, moving to A.
		onA bool
	}{{"OnOrigin", true}, {"Routed", false}} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newChargeRig(t)
			ctx := context.Background()
			move := func(from *chantest.Device, to *sharedInstance) *chantest.Device {
				_ = from.Conn.Close()
				<-from.Done
				dev := to.h.Connect(rg.payerKey, rg.d.ID)
				waitRouted(t, to.r, rg.d.ID, true)
				return dev
			}
			dev, next := rg.payer, rg.a
			if tc.onA {
				dev, next = move(rg.payer, rg.a), rg.b
			}
			out, err := rg.chg.ChargeUsage(ctx, []charging.Usage{rg.usage("ev-1", rg.prov.ID)})
			if err != nil {
				t.Fatal(err)
			}
			amount := out[0].Amount
			rg.chg.Flush(ctx)
			first := chantest.Expect[*wire.PaymentRequest](dev)
			if first.Amount != amount {
				t.Fatalf("asked %d msat, charged %d", first.Amount, amount)
			}
			// The device leaves before its payment reaches the hub, and
			// sends it again on its next session, on the other instance.
			dev = move(dev, next)
			stale := dev.PayMsg(rg.ch, rg.ch.Seq+1, rg.ch.Paid+amount, amount, first.Payee)
			stale.ReqID = &first.ReqID
			dev.Send(stale)
			chantest.Refusal(dev, wire.ChanRequestUnknown)

			// Charging hears the request failed and asks again.
			var again *wire.PaymentRequest
			deadline := time.Now().Add(5 * time.Second)
			for again == nil {
				if time.Now().After(deadline) {
					t.Fatal("the charge was not asked for again on the device's next session")
				}
				rg.chg.Flush(ctx)
				select {
				case m := <-dev.In:
					pr, ok := m.(*wire.PaymentRequest)
					if !ok {
						t.Fatalf("got %T, want a payment request", m)
					}
					again = pr
				case <-time.After(20 * time.Millisecond):
				}
			}
			if again.Amount != amount || again.Payee != rg.prov.ID {
				t.Fatalf("asked again for %d msat to %s, charged %d to %s", again.Amount, again.Payee, amount, rg.prov.ID)
			}
			m := dev.PayMsg(rg.ch, rg.ch.Seq+1, rg.ch.Paid+amount, amount, again.Payee)
			m.ReqID = &again.ReqID
			dev.Send(m)
			ack := chantest.Expect[*wire.PayAck](dev)

			var pm charging.ProviderMessage
			for pm.Kind == "" {
				rg.chg.Flush(ctx)
				select {
				case msg := <-rg.receipts:
					if err := json.Unmarshal(msg.Data, &pm); err != nil {
						t.Fatal(err)
					}
				case <-time.After(20 * time.Millisecond):
				}
			}
			rg.paidOnce(t, dev, amount, ack, pm)
		})
	}
}

// A charge request routed to the instance holding the payer's session
// (B), which dies before telling the outcome: A finds it gone (its
// subjects have no responders) and settles the request from the store.
// Paid before B died, the stored payment's receipt is published and
// nothing is asked again; not paid, the charge is asked for again on the
// device's next session (on A) and paid once. Owed, paid and the one
// receipt agree to the msat.
func TestHolderGone(t *testing.T) {
	for _, tc := range []struct {
		name     string
		paidOnB  bool
		askAgain bool
	}{{"PaidBeforeItDied", true, false}, {"DiedBeforePaid", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newChargeRig(t)
			ctx := context.Background()
			out, err := rg.chg.ChargeUsage(ctx, []charging.Usage{rg.usage("ev-1", rg.prov.ID)})
			if err != nil {
				t.Fatal(err)
			}
			amount := out[0].Amount
			rg.chg.Flush(ctx)
			pr := chantest.Expect[*wire.PaymentRequest](rg.payer)
			// B "dies" for the cluster: its subjects go, so it tells no
			// outcome; its channel manager still takes the payment.
			if err := rg.b.r.Close(); err != nil {
				t.Fatal(err)
			}
			dev := rg.payer
			var ack *wire.PayAck
			if tc.paidOnB {
				m := dev.PayMsg(rg.ch, rg.ch.Seq+1, rg.ch.Paid+amount, amount, pr.Payee)
				m.ReqID = &pr.ReqID
				dev.Send(m)
				ack = chantest.Expect[*wire.PayAck](dev)
			} else {
				_ = dev.Conn.Close()
				<-dev.Done
				dev = rg.a.h.Connect(rg.payerKey, rg.d.ID)
				waitRouted(t, rg.a.r, rg.d.ID, true)
			}
			var pm charging.ProviderMessage
			deadline := time.Now().Add(10 * time.Second)
			for pm.Kind == "" {
				if time.Now().After(deadline) {
					t.Fatal("no receipt after the holder died")
				}
				rg.chg.Flush(ctx)
				select {
				case m := <-dev.In:
					again, ok := m.(*wire.PaymentRequest)
					if !ok || !tc.askAgain || ack != nil {
						t.Fatalf("the hub sent %T (%+v), asked again %v", m, m, ack != nil)
					}
					if again.Amount != amount || again.Payee != rg.prov.ID {
						t.Fatalf("asked again for %d msat to %s, charged %d to %s", again.Amount, again.Payee, amount, rg.prov.ID)
					}
					p := dev.PayMsg(rg.ch, rg.ch.Seq+1, rg.ch.Paid+amount, amount, again.Payee)
					p.ReqID = &again.ReqID
					dev.Send(p)
					ack = chantest.Expect[*wire.PayAck](dev)
				case msg := <-rg.receipts:
					if err := json.Unmarshal(msg.Data, &pm); err != nil {
						t.Fatal(err)
					}
				case <-time.After(20 * time.Millisecond):
				}
			}
			rg.paidOnce(t, dev, amount, ack, pm)
		})
	}
}
