package m2mclient_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/msgfault"
)

// boundary is one place a connection drops: with or right after the k-th
// m2mhub message one side sends (send) or receives; the device's side
// unless hub.
type boundary struct {
	hub    bool
	send   bool
	k      int
	before bool
}

func (b boundary) String() string {
	side, dir, when := "dev", "recv", "after"
	if b.hub {
		side = "hub"
	}
	if b.send {
		dir = "send"
	}
	if b.before {
		when = "with"
	}
	return fmt.Sprintf("%s-%s-%d-%s", side, dir, b.k, when)
}

// boundaries lists every boundary of an exchange in which the device sends
// sent and receives received messages, on the device's side.
func boundaries(sent, received int) []boundary { return sideBoundaries(false, sent, received) }

// hubBoundaries is boundaries on the hub's side: there the hub receives
// what the device sent and sends what it received.
func hubBoundaries(sent, received int) []boundary { return sideBoundaries(true, received, sent) }

func sideBoundaries(hubSide bool, sent, received int) []boundary {
	var bs []boundary
	for _, send := range []bool{true, false} {
		n := received
		if send {
			n = sent
		}
		for k := 1; k <= n; k++ {
			bs = append(bs, boundary{hubSide, send, k, true}, boundary{hubSide, send, k, false})
		}
	}
	return bs
}

// disconnectWorld is one device (its session drops where told, on its side
// or on the hub's) and one provider on a hub with real stores, a regtest
// chain and session cosigners, and the test's record of what was
// acknowledged.
type disconnectWorld struct {
	h        *hubtest.Hub
	st       *hubtest.Settling
	settler  *settler.Service
	operator *btcec.PrivateKey
	// fault drops the device's connection on the device's side,
	// hubFault on the hub's side (only the device's session).
	fault    *msgfault.Point
	hubFault *msgfault.Point
	mu       sync.Mutex
	hubHook  func(deviceID string, send bool, msg wire.Message) (bool, bool)

	key    *btcec.PrivateKey
	sess   *m2mclient.Session
	dev    *m2mclient.Device
	devID  string
	prov   *m2mclient.Provider
	provID string
	ch     *m2mclient.Channel
	// acked holds, by channel, the memo of every payment the device's
	// Pay returned as acknowledged; n numbers the payments.
	acked map[btcwire.OutPoint]map[string]bool
	n     int
}

func newDisconnectWorld(t *testing.T) *disconnectWorld {
	w := &disconnectWorld{
		fault: new(msgfault.Point), hubFault: new(msgfault.Point), operator: hubtest.NewKey(t),
		acked: make(map[btcwire.OutPoint]map[string]bool),
	}
	// A capture the device never answers is charged on credit after
	// CaptureTimeout; a short one keeps the trial quick. Every offer a
	// dropped Open leaves stays pending (until PendingTimeout), so the
	// trial allows more than a device normally may.
	w.h, w.st = hubtest.StartSettling(t, hubtest.Config{
		Channels: func(c *channels.Config) {
			c.CaptureTimeout = time.Second
			c.MaxPendingOpens = 20
		},
		Server:      func(c *session.Config) { c.Fault = w.hubDrop },
		OperatorKey: w.operator.PubKey(),
	})
	h := w.h
	w.settler = w.st.NewSettlement(t, func(c *settler.Config) { c.RoundTimeout = time.Second })
	w.key, w.devID = h.EnrolDevice(t, hub.RolePayer)
	w.restoreHubHook()
	w.sess = h.Dial(t, w.key, m2mclient.WithFault(w.fault))
	w.dev = h.NewDevice(t, w.sess, w.key, m2mclient.DeviceConfig{AutoAuthorize: true})
	_, provID, provSess := enrol(t, h, hub.RoleProvider)
	w.provID = provID
	if _, err := h.Registry().SetPayout(t.Context(), provID, hubtest.P2TR(t), "operator"); err != nil {
		t.Fatal(err)
	}
	prov, err := m2mclient.NewProvider(provSess, m2mclient.ProviderConfig{HubKey: h.PubKey(), Logger: h.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Close() })
	w.prov = prov
	w.ch = h.OpenChannel(t, w.dev, 1_000_000)
	go func() {
		for range prov.Receipts() {
		}
	}()
	return w
}

// hubDrop is the hub's ServerConfig.Fault: whatever hook the case set.
func (w *disconnectWorld) hubDrop(deviceID string, send bool, msg wire.Message) (bool, bool) {
	w.mu.Lock()
	f := w.hubHook
	w.mu.Unlock()
	if f == nil {
		return false, false
	}
	return f(deviceID, send, msg)
}

func (w *disconnectWorld) setHubHook(f func(string, bool, wire.Message) (bool, bool)) {
	w.mu.Lock()
	w.hubHook = f
	w.mu.Unlock()
}

// memo names the next payment.
func (w *disconnectWorld) memo(what string) string {
	w.n++
	return fmt.Sprintf("%d %s", w.n, what)
}

// pay pays amount on the current channel within ctx and records an
// acknowledged payment.
func (w *disconnectWorld) pay(ctx context.Context, what string, amount msat.Amount) error {
	memo := w.memo(what)
	_, err := w.dev.Pay(ctx, w.ch.ID, w.provID, amount, memo)
	if err == nil {
		if w.acked[w.ch.ID] == nil {
			w.acked[w.ch.ID] = make(map[string]bool)
		}
		w.acked[w.ch.ID][memo] = true
	}
	return err
}

// payAgain pays once the device is back, retrying while the first
// attempts still meet the dropped connection (each failed one is resolved
// by the next).
func (w *disconnectWorld) payAgain(t *testing.T, what string, amount msat.Amount) {
	t.Helper()
	w.h.WaitSession(t, w.devID)
	var err error
	for range 50 {
		if err = w.pay(t.Context(), "after "+what, amount); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: pay after reconnect: %v", what, err)
}

// settle waits for the device to be back, pays once more (which resolves a
// payment left pending) and checks that device and hub agree.
func (w *disconnectWorld) settle(t *testing.T, what string) {
	t.Helper()
	w.payAgain(t, what, 1_000)
	// A message the hub sent to the dropped session before it noticed
	// (a HoldClosed) is recovered by the resynchronisation.
	if err := w.dev.Sync(t.Context()); err != nil {
		t.Fatalf("%s: sync: %v", what, err)
	}
	w.agree(t, what)
}

// agree checks that device and hub agree on the current channel: same
// seq and paid, nothing pending, every acknowledged payment in the hub's
// receipts exactly once, no payment twice, the receipts adding up to paid,
// and what the device reserves what the hub holds active.
func (w *disconnectWorld) agree(t *testing.T, what string) {
	t.Helper()
	ctx := t.Context()
	rec := hubState(t, w.h, w.ch)
	got := deviceChannel(t, w.dev, w.ch)
	if got.Seq != rec.Seq || got.Paid != rec.Paid {
		t.Fatalf("%s: device at seq %d paid %d, hub at seq %d paid %d",
			what, got.Seq, uint64(got.Paid), rec.Seq, uint64(rec.Paid))
	}
	if got.Paid > msat.FromSatoshis(got.Capacity) {
		t.Fatalf("%s: paid %d msat of a %d sat channel", what, uint64(got.Paid), int64(got.Capacity))
	}
	b, err := w.dev.Balance(w.ch.ID)
	if err != nil || b.Unconfirmed != 0 {
		t.Fatalf("%s: balance %+v, %v", what, b, err)
	}
	raws, err := w.h.Store().Receipts(ctx, w.ch.ID, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]int)
	var sum msat.Amount
	for _, raw := range raws {
		var r channel.Receipt
		if err := r.UnmarshalBinary(raw); err != nil {
			t.Fatal(err)
		}
		seen[r.Memo]++
		sum += r.Amount
		if seen[r.Memo] > 1 {
			t.Fatalf("%s: payment %q made twice", what, r.Memo)
		}
	}
	for memo := range w.acked[w.ch.ID] {
		if seen[memo] != 1 {
			t.Fatalf("%s: acknowledged payment %q lost", what, memo)
		}
	}
	if sum != rec.Paid {
		t.Fatalf("%s: receipts add up to %d msat, channel paid %d", what, uint64(sum), uint64(rec.Paid))
	}
	holds, err := w.h.Store().Holds(ctx, w.ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	var active msat.Amount
	for _, hd := range holds {
		if hd.Status == hub.HoldActive {
			active += hd.Remaining()
		}
	}
	if b.Reserved != active {
		t.Fatalf("%s: device reserves %d msat, hub holds %d msat active", what, uint64(b.Reserved), uint64(active))
	}
}

// release releases hold id and waits until the hub has closed it.
func (w *disconnectWorld) release(t *testing.T, id m2mclient.HoldID) {
	t.Helper()
	if err := w.prov.Release(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, 5*time.Second, "hold closed at the hub", func() bool {
		hd, err := w.h.Store().Hold(t.Context(), id)
		return err == nil && hd.Status != hub.HoldActive
	})
}

// point is the fault point of b's side.
func (w *disconnectWorld) point(b boundary) *msgfault.Point {
	if b.hub {
		return w.hubFault
	}
	return w.fault
}

// dropAt runs one exchange with the connection dropping at b and returns
// the case's name; the caller checks the outcome.
func (w *disconnectWorld) dropAt(t *testing.T, name string, b boundary, exchange func(ctx context.Context)) string {
	t.Helper()
	what := name + "/" + b.String()
	p := w.point(b)
	p.Arm(b.send, b.k, b.before)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	exchange(ctx)
	cancel()
	if !p.Fired() {
		t.Fatalf("%s: the connection never dropped", what)
	}
	p.Arm(false, 0, false)
	return what
}

// drop runs one exchange with the connection dropping at b, then settles.
func (w *disconnectWorld) drop(t *testing.T, name string, b boundary, exchange func(ctx context.Context)) {
	t.Helper()
	w.settle(t, w.dropAt(t, name, b, exchange))
}

// waitFired waits for b's fault to fire, for exchanges the hub or the
// provider starts.
func (w *disconnectWorld) waitFired(t *testing.T, b boundary) {
	t.Helper()
	hubtest.WaitFor(t, 5*time.Second, "fault "+b.String(), w.point(b).Fired)
}

// TestDisconnectEveryBoundary drops the device's connection with and right
// after every message of each exchange, in both directions, on the
// device's side and on the hub's, reconnects, and checks that device and
// hub agree with nothing lost or doubled, money conserved (on chain too),
// and that the device pays, closes and settles again.
func TestDisconnectEveryBoundary(t *testing.T) {
	w := newDisconnectWorld(t)
	w.settle(t, "start")

	payCase := func(b boundary) {
		w.drop(t, "pay", b, func(ctx context.Context) { _ = w.pay(ctx, "pay "+b.String(), 1_000) })
	}
	captureCase := func(b boundary) {
		id, err := w.prov.RequestHold(t.Context(), w.devID, 50_000, time.Hour, "session")
		if err != nil {
			t.Fatal(err)
		}
		w.drop(t, "capture", b, func(ctx context.Context) {
			if err := w.prov.Capture(ctx, id, 2_000, "capture "+b.String()); err != nil {
				t.Fatal(err)
			}
			w.waitFired(t, b)
		})
		w.release(t, id)
		w.settle(t, "capture released "+b.String())
	}
	t.Run("Pay", func(t *testing.T) {
		// Pay out, PayAck in.
		for _, b := range append(boundaries(1, 1), hubBoundaries(1, 1)...) {
			payCase(b)
		}
	})
	t.Run("Capture", func(t *testing.T) {
		// PaymentRequest in, Pay out, PayAck in.
		for _, b := range append(boundaries(1, 2), hubBoundaries(1, 2)...) {
			captureCase(b)
		}
	})
	t.Run("Hold", func(t *testing.T) {
		// HoldRequest in, HoldAuthorize out.
		for _, b := range append(boundaries(1, 1), hubBoundaries(1, 1)...) {
			var id m2mclient.HoldID
			var err error
			w.drop(t, "hold", b, func(ctx context.Context) {
				id, err = w.prov.RequestHold(ctx, w.devID, 50_000, time.Hour, "hold "+b.String())
			})
			if err == nil {
				w.release(t, id)
			}
			w.settle(t, "hold released "+b.String())
		}
	})
	t.Run("Release", func(t *testing.T) {
		// HoldClosed in.
		for _, b := range append(boundaries(0, 1), hubBoundaries(0, 1)...) {
			id, err := w.prov.RequestHold(t.Context(), w.devID, 50_000, time.Hour, "release")
			if err != nil {
				t.Fatal(err)
			}
			w.drop(t, "release", b, func(ctx context.Context) {
				if err := w.prov.Release(ctx, id); err != nil {
					t.Fatal(err)
				}
				w.waitFired(t, b)
			})
		}
	})
	t.Run("Open", func(t *testing.T) {
		// OpenChannel out, ChannelOffer in; the offer the device did not
		// get is simply not funded, and the device opens again (with
		// the same terms the hub answers with that same offer).
		for _, b := range append(boundaries(1, 1), hubBoundaries(1, 1)...) {
			w.drop(t, "open", b, func(ctx context.Context) {
				_, _ = w.dev.OpenChannel(ctx, 50_000, w.h.Height(t)+hubtest.DefaultExpiryDelta)
			})
		}
	})
	t.Run("Enrol", func(t *testing.T) {
		// Enrol out (before Init), the hub's Init in.
		for _, b := range append(boundaries(1, 0), hubBoundaries(0, 1)...) {
			w.enrolCase(t, b)
		}
	})
	t.Run("Settle", func(t *testing.T) {
		// SettleProposal in, SettleSign out, SettleDone in.
		for _, b := range append(boundaries(1, 2), hubBoundaries(1, 2)...) {
			w.settleCase(t, b)
		}
	})
	t.Run("Fund", func(t *testing.T) {
		// ChannelFunded out, ChannelReady in.
		for _, b := range append(boundaries(1, 1), hubBoundaries(1, 1)...) {
			w.fundCase(t, b)
		}
	})
	t.Run("Close", func(t *testing.T) {
		// CloseRequest out, CloseProposal in, CloseSign out,
		// ChannelClosed in.
		for _, b := range append(boundaries(2, 2), hubBoundaries(2, 2)...) {
			w.closeCase(t, b)
		}
	})
}
