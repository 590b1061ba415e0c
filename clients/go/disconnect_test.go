package m2mclient_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// boundary is one place a connection drops: with or right after the k-th
// m2mhub message the device sends (send) or receives.
type boundary struct {
	send   bool
	k      int
	before bool
}

func (b boundary) String() string {
	dir, when := "recv", "after"
	if b.send {
		dir = "send"
	}
	if b.before {
		when = "with"
	}
	return fmt.Sprintf("%s-%d-%s", dir, b.k, when)
}

// boundaries lists every boundary of an exchange in which the device sends
// sent and receives received messages.
func boundaries(sent, received int) []boundary {
	var bs []boundary
	for _, send := range []bool{true, false} {
		n := received
		if send {
			n = sent
		}
		for k := 1; k <= n; k++ {
			bs = append(bs, boundary{send, k, true}, boundary{send, k, false})
		}
	}
	return bs
}

// disconnectWorld is one device (its session drops where told) and one
// provider on a hub with real stores, and the test's record of what was
// acknowledged.
type disconnectWorld struct {
	h      *hubtest.Hub
	fault  *m2mclient.Fault
	sess   *m2mclient.Session
	dev    *m2mclient.Device
	devID  string
	prov   *m2mclient.Provider
	provID string
	ch     *m2mclient.Channel
	// acked holds the memo of every payment the device's Pay returned
	// as acknowledged; n numbers the payments.
	acked map[string]bool
	n     int
}

func newDisconnectWorld(t *testing.T) *disconnectWorld {
	// A capture the device never answers is charged on credit after
	// CaptureTimeout; a short one keeps the trial quick.
	h := hubtest.Start(t, hubtest.Config{Channels: func(c *hub.ChannelsConfig) { c.CaptureTimeout = time.Second }})
	w := &disconnectWorld{h: h, fault: new(m2mclient.Fault), acked: make(map[string]bool)}
	key, devID := h.EnrolDevice(t, hub.RolePayer)
	w.devID = devID
	w.sess = h.Dial(t, key, m2mclient.WithFault(w.fault))
	w.dev = h.NewDevice(t, w.sess, key, m2mclient.DeviceConfig{AutoAuthorize: true})
	_, provID, provSess := enrol(t, h, hub.RoleProvider)
	w.provID = provID
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

// memo names the next payment.
func (w *disconnectWorld) memo(what string) string {
	w.n++
	return fmt.Sprintf("%d %s", w.n, what)
}

// pay pays within d and records an acknowledged payment.
func (w *disconnectWorld) pay(ctx context.Context, what string) error {
	memo := w.memo(what)
	_, err := w.dev.Pay(ctx, w.ch.ID, w.provID, 1_000, memo)
	if err == nil {
		w.acked[memo] = true
	}
	return err
}

// settle waits for the device to be back, pays once more (which resolves a
// payment left pending) and checks that device and hub agree: same seq and
// paid, nothing pending, every acknowledged payment in the hub's receipts
// exactly once, no payment twice, and the receipts adding up to paid.
func (w *disconnectWorld) settle(t *testing.T, what string) {
	t.Helper()
	ctx := t.Context()
	w.h.WaitSession(t, w.devID)
	// The first attempts may still meet the dropped connection; each
	// failed one is resolved by the next.
	var err error
	for range 50 {
		if err = w.pay(ctx, "after "+what); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: pay after reconnect: %v", what, err)
	}
	// A message the hub sent to the dropped session before it noticed
	// (a HoldClosed) is recovered by the resynchronisation.
	if err := w.dev.Sync(ctx); err != nil {
		t.Fatalf("%s: sync: %v", what, err)
	}
	rec := hubState(t, w.h, w.ch)
	got := deviceChannel(t, w.dev, w.ch)
	if got.Seq != rec.Seq || got.Paid != rec.Paid {
		t.Fatalf("%s: device at seq %d paid %d, hub at seq %d paid %d",
			what, got.Seq, uint64(got.Paid), rec.Seq, uint64(rec.Paid))
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
	var sum lnwire.MilliSatoshi
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
	for memo := range w.acked {
		if seen[memo] != 1 {
			t.Fatalf("%s: acknowledged payment %q lost", what, memo)
		}
	}
	if sum != rec.Paid {
		t.Fatalf("%s: receipts add up to %d msat, channel paid %d", what, uint64(sum), uint64(rec.Paid))
	}
	// Holds: what the device reserves is what the hub holds active.
	holds, err := w.h.Store().Holds(ctx, w.ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	var active lnwire.MilliSatoshi
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

// drop runs one exchange with the connection dropping at b, then settles.
func (w *disconnectWorld) drop(t *testing.T, name string, b boundary, exchange func(ctx context.Context)) {
	t.Helper()
	what := name + "/" + b.String()
	w.fault.Arm(b.send, b.k, b.before)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	exchange(ctx)
	cancel()
	if !w.fault.Fired() {
		t.Fatalf("%s: the connection never dropped", what)
	}
	w.settle(t, what)
}

// TestDisconnectEveryBoundary drops the device's connection with and right
// after every message of each exchange, in both directions, reconnects, and
// checks that device and hub agree with nothing lost or doubled, and that
// the device pays again.
func TestDisconnectEveryBoundary(t *testing.T) {
	w := newDisconnectWorld(t)
	w.settle(t, "start")

	t.Run("Pay", func(t *testing.T) {
		for _, b := range boundaries(1, 1) {
			w.drop(t, "pay", b, func(ctx context.Context) { _ = w.pay(ctx, "pay "+b.String()) })
		}
	})
	t.Run("Capture", func(t *testing.T) {
		// PaymentRequest in, Pay out, PayAck in.
		for _, b := range boundaries(1, 2) {
			id, err := w.prov.RequestHold(t.Context(), w.devID, 50_000, time.Hour, "session")
			if err != nil {
				t.Fatal(err)
			}
			w.drop(t, "capture", b, func(ctx context.Context) {
				if err := w.prov.Capture(ctx, id, 2_000, "capture "+b.String()); err != nil {
					t.Fatal(err)
				}
				hubtest.WaitFor(t, 5*time.Second, "fault", w.fault.Fired)
			})
			w.release(t, id)
			w.settle(t, "capture released "+b.String())
		}
	})
	t.Run("Hold", func(t *testing.T) {
		// HoldRequest in, HoldAuthorize out.
		for _, b := range boundaries(1, 1) {
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
		for _, b := range boundaries(0, 1) {
			id, err := w.prov.RequestHold(t.Context(), w.devID, 50_000, time.Hour, "release")
			if err != nil {
				t.Fatal(err)
			}
			w.drop(t, "release", b, func(ctx context.Context) {
				if err := w.prov.Release(ctx, id); err != nil {
					t.Fatal(err)
				}
				hubtest.WaitFor(t, 5*time.Second, "fault", w.fault.Fired)
			})
		}
	})
	t.Run("Open", func(t *testing.T) {
		// OpenChannel out, ChannelOffer in; the offer the device did not
		// get is simply not funded, and the device opens again.
		for _, b := range boundaries(1, 1) {
			w.drop(t, "open", b, func(ctx context.Context) {
				_, _ = w.dev.OpenChannel(ctx, 50_000, w.h.Height(t)+hubtest.DefaultExpiryDelta)
			})
		}
	})
}
