package natsroute

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/lightningnetwork/lnd/keychain"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
	"github.com/m2mhub/m2mhub/internal/redistest"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// sharedInstance is one hub stack on the shared Redis store and NATS.
type sharedInstance struct {
	h     *chantest.Harness // Srv, HubKey, Reg: enough to drive devices
	ch    *channels.Manager
	r     *Router
	store *redisstore.Store
}

func newShared(t *testing.T, redisURL, natsURL, name string, key *btcec.PrivateKey, chain *chantest.FakeChain,
	mods ...func(*channels.Config)) *sharedInstance {
	t.Helper()
	st, err := redisstore.New(redisstore.Config{URL: redisURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	dir := session.NewDirectory()
	payout, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(key.PubKey()))
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, natsURL)
	relay := newRelay(t, nc, time.Second)
	cfg := channels.Config{
		Store: st, Devices: st, Sessions: dir, Chain: chain, HubKey: key, Relay: relay,
		PayoutScript: payout, Params: &chaincfg.RegressionNetParams, PollInterval: 50 * time.Millisecond,
		MinCapacity: 10_000, MaxCapacity: 10_000_000, SafetyMargin: 6, CreditLimit: 1_000_000, Logger: chantest.Quiet(),
	}
	for _, m := range mods {
		m(&cfg)
	}
	ch, err := channels.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{Store: st, Channels: ch, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, relay, name, ch, dir, st)
	ln, err := p2plisten.Listen(p2plisten.Config{Addr: "127.0.0.1:0", Key: &keychain.PrivKeyECDH{PrivKey: key}, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := session.New(session.Config{
		Listener: session.NewListener(ln), Auth: reg, Handler: ch, Directory: dir, Logger: chantest.Quiet(),
		PingInterval: time.Hour, PongTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ch.Start()
	t.Cleanup(func() {
		_ = r.Close()
		_ = srv.Close()
		_ = ch.Close()
	})
	return &sharedInstance{h: &chantest.Harness{T: t, HubKey: key, Reg: reg, Srv: srv, Chain: chain}, ch: ch, r: r, store: st}
}

// twoInstances starts two instances on one Redis store and NATS, enrols a
// provider and a payer device, and returns them with the payer's key.
func twoInstances(t *testing.T) (a, b *sharedInstance, chain *chantest.FakeChain, prov *chantest.Device, devKey *btcec.PrivateKey, d hub.Device) {
	t.Helper()
	rds := redistest.Start(t)
	natsURL := startNATS(t)
	chain = chantest.NewFakeChain(100)
	key := chantest.MustKey(t)
	a = newShared(t, rds.URL(), natsURL, "a", key, chain)
	b = newShared(t, rds.URL(), natsURL, "b", key, chain)
	prov = a.h.Enrol(hub.RolePayer, hub.RoleProvider)
	devKey = chantest.MustKey(t)
	d, err := a.h.Reg.Enrol(context.Background(), registry.EnrolRequest{Key: hub.PubKeyOf(devKey.PubKey()), Roles: []hub.Role{hub.RolePayer}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return a, b, chain, prov, devKey, d
}

// A device that moves between two instances sharing one Redis store, in
// the middle of a charge: the request made on A reaches it on B; it leaves
// B before paying, so the request fails (A hears it) and its payment on A
// is refused; it pays on A; B, whose cache is now stale, refuses the
// device's next payment's sequence as ahead of it, reads the store and
// takes it; and an instance whose write would be stale is refused by the
// store's compare-and-set. The store ends at the sum of acknowledged
// payments.
func TestDeviceMovesMidExchange(t *testing.T) {
	a, b, chain, prov, devKey, d := twoInstances(t)
	ctx := context.Background()
	onB := b.h.Connect(devKey, d.ID)
	waitRouted(t, b.r, d.ID, true)
	c := onB.Open(chain, 100_000, 1000)
	var acked msat.Amount
	onB.Pay(c, 1000, prov.ID) // B's cache now holds seq 1
	acked += 1000

	l := newListener()
	id, err := a.r.RequestPayment(ctx, request(d.ID, prov.ID, c, 2500, l))
	if err != nil {
		t.Fatal(err)
	}
	pr := chantest.Expect[*wire.PaymentRequest](onB)
	// The device leaves B before answering, and comes to A.
	_ = onB.Conn.Close()
	<-onB.Done
	waitRouted(t, b.r, d.ID, false)
	onA := a.h.Connect(devKey, d.ID)
	waitRouted(t, a.r, d.ID, true)
	// The request ended with the device's session on B: B tells A it
	// failed (charging asks again), and a payment naming it, on A, is
	// refused, so the charges are not paid twice.
	if got := l.wait(t); got != id || l.refd[id] != "failed" {
		t.Fatalf("outcome of %d: %q, want request %d failed", got, l.refd[got], id)
	}
	m := onA.PayMsg(c, c.Seq+1, c.Paid+pr.Amount, pr.Amount, pr.Payee)
	rid := pr.ReqID
	m.ReqID = &rid // B's id, ended
	onA.Send(m)
	chantest.Refusal(onA, wire.ChanRequestUnknown)
	onA.Send(onA.PayMsg(c, c.Seq+1, c.Paid+pr.Amount, pr.Amount, pr.Payee)) // a plain payment
	chantest.Expect[*wire.PayAck](onA)
	c.Seq++
	c.Paid += pr.Amount
	acked += pr.Amount
	if n := remoteLen(a.r); n != 0 {
		t.Fatalf("%d remote requests tracked after the outcome", n)
	}

	// Now the device goes back to B, whose cache still says seq 1.
	_ = onA.Conn.Close()
	<-onA.Done
	waitRouted(t, a.r, d.ID, false)
	onB2 := b.h.Connect(devKey, d.ID)
	onB2.Send(onB2.PayMsg(c, c.Seq+1, c.Paid+700, 700, prov.ID))
	// B's cached state is a payment behind the store: it must judge
	// the payment against the stored state and acknowledge it (it used
	// to refuse it with a sequence gap, for good).
	ack := chantest.Expect[*wire.PayAck](onB2)
	if ack.Seq != c.Seq+1 {
		t.Fatalf("ack at seq %d, want %d", ack.Seq, c.Seq+1)
	}
	// A stale writer is still refused: the device's seq-2 state again,
	// now through A, whose cache is at seq 2 but the store at 3.
	_ = onB2.Conn.Close()
	<-onB2.Done
	onA2 := a.h.Connect(devKey, d.ID)
	onA2.Send(onA2.PayMsg(c, c.Seq+1, c.Paid+700, 700, prov.ID))
	// The hub precedes the refusal with the channel's state, which is the
	// stored one again (seq 3).
	if cs := chantest.Expect[*wire.ChannelState](onA2); cs.Seq != c.Seq+1 {
		t.Fatalf("A resynchronised to seq %d, want %d", cs.Seq, c.Seq+1)
	}
	chantest.Refusal(onA2, wire.ChanStaleState)
	c.Seq++
	c.Paid += 700
	acked += 700

	rec, err := b.store.Channel(ctx, c.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != c.Seq || rec.Paid != acked {
		t.Fatalf("store at seq %d paid %d msat, device acknowledged seq %d paid %d msat", rec.Seq, rec.Paid, c.Seq, acked)
	}
	select {
	case got := <-l.ch:
		t.Fatalf("outcome %d reported twice", got)
	default:
	}
}

// TestSettlementReadsOtherInstances: the settlement leader (A) cached a
// channel; the device then paid on B and B recorded a charge owed on it
// (Owed up, at the same sequence). What A settles and carries over is the
// store's record, not its cache: the open channels and the cut see B's
// payment and Owed. (Rollover reads the store the same way; the settler's
// tests cover it on one instance.)
func TestSettlementReadsOtherInstances(t *testing.T) {
	a, b, chain, prov, devKey, d := twoInstances(t)
	ctx := context.Background()
	onB := b.h.Connect(devKey, d.ID)
	c := onB.Open(chain, 100_000, 1000)
	onB.Pay(c, 1_000, prov.ID)
	if _, err := a.ch.OpenChannels(ctx); err != nil { // A caches seq 1
		t.Fatal(err)
	}

	onB.Pay(c, 2_000, prov.ID)
	now := time.Now()
	res, err := b.ch.RecordCharges(ctx, b.store, []hub.Charge{{
		Provider: prov.ID, EventID: "ev-1", Payer: d.ID, Amount: 300,
		Channel: c.Op, Status: hub.ChargeOwed, EventTime: now, Charged: now,
	}})
	if err != nil || len(res) != 1 || res[0].Stored.Status != hub.ChargeOwed {
		t.Fatalf("record charge on B: %v %+v", err, res)
	}
	open, err := a.ch.OpenChannels(ctx)
	if err != nil || len(open) != 1 {
		t.Fatalf("open channels on A: %v, %d", err, len(open))
	}
	if rec := open[0].Record; rec.Seq != 2 || rec.Paid != 3_000 || rec.Owed != 300 {
		t.Fatalf("A's open channels: seq %d paid %d owed %d, want seq 2 paid 3000 owed 300", rec.Seq, rec.Paid, rec.Owed)
	}
	// Another charge on B: Owed moves, the sequence does not.
	if _, err := b.ch.RecordCharges(ctx, b.store, []hub.Charge{{
		Provider: prov.ID, EventID: "ev-2", Payer: d.ID, Amount: 200,
		Channel: c.Op, Status: hub.ChargeOwed, EventTime: now, Charged: now,
	}}); err != nil {
		t.Fatal(err)
	}
	cut, err := a.ch.CutOpen(ctx, func() error { return nil })
	if err != nil || len(cut) != 1 {
		t.Fatalf("cut on A: %v, %d", err, len(cut))
	}
	if rec := cut[0].Record; rec.Seq != 2 || rec.Paid != 3_000 || rec.Owed != 500 {
		t.Fatalf("A's cut: seq %d paid %d owed %d, want seq 2 paid 3000 owed 500", rec.Seq, rec.Paid, rec.Owed)
	}
}

// logWatch is a slog handler that reports whether a message was logged.
type logWatch struct {
	msg  string
	seen atomic.Bool
}

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	if r.Message == w.msg {
		w.seen.Store(true)
	}
	return nil
}
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *logWatch) WithGroup(string) slog.Handler      { return w }

// A device asked on B to pay a capture moves to A before paying and pays
// it there, against the hold. When B's capture timer fires it finds the
// stored hold captured by that payment and does not charge the capture on
// credit a second time: the hold is captured once, the channel owes
// nothing, and the store holds the one payment.
func TestCaptureAnsweredOnAnotherInstance(t *testing.T) {
	rds := redistest.Start(t)
	natsURL := startNATS(t)
	chain := chantest.NewFakeChain(100)
	key := chantest.MustKey(t)
	watch := &logWatch{msg: "capture paid on another instance"}
	a := newShared(t, rds.URL(), natsURL, "a", key, chain)
	b := newShared(t, rds.URL(), natsURL, "b", key, chain, func(c *channels.Config) {
		c.CaptureTimeout = 200 * time.Millisecond
		c.Logger = slog.New(watch)
	})
	ctx := context.Background()
	prov := a.h.Enrol(hub.RolePayer, hub.RoleProvider)
	devKey := chantest.MustKey(t)
	d, err := a.h.Reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(devKey.PubKey()), Roles: []hub.Role{hub.RolePayer}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	onB := b.h.Connect(devKey, d.ID)
	waitRouted(t, b.r, d.ID, true)
	c := onB.Open(chain, 100_000, 1000)

	// The provider on A holds against the payer on B.
	hid := [16]byte{1, 2, 3}
	expires := uint64(time.Now().Add(time.Hour).Unix())
	prov.Send(&wire.HoldRequest{HoldID: hid, Payer: d.ID, Max: 50_000, Expires: expires})
	hr := chantest.Expect[*wire.HoldRequest](onB)
	sig, err := channel.SignHold(devKey, hid, c.Op, hr.Provider, hr.Max, hr.Expires)
	if err != nil {
		t.Fatal(err)
	}
	onB.Send(&wire.HoldAuthorize{HoldID: hid, ChanID: c.Op, Provider: hr.Provider, Max: hr.Max, Expires: hr.Expires, Sig: sig})
	if res := chantest.Expect[*wire.HoldResult](prov); res.Status != wire.HoldAuthorized {
		t.Fatalf("hold result %+v", res)
	}

	// The capture is asked on B; the device leaves and pays it on A.
	prov.Send(&wire.Capture{HoldID: hid, Amount: 4_000})
	pr := chantest.Expect[*wire.PaymentRequest](onB)
	_ = onB.Conn.Close()
	<-onB.Done
	waitRouted(t, b.r, d.ID, false)
	onA := a.h.Connect(devKey, d.ID)
	m := onA.PayMsg(c, 1, pr.Amount, pr.Amount, pr.Payee)
	rid := pr.ReqID
	m.HoldID, m.ReqID = &hid, &rid
	onA.Send(m)
	chantest.Expect[*wire.PayAck](onA)
	chantest.Expect[*wire.ReceiptNotice](prov)

	// B's timer fires; it either sees the payment or charges on credit.
	deadline := time.Now().Add(5 * time.Second)
	for !watch.seen.Load() {
		rec, err := b.store.Channel(ctx, c.Op)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Owed != 0 {
			t.Fatalf("B charged the paid capture on credit: owed %d", rec.Owed)
		}
		if time.Now().After(deadline) {
			t.Fatal("B's capture timer did not settle the request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec, err := b.store.Channel(ctx, c.Op)
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.store.Hold(ctx, hid)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != 4_000 || rec.Owed != 0 || rec.Seq != 1 || h.Captured != 4_000 {
		t.Fatalf("store paid %d owed %d seq %d, hold captured %d; want 4000 paid once", rec.Paid, rec.Owed, rec.Seq, h.Captured)
	}
}
