package natsroute

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/cosign"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/natsembed"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// instance is one hub stack (channel manager, session server, directory)
// with its router on the shared NATS server.
type instance struct {
	h   *chantest.Harness
	dir *session.Directory
	r   *Router
	nc  *nats.Conn
}

func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	return ns.ClientURL()
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newInstance(t *testing.T, url, name string, chain *chantest.FakeChain) *instance {
	t.Helper()
	var dir *session.Directory
	nc := connect(t, url)
	relay := newRelay(t, nc, 500*time.Millisecond)
	h := chantest.NewHarness(t, chain, func(c *channels.Config) {
		dir = c.Sessions.(*session.Directory)
		c.Relay = relay
	})
	r := newRouter(t, relay, name, h.Ch, dir, h.Store)
	return &instance{h: h, dir: dir, r: r, nc: nc}
}

func newRelay(t testing.TB, nc *nats.Conn, timeout time.Duration) *Relay {
	t.Helper()
	relay, err := NewRelay(RelayConfig{Conn: nc, Timeout: timeout, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return relay
}

// newRouter starts the router of one instance, with session cosigners.
func newRouter(t testing.TB, relay *Relay, name string, local *channels.Manager, dir *session.Directory, runs cosign.Runs) *Router {
	t.Helper()
	cs, err := cosign.New(cosign.Config{Sessions: dir, Channels: local, Runs: runs, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Relay: relay, Instance: name, Local: local, Sessions: dir, Cosigners: cs, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// listener records the outcomes it hears.
type listener struct {
	mu   sync.Mutex
	paid map[uint64][][]byte
	refd map[uint64]string
	ch   chan uint64
}

func newListener() *listener {
	return &listener{paid: map[uint64][][]byte{}, refd: map[uint64]string{}, ch: make(chan uint64, 16)}
}

func (l *listener) ChargePaid(id uint64, receipt []byte) {
	l.mu.Lock()
	l.paid[id] = append(l.paid[id], receipt)
	l.mu.Unlock()
	l.ch <- id
}

func (l *listener) ChargeRefused(id uint64, code, _ string) {
	l.mu.Lock()
	l.refd[id] = code
	l.mu.Unlock()
	l.ch <- id
}

// ChargeFailed records the request as refused with code "failed".
func (l *listener) ChargeFailed(id uint64, _ string) {
	l.mu.Lock()
	l.refd[id] = "failed"
	l.mu.Unlock()
	l.ch <- id
}

func (l *listener) wait(t *testing.T) uint64 {
	t.Helper()
	select {
	case id := <-l.ch:
		return id
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome heard")
		return 0
	}
}

// waitRouted waits until the router follows deviceID's session.
func waitRouted(t *testing.T, r *Router, deviceID string, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		_, held := r.devSubs[deviceID]
		r.mu.Unlock()
		if held == want {
			// Make sure the server has the interest before anyone asks.
			if err := r.relay.conn.Flush(); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s routed=%v, want %v", deviceID, held, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func remoteLen(r *Router) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.remote)
}

// payRequested answers the PaymentRequest the device got with a Pay.
func payRequested(t *testing.T, d *chantest.Device, c *chantest.Channel) (*wire.PaymentRequest, *wire.PayAck) {
	t.Helper()
	pr := chantest.Expect[*wire.PaymentRequest](d)
	m := d.PayMsg(c, c.Seq+1, c.Paid+pr.Amount, pr.Amount, pr.Payee)
	id := pr.ReqID
	m.ReqID = &id
	d.Send(m)
	ack := chantest.Expect[*wire.PayAck](d)
	c.Seq++
	c.Paid += pr.Amount
	return pr, ack
}

func request(payer, payee string, ch *chantest.Channel, amount msat.Amount, l hub.ChargeListener) hub.PaymentRequest {
	root, n, _ := channel.EventsRoot([]string{"ev-1", "ev-2"})
	return hub.PaymentRequest{
		Listener: l, Payer: payer, Payee: payee, Channel: ch.Op, Amount: amount,
		Contract: [32]byte{7}, EventsRoot: root, EventCount: n, Memo: "2 events",
	}
}

// A payment request made on instance A for a payer whose session is on B
// is served by B's channel manager and its outcome reaches A's listener
// exactly once; the device's channel moves by exactly the amount.
func TestRemotePaymentRequest(t *testing.T) {
	url := startNATS(t)
	chain := chantest.NewFakeChain(100)
	a := newInstance(t, url, "a", chain)
	b := newInstance(t, url, "b", chain)
	prov := b.h.Enrol(hub.RolePayer, hub.RoleProvider)
	dev := b.h.Enrol(hub.RolePayer)
	waitRouted(t, b.r, dev.ID, true)
	ch := dev.Open(chain, 100_000, 1000)

	l := newListener()
	const amount = msat.Amount(12_345)
	id, err := a.r.RequestPayment(context.Background(), request(dev.ID, prov.ID, ch, amount, l))
	if err != nil {
		t.Fatal(err)
	}
	if id&remoteBit == 0 {
		t.Fatalf("id %d is not a remote id", id)
	}
	pr, ack := payRequested(t, dev, ch)
	if pr.Amount != amount || pr.Payee != prov.ID {
		t.Fatalf("device asked for %d to %s", pr.Amount, pr.Payee)
	}
	if got := l.wait(t); got != id {
		t.Fatalf("outcome for %d, want %d", got, id)
	}
	l.mu.Lock()
	receipts := l.paid[id]
	l.mu.Unlock()
	if len(receipts) != 1 || string(receipts[0]) != string(ack.Receipt) {
		t.Fatalf("%d receipts heard, want the ack's one", len(receipts))
	}
	var rc channel.Receipt
	if err := rc.UnmarshalBinary(receipts[0]); err != nil {
		t.Fatal(err)
	}
	if rc.Amount != amount || rc.Payer != dev.ID || rc.EventCount != 2 || rc.Contract != [32]byte{7} {
		t.Fatalf("receipt %+v", rc)
	}
	rec, err := b.h.Store.Channel(context.Background(), ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != amount || rec.Seq != 1 {
		t.Fatalf("channel paid %d at seq %d, want %d at 1", rec.Paid, rec.Seq, amount)
	}
	if n := remoteLen(a.r); n != 0 {
		t.Fatalf("%d remote requests still tracked", n)
	}
	// Refusals travel the same way.
	id2, err := a.r.RequestPayment(context.Background(), request(dev.ID, prov.ID, ch, 1000, l))
	if err != nil {
		t.Fatal(err)
	}
	pr = chantest.Expect[*wire.PaymentRequest](dev)
	rid := pr.ReqID
	dev.Send(&wire.ChannelError{ChanID: &ch.Op, ReqID: &rid, Code: wire.ChanCode("policy"), Message: "no"})
	if got := l.wait(t); got != id2 {
		t.Fatalf("outcome for %d, want %d", got, id2)
	}
	l.mu.Lock()
	code, paidTwice := l.refd[id2], len(l.paid[id])
	l.mu.Unlock()
	if code != "policy" || paidTwice != 1 {
		t.Fatalf("refusal %q, first request paid %d times", code, paidTwice)
	}
}

// A payer with a local session is served by the local manager: the id is
// the manager's own and nothing crosses NATS.
func TestLocalPaymentRequest(t *testing.T) {
	url := startNATS(t)
	chain := chantest.NewFakeChain(100)
	a := newInstance(t, url, "a", chain)
	prov := a.h.Enrol(hub.RolePayer, hub.RoleProvider)
	dev := a.h.Enrol(hub.RolePayer)
	ch := dev.Open(chain, 100_000, 1000)
	l := newListener()
	id, err := a.r.RequestPayment(context.Background(), request(dev.ID, prov.ID, ch, 5000, l))
	if err != nil {
		t.Fatal(err)
	}
	if id&remoteBit != 0 {
		t.Fatalf("local request got remote id %x", id)
	}
	payRequested(t, dev, ch)
	if got := l.wait(t); got != id {
		t.Fatalf("outcome for %d, want %d", got, id)
	}
}

// No instance holds the payer: offline at once. A holder that stops
// answering: ErrInstanceGone within the timeout, nothing tracked, nothing
// reported; once the device is on a live instance the retry is paid once.
func TestRemoteOfflineAndDeadHolder(t *testing.T) {
	url := startNATS(t)
	chain := chantest.NewFakeChain(100)
	a := newInstance(t, url, "a", chain)
	b := newInstance(t, url, "b", chain)
	prov := b.h.Enrol(hub.RolePayer, hub.RoleProvider)
	l := newListener()
	ch := &chantest.Channel{}
	if _, err := a.r.RequestPayment(context.Background(), request("dev-0000000000000000", prov.ID, ch, 1000, l)); !errors.Is(err, channels.ErrDeviceOffline) {
		t.Fatalf("unknown payer: %v, want ErrDeviceOffline", err)
	}

	dev := b.h.Enrol(hub.RolePayer)
	waitRouted(t, b.r, dev.ID, true)
	ch = dev.Open(chain, 100_000, 1000)
	// B stalls (its NATS connection stops reading; a stalled or dying
	// process looks the same to A until its subscriptions go).
	stalled := connect(t, url)
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	sub, err := stalled.QueueSubscribe(b.r.relay.devSubject(dev.ID, "*"), "hubd", func(*nats.Msg) { <-stall })
	if err != nil {
		t.Fatal(err)
	}
	if err := stalled.Flush(); err != nil {
		t.Fatal(err)
	}
	// Take B's own subscription away so the stalled one takes the request.
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = a.r.RequestPayment(context.Background(), request(dev.ID, prov.ID, ch, 1000, l))
	if !errors.Is(err, ErrInstanceGone) {
		t.Fatalf("stalled holder: %v, want ErrInstanceGone", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stalled holder took %v to report", d)
	}
	if n := remoteLen(a.r); n != 0 {
		t.Fatalf("%d remote requests still tracked", n)
	}
	rec, err := b.h.Store.Channel(context.Background(), ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != 0 {
		t.Fatalf("channel paid %d after a failed request", rec.Paid)
	}
	// The holder goes away: the payer is offline again, at once.
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := stalled.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.r.RequestPayment(context.Background(), request(dev.ID, prov.ID, ch, 1000, l)); !errors.Is(err, channels.ErrDeviceOffline) {
		t.Fatalf("after the holder left: %v, want ErrDeviceOffline", err)
	}
	select {
	case id := <-l.ch:
		t.Fatalf("outcome %d heard for requests that failed", id)
	default:
	}
}

// BenchmarkLocalRequest measures a payment request (sent over the device's
// session and read by the device, then cancelled) for a payer with a local session, straight to
// the channel manager and through the router: the router's local path adds
// one directory lookup.
func BenchmarkLocalRequest(b *testing.B) {
	url := func() string {
		ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(ns.Close)
		return ns.ClientURL()
	}()
	chain := chantest.NewFakeChain(100)
	var dir *session.Directory
	h := chantest.NewHarness(b, chain, func(c *channels.Config) { dir = c.Sessions.(*session.Directory) })
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	r := newRouter(b, newRelay(b, nc, 0), "a", h.Ch, dir, h.Store)
	b.Cleanup(func() { _ = r.Close() })
	prov := h.Enrol(hub.RolePayer, hub.RoleProvider)
	dev := h.Enrol(hub.RolePayer)
	ch := dev.Open(chain, 100_000, 1000)
	l := newListener()
	req := request(dev.ID, prov.ID, ch, 1000, l)
	for _, c := range []struct {
		name string
		ch   interface {
			RequestPayment(context.Context, hub.PaymentRequest) (uint64, error)
			CancelPayment(uint64)
		}
	}{{"manager", h.Ch}, {"router", r}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				id, err := c.ch.RequestPayment(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				// Wait for the device to get it, so the session's send
				// queue never overflows.
				<-dev.In
				c.ch.CancelPayment(id)
			}
		})
	}
}

// The holder serves one payment request id once: a retry of a request in
// flight gets the same answer and asks the device nothing more, a retry
// after the device answered is refused as served, and the outcome is sent
// again until the asking instance acknowledges it. A request that reaches
// the holder past its deadline is not served.
func TestPaymentRequestServedOnce(t *testing.T) {
	url := startNATS(t)
	chain := chantest.NewFakeChain(100)
	b := newInstance(t, url, "b", chain)
	prov := b.h.Enrol(hub.RolePayer, hub.RoleProvider)
	dev := b.h.Enrol(hub.RolePayer)
	waitRouted(t, b.r, dev.ID, true)
	ch := dev.Open(chain, 100_000, 1000)

	// The asking instance "o" drops the first outcome unacknowledged.
	origin := connect(t, url)
	outcomes := make(chan outcomeMsg, 4)
	heard := 0
	if _, err := origin.Subscribe(b.r.relay.instSubject("o", "outcome"), func(m *nats.Msg) {
		var om outcomeMsg
		if err := json.Unmarshal(m.Data, &om); err != nil {
			t.Error(err)
		}
		outcomes <- om
		if heard++; heard > 1 {
			_ = m.Respond(nil)
		}
	}); err != nil {
		t.Fatal(err)
	}
	ask := func(id uint64, amount msat.Amount) payReply {
		t.Helper()
		body, err := json.Marshal(payMsg{Origin: "o", OriginID: id, Payer: dev.ID, Payee: prov.ID, Channel: ch.Op,
			Amount: amount, EventCount: 1, Memo: "1 event"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := origin.Request(b.r.relay.devSubject(dev.ID, "pay"), body, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep payReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Error != "" || rep.Offline || rep.ID == 0 {
			t.Fatalf("reply %+v", rep)
		}
		return rep
	}
	id := remoteBit | 42
	first, retry := ask(id, 1000), ask(id, 1000)
	if retry.ID != first.ID || retry.Served || first.Served {
		t.Fatalf("first %+v, retry in flight %+v", first, retry)
	}
	pr, ack := payRequested(t, dev, ch)
	if pr.ReqID != first.ID {
		t.Fatalf("device asked for request %d, the holder answered %d", pr.ReqID, first.ID)
	}
	for range 2 { // the dropped one and the resend
		select {
		case om := <-outcomes:
			if om.OriginID != id || string(om.Receipt) != string(ack.Receipt) {
				t.Fatalf("outcome %+v", om)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("outcome not sent again after it was not acknowledged")
		}
	}
	if late := ask(id, 1000); !late.Served || late.ID != first.ID {
		t.Fatalf("retry after the payment: %+v, want served", late)
	}
	// A request the holder gets only after its origin stopped waiting is
	// not served: the device is not asked.
	body, err := json.Marshal(payMsg{Origin: "o", OriginID: remoteBit | 44, Payer: dev.ID, Payee: prov.ID, Channel: ch.Op,
		Amount: 3000, EventCount: 1, Deadline: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	late, err := origin.Request(b.r.relay.devSubject(dev.ID, "pay"), body, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var lateRep payReply
	if err := json.Unmarshal(late.Data, &lateRep); err != nil || lateRep.Error == "" || lateRep.ID != 0 {
		t.Fatalf("request past its deadline answered %+v (%v), want refused", lateRep, err)
	}
	// The device's next request is a new one: nothing of id, nor the
	// late one, came between.
	ask(remoteBit|43, 2000)
	if pr := chantest.Expect[*wire.PaymentRequest](dev); pr.Amount != 2000 {
		t.Fatalf("device asked for %d msat, want the new request's 2000", pr.Amount)
	}
	rec, err := b.h.Store.Channel(context.Background(), ch.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != 1000 || rec.Seq != 1 {
		t.Fatalf("channel paid %d at seq %d, want 1000 at 1", rec.Paid, rec.Seq)
	}
}
