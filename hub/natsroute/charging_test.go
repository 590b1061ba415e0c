package natsroute

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

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
)

// natsPublisher publishes provider messages on the real NATS connection.
type natsPublisher struct{ nc *nats.Conn }

func (p natsPublisher) Publish(_ context.Context, subject string, data []byte) error {
	return p.nc.Publish(subject, data)
}

// A usage event charged by instance A (as the shared intake consumer may
// hand it to any instance) for a payer whose session is on instance B: B
// asks the device, the device pays once, A marks the charge paid and
// publishes one receipt; charged, requested, paid and stored agree to the
// msat, and charging the event again changes nothing.
func TestChargeOnAPaidOnB(t *testing.T) {
	rds := redistest.Start(t)
	natsURL := startNATS(t)
	chain := chantest.NewFakeChain(chantest.TestHeight)
	key := chantest.MustKey(t)
	a := newShared(t, rds.URL(), natsURL, "a", key, chain)
	b := newShared(t, rds.URL(), natsURL, "b", key, chain)
	ctx := context.Background()

	prov := b.h.Enrol(hub.RoleProvider)
	prov2 := b.h.Enrol(hub.RoleProvider)
	payerKey := chantest.MustKey(t)
	d, err := b.h.Reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(payerKey.PubKey()), Roles: []hub.Role{hub.RolePayer}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	payer := b.h.Connect(payerKey, d.ID)
	waitRouted(t, b.r, d.ID, true)
	ch := payer.Open(chain, 1_000_000, chantest.TestHeight+500)

	start := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)
	doc, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", "toll.json"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := contracts.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.PutContract(ctx, hub.ContractRecord{
		Hash: k.Hash(), Kind: string(k.Kind), Name: k.ID, Version: int(k.Version), Document: k.Canonical(), Published: start,
	}); err != nil {
		t.Fatal(err)
	}
	ub, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "usage", "toll.json"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := contracts.ParseUsage(ub)
	if err != nil {
		t.Fatal(err)
	}
	h := k.Hash()
	u.Contract = hex.EncodeToString(h[:])
	at := u.EventTime
	if at.IsZero() {
		at = start
	}
	ev := charging.Usage{ID: "ev-1", Provider: prov.ID, Payer: d.ID, Contract: h, Time: at, Usage: u}
	ev2 := charging.Usage{ID: "ev-2", Provider: prov2.ID, Payer: d.ID, Contract: h, Time: at, Usage: u}

	receipts := make(chan *nats.Msg, 8)
	sub, err := connect(t, natsURL).ChanSubscribe(charging.ReceiptsSubject(prov.ID), receipts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	chg, err := charging.New(charging.Config{
		Contracts: a.store, Charges: a.store, Devices: a.h.Reg, Channels: a.r, Freezer: a.h.Reg,
		Publisher: natsPublisher{connect(t, natsURL)}, Clock: clock.NewTestClock(start), FlushInterval: time.Hour,
		Logger: chantest.Quiet(), CDRs: a.store,
	})
	if err != nil {
		t.Fatal(err)
	}
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
