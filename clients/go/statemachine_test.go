package m2mclient_test

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Sizes of the state machine run. The default run (25 checks of ~30
// steps, every step followed by the full invariant check against the hub's
// store and the device's records) takes well under a minute; run longer
// with e.g.
//
//	go test ./clients/go -run TestChannelStateMachine -rapid.checks=200 -rapid.steps=60
const (
	smDefaultChecks = 25
	smCapacity      = btcutil.Amount(200_000)
	// smReopenBelow: a check starts on a fresh channel when the current
	// one has less than this left, so "fill the channel" steps do not
	// leave every later check with nothing to pay.
	smReopenBelow = msat.Amount(20_000_000)
	smMaxHolds    = 3
	smWait        = 10 * time.Second
)

// smDialTimeout bounds each reconnection attempt. A hub that is stopping
// tells its sessions first and closes its listener after, so a session
// reconnecting at once can complete the noise handshake with the listener
// that is going away and then wait for an Init that never comes; with the
// client's default 10 s per attempt, that alone outlasted WaitSession
// after a restart (1 run in about 40).
var smDialTimeout = m2mclient.WithDialTimeout(3 * time.Second)

// TestChannelStateMachine drives one device and one provider against the
// real hub with random sequences of payments (sub-satoshi, ordinary, over
// capacity), holds (request, capture, over-capture, release), attacks on the
// wire (replayed, reordered and badly signed states), reconnects and hub
// restarts, and after every step checks invariants I1–I5 and conservation
// against the hub's store and the device's own records.
//
// The channel is funded once and reused across rapid's checks (funding costs
// about a second of mining and polling); a check opens a new one only when
// the current one runs low. Each check starts its model from the durable
// state, so a step that corrupted it shows up in the next check too.
func TestChannelStateMachine(t *testing.T) {
	setDefault("rapid.checks", smDefaultChecks)
	h := hubtest.Start(t, hubtest.Config{})
	w := newWorld(t, h)
	start := time.Now()
	rapid.Check(t, func(rt *rapid.T) {
		w.begin(rt)
		rt.Repeat(map[string]func(*rapid.T){
			"":            w.check,
			"Pay":         w.pay,
			"RequestHold": w.requestHold,
			"Capture":     w.capture,
			"Release":     w.release,
			"CaptureOff":  w.captureOffline,
			"ReplayOld":   w.replayOld,
			"OutOfOrder":  w.outOfOrder,
			"WrongSig":    w.wrongSig,
			"Reconnect":   w.reconnectStep,
			"HubRestart":  w.hubRestart,
		})
		w.end(rt)
	})
	t.Logf("%d steps in %v on %d channel(s): %v", w.steps(), time.Since(start).Round(time.Millisecond), w.opens, w.counts)
}

// setDefault sets a test flag unless the command line set it, so rapid's
// defaults (100 checks) fit a run with real btcd and restarts while
// -rapid.checks still overrides it.
func setDefault(name string, v int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if !set {
		_ = flag.Set(name, strconv.Itoa(v))
	}
}

// mHold is the model of one active hold. captured is the hub's count,
// devCaptured the device's: they differ by captures charged on credit while
// the device was offline, until the device's next connection, when it
// resynchronises with the hub (docs/protocol.md §4) and adopts the hub's
// captured amounts.
type mHold struct {
	max, captured, devCaptured msat.Amount
}

func (h mHold) left() msat.Amount { return h.max - h.captured }

// world is the system under test (hub, device, provider) and the model of
// its current channel. Both survive across rapid's checks.
type world struct {
	t      *testing.T
	h      *hubtest.Hub
	devKey *btcec.PrivateKey
	devID  string
	dir    string
	sess   *m2mclient.Session
	dev    *m2mclient.Device

	provID   string
	provSess *m2mclient.Session
	prov     *m2mclient.Provider

	ch     *m2mclient.Channel // the current channel
	out    *channel.Output
	opens  int
	counts map[string]int

	// The model of the current channel.
	seq   uint64
	paid  msat.Amount
	owed  msat.Amount // charged on credit, not signed for
	holds map[m2mclient.HoldID]*mHold
	// paidAt[k] is Paid after state k, for replays of old states.
	paidAt []msat.Amount
	// storeSeq and storeSum are how far the store's receipts were
	// checked and what they add up to.
	storeSeq uint64
	storeSum msat.Amount
	// lastSeq is the highest Seq the store ever showed (I4).
	lastSeq uint64
	// unfinished is set while a check runs; begin finding it set knows
	// the previous check failed half-way.
	unfinished bool
	// staleRoom is the most room the device sees on a channel it
	// abandoned: fill cannot pay what the hub counts as owed, so the
	// device, which never hears of that credit, still sees it free.
	staleRoom msat.Amount
}

func newWorld(t *testing.T, h *hubtest.Hub) *world {
	w := &world{t: t, h: h, dir: t.TempDir(), counts: map[string]int{}}
	w.devKey, w.devID = h.EnrolDevice(t, hub.RolePayer)
	var provKey *btcec.PrivateKey
	provKey, w.provID = h.EnrolDevice(t, hub.RoleProvider)
	w.provSess = h.Dial(t, provKey, smDialTimeout)
	var err error
	w.prov, err = m2mclient.NewProvider(w.provSess, m2mclient.ProviderConfig{HubKey: h.PubKey(), Logger: h.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.prov.Close() })
	w.connect(t)
	return w
}

// connect dials the device's session and builds its Device on the same
// directory, as a rebooted device would.
func (w *world) connect(tb hubtest.TB) {
	w.sess = w.h.Dial(w.t, w.devKey, smDialTimeout)
	w.dev = w.h.NewDevice(w.t, w.sess, w.devKey, m2mclient.DeviceConfig{Dir: w.dir, AutoAuthorize: true})
	w.h.WaitSession(tb, w.devID)
}

// resynced moves the model's device view to the hub's after a connection:
// the device asked for its channel's state at connect and adopts the
// holds' captured amounts, on its own goroutines, so this waits for them.
func (w *world) resynced(rt *rapid.T) {
	for _, h := range w.holds {
		h.devCaptured = h.captured
	}
	w.waitDevice(rt)
}

// disconnect closes the Device and its session.
func (w *world) disconnect() {
	_ = w.dev.Close()
	_ = w.sess.Close()
}

func (w *world) steps() int {
	n := 0
	for _, c := range w.counts {
		n += c
	}
	return n
}

// begin starts a check: on a fresh channel if the current one runs low,
// with the model read back from the hub's store. After a failed check it
// starts on a fresh channel too (see recover), so that rapid, shrinking the
// failure, replays each shorter sequence on a world the failure did not
// leave behind.
func (w *world) begin(rt *rapid.T) {
	fresh := false
	if w.unfinished {
		w.recover(rt)
		fresh = true
	}
	w.unfinished = true
	if w.ch == nil || fresh || w.out.Params().MaxPaid()-w.paid < smReopenBelow {
		if w.ch != nil {
			w.fill(rt)
		}
		t0 := time.Now()
		w.ch = w.h.OpenChannel(w.t, w.dev, smCapacity)
		w.opens++
		w.t.Logf("channel %d opened in %v", w.opens, time.Since(t0).Round(time.Millisecond))
		var err error
		w.out, err = channel.NewOutput(channel.Params{
			DeviceKey: w.devKey.PubKey(), HubKey: w.hubChanKey(rt), Capacity: w.ch.Capacity, Expiry: w.ch.Expiry,
		})
		if err != nil {
			rt.Fatal(err)
		}
		w.seq, w.paid, w.owed, w.paidAt = 0, 0, 0, []msat.Amount{0}
		w.storeSeq, w.storeSum, w.lastSeq = 0, 0, 0
	}
	rec := w.record(rt)
	if rec.Seq != w.seq || rec.Paid != w.paid || rec.Owed != w.owed {
		rt.Fatalf("check starts on stored state %d/%d msat owed %d, the last check left %d/%d owed %d",
			rec.Seq, rec.Paid, rec.Owed, w.seq, w.paid, w.owed)
	}
	w.holds = map[m2mclient.HoldID]*mHold{}
}

// fill pays what is left of the current channel before it is abandoned:
// a hold must never find room on an old channel, where the model does not
// look for it.
func (w *world) fill(rt *rapid.T) {
	left := w.out.Params().MaxPaid() - w.paid
	if left <= w.owed {
		// The hub already counts the channel as full; the device does
		// not (see staleRoom).
		w.staleRoom = max(w.staleRoom, w.devFree())
		return
	}
	if _, err := w.dev.Pay(rt.Context(), w.ch.ID, w.provID, left, "fill"); err != nil {
		rt.Fatalf("filling the channel with %d msat: %v", left, err)
	}
	w.applied(left)
	w.owed = 0
	w.check(rt)
}

// end releases the check's holds, so the next check starts without any.
func (w *world) end(rt *rapid.T) {
	for _, id := range slices.Collect(maps.Keys(w.holds)) {
		w.releaseHold(rt, id)
	}
	w.check(rt)
	w.unfinished = false
}

// recover follows a check that failed half-way: its holds are still active
// and its model is not the store's. It releases every active hold of the
// channel, takes the model from the store and lets begin fill the channel
// and open a fresh one (the replays need the history of Paid, which only a
// fresh channel gives again).
func (w *world) recover(rt *rapid.T) {
	if w.ch == nil {
		return
	}
	w.t.Logf("the previous check failed; starting the next on a fresh channel")
	if !w.sess.Connected() {
		w.disconnect()
		w.connect(rt)
	}
	holds, err := w.h.Store().Holds(rt.Context(), w.ch.ID)
	if err != nil {
		rt.Fatal(err)
	}
	for _, h := range holds {
		if h.Status == hub.HoldActive {
			w.releaseHoldOnly(rt, m2mclient.HoldID(h.ID))
		}
	}
	rec := w.record(rt)
	w.seq, w.paid, w.owed, w.holds = rec.Seq, rec.Paid, rec.Owed, map[m2mclient.HoldID]*mHold{}
	w.storeSeq, w.storeSum = 0, 0
	w.waitDevice(rt)
}

// hubChanKey is the hub's key of the current channel, from its record.
func (w *world) hubChanKey(rt *rapid.T) *btcec.PublicKey {
	rec := w.record(rt)
	k, err := btcec.ParsePubKey(rec.HubKey[:])
	if err != nil {
		rt.Fatal(err)
	}
	return k
}

// record is the hub's durable record of the current channel.
func (w *world) record(rt *rapid.T) hub.ChannelRecord {
	rec, err := w.h.Store().Channel(rt.Context(), w.ch.ID)
	if err != nil {
		rt.Fatalf("store: %v", err)
	}
	return rec
}

func (w *world) reserved() msat.Amount {
	var r msat.Amount
	for _, h := range w.holds {
		r += h.left()
	}
	return r
}

// devReserved is what the device believes its holds reserve.
func (w *world) devReserved() msat.Amount {
	var r msat.Amount
	for _, h := range w.holds {
		r += h.max - h.devCaptured
	}
	return r
}

// owedAfter is the channel's Owed after a payment of amount: the hub counts
// every payment against service given on credit first.
func (w *world) owedAfter(amount msat.Amount) msat.Amount {
	return w.owed - min(w.owed, amount)
}

// payFits reports whether the hub has room for a payment of amount.
func (w *world) payFits(amount msat.Amount) bool {
	return w.paid+amount+w.owedAfter(amount)+w.reserved() <= w.out.Params().MaxPaid()
}

// devFree is what the device lets a new hold use. It differs from free
// while a capture charged on credit during an offline spell is still
// reserved on the device, until its reconnection's resync tells it the
// hub's captured amount (captureOffline reconnects at its end, so between
// steps the two views agree on the holds).
func (w *world) devFree() msat.Amount {
	used := w.paid + w.devReserved()
	if max := w.out.Params().MaxPaid(); used < max {
		return max - used
	}
	return 0
}

// free is what the hub lets a new hold use.
func (w *world) free() msat.Amount {
	used := w.paid + w.owed + w.reserved()
	if max := w.out.Params().MaxPaid(); used < max {
		return max - used
	}
	return 0
}

// applied moves the model by one acknowledged payment.
func (w *world) applied(amount msat.Amount) {
	w.seq++
	w.paid += amount
	w.paidAt = append(w.paidAt, w.paid)
}

// drawAmount draws a payment: sub-satoshi, ordinary, exactly what is
// free, just over it (the hub refuses), or over the channel's maximum
// (the device refuses to sign).
func drawAmount(rt *rapid.T, free, maxLeft msat.Amount) msat.Amount {
	switch k := rapid.IntRange(0, 99).Draw(rt, "kind"); {
	case k < 35:
		return msat.Amount(rapid.IntRange(1, 999).Draw(rt, "subsat"))
	case k < 75:
		return msat.Amount(rapid.Uint64Range(1_000, 2_000_000).Draw(rt, "msat"))
	case k < 80 && free > 0:
		return free
	case k < 92:
		return free + msat.Amount(rapid.Uint64Range(1, 5_000).Draw(rt, "over"))
	default:
		return maxLeft + msat.Amount(rapid.Uint64Range(1, 5_000).Draw(rt, "overmax"))
	}
}

func (w *world) pay(rt *rapid.T) {
	w.counts["Pay"]++
	maxLeft := w.out.Params().MaxPaid() - w.paid
	amount := drawAmount(rt, w.free(), maxLeft)
	if rapid.IntRange(0, 49).Draw(rt, "zero") == 0 {
		amount = 0
	}
	r, err := w.dev.Pay(rt.Context(), w.ch.ID, w.provID, amount, "rapid")
	var ce *m2mclient.ChannelError
	switch {
	case amount > maxLeft:
		if !errors.Is(err, channel.ErrOverCapacity) {
			rt.Fatalf("pay %d msat over the channel's maximum (%d left): %v", amount, maxLeft, err)
		}
	case amount == 0:
		if !errors.Is(err, m2mclient.ErrPolicy) {
			rt.Fatalf("pay of 0 msat: %v", err)
		}
	case !w.payFits(amount):
		if !errors.As(err, &ce) || ce.Code != m2mclient.CodeOverCapacity {
			rt.Fatalf("pay %d msat with %d free: %v", amount, w.free(), err)
		}
	default:
		if err != nil {
			rt.Fatalf("pay %d msat with %d free: %v", amount, w.free(), err)
		}
		if r.Seq != w.seq+1 || r.Paid != w.paid+amount || r.Amount != amount || r.Payee != w.provID || r.Channel != w.ch.ID {
			rt.Fatalf("receipt %+v for pay of %d msat on %d/%d", r, amount, w.seq, w.paid)
		}
		w.owed = w.owedAfter(amount)
		w.applied(amount)
		w.providerReceipt(rt, r.ID(), nil, amount)
	}
}

// providerReceipt waits for the provider's copy of the receipt with id (or,
// when id is nil, for the receipt of a capture of amount on hold) and
// returns it. Receipts of earlier steps are skipped.
func (w *world) providerReceipt(rt *rapid.T, id [32]byte, hold *m2mclient.HoldID, amount msat.Amount) *channel.Receipt {
	timeout := time.After(smWait)
	for {
		select {
		case r := <-w.prov.Receipts():
			if hold != nil && r.HoldID == [16]byte(*hold) && r.Amount == amount && r.Seq == w.seq+1 {
				return r
			}
			if hold == nil && r.ID() == id {
				return r
			}
		case <-timeout:
			rt.Fatalf("provider got no receipt (hold %v, %d msat)", hold, amount)
			return nil
		}
	}
}

func (w *world) requestHold(rt *rapid.T) {
	if len(w.holds) >= smMaxHolds {
		rt.Skip("enough holds")
	}
	w.counts["RequestHold"]++
	// The hub forwards what fits its count, the device authorises what
	// fits its own (it does not know of captures charged on credit).
	free := min(w.free(), w.devFree())
	var max msat.Amount
	if free > 0 && rapid.IntRange(0, 3).Draw(rt, "fits") > 0 {
		max = msat.Amount(rapid.Uint64Range(1, min(uint64(free), 30_000_000)).Draw(rt, "max"))
	} else {
		max = free + msat.Amount(rapid.Uint64Range(1, 1_000_000).Draw(rt, "overmax"))
	}
	id, err := w.prov.RequestHold(rt.Context(), w.devID, max, time.Hour, "rapid")
	if max <= w.staleRoom && w.devFree() <= w.staleRoom && errors.Is(err, m2mclient.ErrHoldRefused) {
		// The device authorised it on an abandoned channel that has
		// more room in its eyes (a tie is broken at random), where the
		// hub has none and refused it.
		return
	}
	if max > free {
		if !errors.Is(err, m2mclient.ErrHoldRefused) {
			rt.Fatalf("hold of %d msat with %d free: %v", max, free, err)
		}
		return
	}
	if err != nil {
		rt.Fatalf("hold of %d msat with %d free: %v", max, free, err)
	}
	st, err := w.h.Store().Hold(rt.Context(), id)
	if err != nil || st.Channel != w.ch.ID || st.Max != max || st.Status != hub.HoldActive {
		rt.Fatalf("stored hold %+v (%v), want active %d msat on %v", st, err, max, w.ch.ID)
	}
	w.holds[id] = &mHold{max: max}
}

func (w *world) drawHold(rt *rapid.T) m2mclient.HoldID {
	if len(w.holds) == 0 {
		rt.Skip("no hold")
	}
	ids := slices.SortedFunc(maps.Keys(w.holds), func(a, b m2mclient.HoldID) int {
		return slices.Compare(a[:], b[:])
	})
	return rapid.SampledFrom(ids).Draw(rt, "hold")
}

func (w *world) capture(rt *rapid.T) {
	id := w.drawHold(rt)
	w.counts["Capture"]++
	h := w.holds[id]
	var amount msat.Amount
	if h.left() > 0 && rapid.IntRange(0, 4).Draw(rt, "fits") > 0 {
		amount = msat.Amount(rapid.Uint64Range(1, uint64(h.left())).Draw(rt, "amount"))
	} else {
		amount = h.left() + msat.Amount(rapid.Uint64Range(1, 1_000).Draw(rt, "over"))
	}
	if err := w.prov.Capture(rt.Context(), id, amount, "rapid"); err != nil {
		rt.Fatal(err)
	}
	if amount > h.left() {
		select {
		case e := <-w.prov.Errors():
			if e.Hold != id || e.Err.Code != m2mclient.CodeHoldExceeded {
				rt.Fatalf("capture of %d msat, %d left: refused with %v", amount, h.left(), e)
			}
		case <-time.After(smWait):
			rt.Fatalf("capture of %d msat, %d left: no refusal", amount, h.left())
		}
		return
	}
	// The hub asks the device, the device pays against the hold, the
	// provider gets the receipt; the device records the state just
	// before the hub sends the provider its copy.
	r := w.providerReceipt(rt, [32]byte{}, &id, amount)
	if r.Paid != w.paid+amount {
		rt.Fatalf("capture receipt paid %d, want %d", r.Paid, w.paid+amount)
	}
	w.owed = w.owedAfter(amount)
	w.applied(amount)
	h.captured += amount
	h.devCaptured += amount
	w.waitDevice(rt)
}

// waitDevice waits until the device's records match the model (a capture
// is paid, a release heard, on the device's own goroutines).
func (w *world) waitDevice(rt *rapid.T) {
	deadline := time.Now().Add(smWait)
	for {
		b, err := w.dev.Balance(w.ch.ID)
		if err == nil && b.Paid == w.paid && b.Reserved == w.devReserved() && b.Unconfirmed == 0 {
			return
		}
		if time.Now().After(deadline) {
			rt.Fatalf("device balance %+v (%v), model paid %d reserved %d", b, err, w.paid, w.devReserved())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// captureOffline captures while the device is offline: the hub charges
// the capture on credit, up to its per-channel limit (I1), and tells the
// provider "credit-limit" past it.
func (w *world) captureOffline(rt *rapid.T) {
	id := w.drawHold(rt)
	h := w.holds[id]
	if h.left() == 0 {
		rt.Skip("hold used up")
	}
	w.counts["CaptureOffline"]++
	amount := msat.Amount(rapid.Uint64Range(1, min(uint64(h.left()), 2*uint64(channels.DefaultCreditLimit))).Draw(rt, "amount"))
	w.disconnect()
	hubtest.WaitFor(rt, smWait, "device session gone", func() bool {
		_, ok := w.h.Server().Session(w.devID)
		return !ok
	})
	if err := w.prov.Capture(rt.Context(), id, amount, "offline"); err != nil {
		rt.Fatal(err)
	}
	if w.owed+amount > channels.DefaultCreditLimit {
		select {
		case e := <-w.prov.Errors():
			if e.Hold != id || e.Err.Code != m2mclient.CodeCreditLimit {
				rt.Fatalf("offline capture of %d msat, owed %d: refused with %v", amount, w.owed, e)
			}
		case <-time.After(smWait):
			rt.Fatalf("offline capture of %d msat, owed %d: no credit-limit refusal", amount, w.owed)
		}
	} else {
		w.owed += amount
		h.captured += amount
		// Charged on credit: no receipt, only the stored Owed moves.
		hubtest.WaitFor(rt, smWait, "capture charged on credit", func() bool {
			return w.record(rt).Owed == w.owed
		})
	}
	w.connect(rt)
	w.resynced(rt)
}

func (w *world) release(rt *rapid.T) {
	id := w.drawHold(rt)
	w.counts["Release"]++
	w.releaseHold(rt, id)
}

func (w *world) releaseHold(rt *rapid.T, id m2mclient.HoldID) {
	w.releaseHoldOnly(rt, id)
	delete(w.holds, id)
	w.waitDevice(rt)
}

// releaseHoldOnly releases hold id and waits for the store to record it.
func (w *world) releaseHoldOnly(rt *rapid.T, id m2mclient.HoldID) {
	if err := w.prov.Release(rt.Context(), id); err != nil {
		rt.Fatal(err)
	}
	hubtest.WaitFor(rt, smWait, "hold released in the store", func() bool {
		st, err := w.h.Store().Hold(rt.Context(), id)
		return err == nil && st.Status == hub.HoldReleased
	})
}

// raw sends m on a raw connection of the device's key, which replaces the
// device's session, and returns the hub's refusal. The device reconnects
// afterwards, reloading its records, as a device that lost its session
// would.
func (w *world) raw(rt *rapid.T, m *wire.Pay) *wire.ChannelError {
	before := w.record(rt)
	rc := w.h.RawConn(rt, w.devKey, w.devID)
	rc.Send(m)
	ce, state := refusal(rt, rc)
	rc.Close()
	// A Pay refused for its seq comes after the hub's latest state, which
	// the device signed; no other refusal does.
	switch stale := ce.Code == wire.ChanStaleState || ce.Code == wire.ChanSeqGap; {
	case stale && (state == nil || state.Seq != w.seq || state.Paid != w.paid):
		rt.Fatalf("%s refusal preceded by state %+v, model at %d/%d", ce.Code, state, w.seq, w.paid)
	case !stale && state != nil:
		rt.Fatalf("%s refusal preceded by a channel state", ce.Code)
	}
	// A refused update changes nothing (I4).
	if after := w.record(rt); after.Seq != before.Seq || after.Paid != before.Paid ||
		after.DeviceSig != before.DeviceSig || after.Owed != before.Owed {
		rt.Fatalf("refused update changed the channel: %d/%d → %d/%d", before.Seq, before.Paid, after.Seq, after.Paid)
	}
	w.disconnect()
	w.connect(rt)
	w.resynced(rt)
	return ce
}

// refusal reads the hub's answer on rc, with the ChannelState the hub
// sends right before a "stale-state" or "seq-gap" refusal (docs/protocol.md
// §4), nil when none came. Notices the hub sends a device at any time
// (docs/protocol.md §2.8) are skipped: a HoldClosed of a hold released just
// before, used up so that its release changed no balance the model waits
// on, may still be on its way to the device's session.
func refusal(rt *rapid.T, rc *hubtest.RawConn) (*wire.ChannelError, *wire.ChannelState) {
	deadline := time.Now().Add(smWait)
	var state *wire.ChannelState
	for {
		switch m := rc.Next(time.Until(deadline)).(type) {
		case *wire.ChannelError:
			return m, state
		case *wire.ChannelState:
			state = m
		case *wire.HoldClosed, *wire.HoldRequest, *wire.PaymentRequest, *wire.ReceiptNotice,
			*wire.SettleProposal, *wire.SettleDone, *wire.ChannelClosed:
			continue
		default:
			rt.Fatalf("hub answered a raw Pay with %T", m)
		}
	}
}

// signedPay is a Pay of state (seq, paid) moving amount, signed by key.
func (w *world) signedPay(rt *rapid.T, key *btcec.PrivateKey, st channel.State, amount msat.Amount) *wire.Pay {
	h, err := w.out.ClaimSigHash(st)
	if err != nil {
		rt.Fatal(err)
	}
	sig, err := schnorr.Sign(key, h[:])
	if err != nil {
		rt.Fatal(err)
	}
	return &wire.Pay{ChanID: w.ch.ID, Seq: st.Seq, Paid: st.Paid, Amount: amount, Payee: w.provID, Sig: [64]byte(sig.Serialize())}
}

func (w *world) replayOld(rt *rapid.T) {
	if w.seq == 0 {
		rt.Skip("nothing to replay")
	}
	w.counts["ReplayOld"]++
	k := rapid.Uint64Range(1, w.seq).Draw(rt, "seq")
	st := channel.State{ChannelID: w.ch.ID, Seq: k, Paid: w.paidAt[k]}
	ce := w.raw(rt, w.signedPay(rt, w.devKey, st, w.paidAt[k]-w.paidAt[k-1]))
	if ce.Code != wire.ChanStaleState {
		rt.Fatalf("replay of seq %d (current %d) refused with %s, want %s", k, w.seq, ce.Code, wire.ChanStaleState)
	}
}

func (w *world) outOfOrder(rt *rapid.T) {
	w.counts["OutOfOrder"]++
	amount := msat.Amount(rapid.Uint64Range(1, 1_000).Draw(rt, "amount"))
	if w.paid+amount > w.out.Params().MaxPaid() {
		rt.Skip("channel full")
	}
	if w.seq > 0 && rapid.Bool().Draw(rt, "decrease") {
		// The right seq but less paid than now.
		less := msat.Amount(rapid.Uint64Range(1, uint64(w.paid-w.paidAt[w.seq-1])+1).Draw(rt, "less"))
		if less > w.paid {
			less = w.paid
		}
		if less == 0 {
			rt.Skip("nothing paid")
		}
		st := channel.State{ChannelID: w.ch.ID, Seq: w.seq + 1, Paid: w.paid - less}
		ce := w.raw(rt, w.signedPay(rt, w.devKey, st, amount))
		if ce.Code != wire.ChanBadAmount {
			rt.Fatalf("paid decreased by %d refused with %s, want %s", less, ce.Code, wire.ChanBadAmount)
		}
		return
	}
	gap := rapid.Uint64Range(2, 5).Draw(rt, "gap")
	st := channel.State{ChannelID: w.ch.ID, Seq: w.seq + gap, Paid: w.paid + amount}
	ce := w.raw(rt, w.signedPay(rt, w.devKey, st, amount))
	if ce.Code != wire.ChanSeqGap {
		rt.Fatalf("seq+%d refused with %s, want %s", gap, ce.Code, wire.ChanSeqGap)
	}
}

func (w *world) wrongSig(rt *rapid.T) {
	amount := msat.Amount(rapid.Uint64Range(1, 1_000).Draw(rt, "amount"))
	if !w.payFits(amount) || w.paid+amount+1_000 > w.out.Params().MaxPaid() {
		rt.Skip("channel full")
	}
	w.counts["WrongSig"]++
	st := channel.State{ChannelID: w.ch.ID, Seq: w.seq + 1, Paid: w.paid + amount}
	var m *wire.Pay
	switch rapid.IntRange(0, 2).Draw(rt, "how") {
	case 0: // the device's signature of a state that claims another amount
		// A claim signature commits to the whole satoshis the next
		// output leaves the device, not to Seq or the sub-satoshi part
		// (that is the bounded credit), so "another state" must differ
		// in whole satoshis to be a wrong signature.
		other := st
		other.Paid += 1_000
		m = w.signedPay(rt, w.devKey, other, amount)
		m.Paid, m.Amount = st.Paid, amount
	case 1: // a signature by another key
		m = w.signedPay(rt, hubtest.NewKey(rt), st, amount)
	default: // garbage
		m = w.signedPay(rt, w.devKey, st, amount)
		m.Sig[rapid.IntRange(0, 63).Draw(rt, "byte")] ^= 1 << rapid.IntRange(0, 7).Draw(rt, "bit")
	}
	ce := w.raw(rt, m)
	if ce.Code != wire.ChanBadSignature {
		rt.Fatalf("wrong signature refused with %s, want %s", ce.Code, wire.ChanBadSignature)
	}
}

func (w *world) reconnectStep(rt *rapid.T) {
	w.counts["Reconnect"]++
	w.disconnect()
	w.connect(rt)
	w.resynced(rt)
}

func (w *world) hubRestart(rt *rapid.T) {
	w.counts["HubRestart"]++
	w.h.RestartHub(rt)
	// Both sessions find the hub again on their own.
	w.h.WaitSession(rt, w.devID)
	w.h.WaitSession(rt, w.provID)
	hubtest.WaitFor(rt, smWait, "client sessions reconnected", func() bool {
		return w.sess.Connected() && w.provSess.Connected()
	})
	w.resynced(rt)
	// I5: every receipt the device holds is in the restarted hub's store.
	hist, err := w.dev.History(rt.Context(), w.ch.ID)
	if err != nil {
		rt.Fatal(err)
	}
	raws, err := w.h.Store().Receipts(rt.Context(), w.ch.ID, 1, len(hist)+1)
	if err != nil {
		rt.Fatal(err)
	}
	stored := map[[32]byte]bool{}
	for _, b := range raws {
		var r channel.Receipt
		if err := r.UnmarshalBinary(b); err != nil {
			rt.Fatal(err)
		}
		stored[r.ID()] = true
	}
	for _, r := range hist {
		if !stored[r.ID()] {
			rt.Fatalf("receipt seq %d (%d msat) the device holds is not in the store after a restart", r.Seq, r.Amount)
		}
	}
}

// check verifies every invariant against the hub's store and the device's
// own records.
func (w *world) check(rt *rapid.T) {
	ctx := rt.Context()
	rec := w.record(rt)

	// The model is the truth both sides must agree on.
	if rec.Seq != w.seq || rec.Paid != w.paid || rec.Owed != w.owed {
		rt.Fatalf("store at %d/%d msat owed %d, model at %d/%d owed %d", rec.Seq, rec.Paid, rec.Owed, w.seq, w.paid, w.owed)
	}
	// I4: the stored Seq never goes back.
	if rec.Seq < w.lastSeq {
		rt.Fatalf("stored seq went back from %d to %d", w.lastSeq, rec.Seq)
	}
	w.lastSeq = rec.Seq

	// I1: unsigned exposure within the credit limit.
	credit := channel.State{Paid: rec.Paid}.Credit()
	if rec.Owed+credit > channels.DefaultCreditLimit+999 {
		rt.Fatalf("I1: owed %d + credit %d msat exceed the limit", rec.Owed, credit)
	}

	// I2: the stored signature claims floor(Paid/1000) sat, by the script.
	if rec.Seq > 0 {
		w.checkClaim(rt, rec)
	}

	// I3: the device can refund its output alone, at any time.
	w.checkRefund(rt)

	// Conservation: what the device keeps plus what the hub got is the
	// capacity, to the msat.
	b, err := w.dev.Balance(w.ch.ID)
	if err != nil {
		rt.Fatal(err)
	}
	capMsat := msat.FromSatoshis(w.ch.Capacity)
	if capMsat-b.Paid+rec.Paid != capMsat || b.Unconfirmed != 0 {
		rt.Fatalf("device paid %d (unconfirmed %d), hub paid %d", b.Paid, b.Unconfirmed, rec.Paid)
	}
	if b.Reserved != w.devReserved() {
		rt.Fatalf("device reserves %d msat, model %d", b.Reserved, w.devReserved())
	}

	// Holds: the store's active holds are the model's.
	holds, err := w.h.Store().Holds(ctx, w.ch.ID)
	if err != nil {
		rt.Fatal(err)
	}
	active := 0
	for _, sh := range holds {
		if sh.Status != hub.HoldActive {
			continue
		}
		active++
		mh := w.holds[m2mclient.HoldID(sh.ID)]
		if mh == nil || mh.max != sh.Max || mh.captured != sh.Captured {
			rt.Fatalf("stored hold %x max %d captured %d, model %+v", sh.ID, sh.Max, sh.Captured, mh)
		}
	}
	if active != len(w.holds) {
		rt.Fatalf("%d active holds stored, model has %d", active, len(w.holds))
	}

	// Receipts: the store's add up to Paid, one per state; so do the
	// device's.
	w.checkStoreReceipts(rt, rec)
	hist, err := w.dev.History(ctx, w.ch.ID)
	if err != nil {
		rt.Fatal(err)
	}
	var sum msat.Amount
	for _, r := range hist {
		sum += r.Amount
	}
	if sum != b.Paid || uint64(len(hist)) != rec.Seq {
		rt.Fatalf("device holds %d receipts for %d msat; channel at %d/%d", len(hist), sum, rec.Seq, b.Paid)
	}
}

// checkClaim builds the hub's claim of rec's state, co-signs it as the hub
// would, and runs it through btcd's script engine.
func (w *world) checkClaim(rt *rapid.T, rec hub.ChannelRecord) {
	st := channel.State{ChannelID: rec.Funding, Seq: rec.Seq, Paid: rec.Paid}
	sig, err := schnorr.ParseSignature(rec.DeviceSig[:])
	if err != nil {
		rt.Fatalf("I2: stored signature: %v", err)
	}
	if err := w.out.VerifyClaim(st, sig); err != nil {
		rt.Fatalf("I2: %v", err)
	}
	tx := btcwire.NewMsgTx(channel.TxVersion)
	tx.LockTime = channel.ClaimLockTime
	idx, err := channel.AppendClaim(tx, w.out, st)
	if err != nil {
		rt.Fatal(err)
	}
	if want := int64(w.ch.Capacity - st.PaidSat()); tx.TxOut[idx].Value != want || st.PaidSat() != btcutil.Amount(rec.Paid/1000) {
		rt.Fatalf("I2: claim leaves %d sat to the device, want %d", tx.TxOut[idx].Value, want)
	}
	tx.AddTxOut(btcwire.NewTxOut(int64(st.PaidSat()), hubtest.P2TR(rt)))
	priv, err := channel.HubChannelPrivKey(w.h.Key(), channel.ChannelKeyTweak(w.devKey.PubKey(), rec.PendingID))
	if err != nil {
		rt.Fatal(err)
	}
	prev := w.out.TxOut()
	fetcher := txscript.NewCannedPrevOutputFetcher(prev.PkScript, prev.Value)
	hubSig, err := w.out.SignClaimHub(tx, idx, fetcher, nil, priv, txscript.SigHashDefault)
	if err != nil {
		rt.Fatal(err)
	}
	tx.TxIn[idx].Witness = w.out.ClaimWitness(sig, hubSig)
	if err := execute(tx, idx, prev, fetcher); err != nil {
		rt.Fatalf("I2: claim of %d/%d does not pass the script engine: %v", st.Seq, st.Paid, err)
	}
}

// checkRefund has the device build its refund from its own records and
// runs it through the script engine here too.
func (w *world) checkRefund(rt *rapid.T) {
	const fee = 500
	tx, err := w.dev.Refund(rt.Context(), w.ch.ID, hubtest.P2TR(rt), fee)
	if err != nil {
		rt.Fatalf("I3: %v", err)
	}
	if tx.LockTime != w.ch.Expiry || len(tx.TxOut) != 1 || tx.TxOut[0].Value != int64(w.ch.Capacity-fee) {
		rt.Fatalf("I3: refund locked to %d paying %v, want %d and %d sat", tx.LockTime, tx.TxOut, w.ch.Expiry, w.ch.Capacity-fee)
	}
	prev := w.out.TxOut()
	if err := execute(tx, 0, prev, txscript.NewCannedPrevOutputFetcher(prev.PkScript, prev.Value)); err != nil {
		rt.Fatalf("I3: refund does not pass the script engine: %v", err)
	}
}

// checkStoreReceipts reads the store's receipts past those already
// checked: each verifies with the hub key, follows the previous one, and
// they add up to Paid.
func (w *world) checkStoreReceipts(rt *rapid.T, rec hub.ChannelRecord) {
	raws, err := w.h.Store().Receipts(rt.Context(), w.ch.ID, w.storeSeq+1, int(rec.Seq-w.storeSeq)+1)
	if err != nil {
		rt.Fatal(err)
	}
	for _, b := range raws {
		var r channel.Receipt
		if err := r.UnmarshalBinary(b); err != nil {
			rt.Fatal(err)
		}
		if err := r.VerifyKey(w.h.PubKey()); err != nil {
			rt.Fatalf("stored receipt %d: %v", r.Seq, err)
		}
		if r.Seq != w.storeSeq+1 || r.Paid != w.storeSum+r.Amount || r.Channel != w.ch.ID {
			rt.Fatalf("stored receipt seq %d paid %d amount %d follows %d/%d", r.Seq, r.Paid, r.Amount, w.storeSeq, w.storeSum)
		}
		w.storeSeq, w.storeSum = r.Seq, r.Paid
	}
	if w.storeSeq != rec.Seq || w.storeSum != rec.Paid {
		rt.Fatalf("store receipts reach %d/%d msat, channel at %d/%d", w.storeSeq, w.storeSum, rec.Seq, rec.Paid)
	}
}

// execute runs input idx of tx through btcd's script engine.
func execute(tx *btcwire.MsgTx, idx int, prev *btcwire.TxOut, fetcher txscript.PrevOutputFetcher) error {
	vm, err := txscript.NewEngine(prev.PkScript, tx, idx, txscript.StandardVerifyFlags, nil,
		txscript.NewTxSigHashes(tx, fetcher), prev.Value, fetcher)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	return vm.Execute()
}
