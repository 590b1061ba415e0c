package m2mclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/m2mhub/m2mhub/msat"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement"
)

// testHub is the hub's end of one real BOLT 8 connection, driven by the
// test: it speaks the wire protocol message by message, so a test can
// play the hub's side of the settlement round exactly.
type testHub struct {
	t    *testing.T
	key  *btcec.PrivateKey
	ln   *brontide.Listener
	conn *brontide.Conn
}

func startTestHub(t *testing.T) *testHub {
	t.Helper()
	key, _ := btcec.NewPrivateKey()
	ln, err := brontide.NewListener(&keychain.PrivKeyECDH{PrivKey: key}, "127.0.0.1:0", brontide.DisabledBanClosure)
	if err != nil {
		t.Fatal(err)
	}
	h := &testHub{t: t, key: key, ln: ln}
	t.Cleanup(func() {
		_ = ln.Close()
		if h.conn != nil {
			_ = h.conn.Close()
		}
	})
	return h
}

// dial connects a device session and completes the Init exchange.
func (h *testHub) dial(devKey *btcec.PrivateKey) *Session {
	h.t.Helper()
	accepted := make(chan *brontide.Conn, 1)
	go func() {
		c, err := h.ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		bc := c.(*brontide.Conn)
		_ = bc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := wire.ReadMessage(bc, wire.MaxMessageSize); err != nil { // Init
			accepted <- nil
			return
		}
		if err := wire.WriteMessage(bc, wire.NewInit()); err != nil {
			accepted <- nil
			return
		}
		_ = bc.SetDeadline(time.Time{})
		accepted <- bc
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Dial(ctx, h.ln.Addr().(*net.TCPAddr).String(), h.key.PubKey(), devKey,
		WithLogger(discard()), WithPingInterval(time.Hour))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = s.Close() })
	if h.conn = <-accepted; h.conn == nil {
		h.t.Fatal("hub side of the handshake failed")
	}
	return s
}

func (h *testHub) send(m wire.Message) {
	h.t.Helper()
	if err := wire.WriteMessage(h.conn, m); err != nil {
		h.t.Fatal(err)
	}
}

// recv returns the device's next custom message, or nil when none comes
// within wait.
func (h *testHub) recv(wait time.Duration) wire.Message {
	h.t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(wait))
	defer func() { _ = h.conn.SetReadDeadline(time.Time{}) }()
	for {
		m, err := wire.ReadMessage(h.conn, wire.MaxMessageSize)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if err != nil {
			h.t.Fatal(err)
		}
		if _, ok := m.(*wire.ChannelSync); ok {
			// This hub keeps no channel states and leaves the
			// device's sync at connect unanswered, as a slow hub
			// would: the device keeps its own record. (Refusing it
			// would race the test's own exchange on the channel,
			// whose waiter takes any ChannelError for it.)
			continue
		}
		if m.MsgType() >= wire.CustomTypeStart {
			return m
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// settleFixture is a device with one ready channel and the hub's channel
// key for it.
type settleFixture struct {
	hub    *testHub
	devKey *btcec.PrivateKey
	hubKey *btcec.PrivateKey // the hub's per-channel key
	dev    *Device
	dir    string
	st     ChannelState
	out    *channel.Output
}

const (
	fxCapacity = btcutil.Amount(100_000)
	fxExpiry   = uint32(5_000)
	fxPaid     = msat.Amount(25_500_700) // 25,500.7 sat
)

func newSettleFixture(t *testing.T, cfg DeviceConfig) *settleFixture {
	t.Helper()
	f := &settleFixture{hub: startTestHub(t), dir: t.TempDir()}
	f.devKey, _ = btcec.NewPrivateKey()
	var pending [32]byte
	_, _ = rand.Read(pending[:])
	var err error
	f.hubKey, err = channel.HubChannelPrivKey(f.hub.key, channel.ChannelKeyTweak(f.devKey.PubKey(), pending))
	if err != nil {
		t.Fatal(err)
	}
	var funding btcwire.OutPoint
	_, _ = rand.Read(funding.Hash[:])
	f.st = ChannelState{
		PendingID: pending, HubKey: f.hubKey.PubKey(), Capacity: fxCapacity, Expiry: fxExpiry,
		MinDepth: 1, Funding: funding, Status: StatusReady, Seq: 7, Paid: fxPaid,
	}
	if f.out, err = channel.NewOutput(f.st.Params(f.devKey.PubKey())); err != nil {
		t.Fatal(err)
	}
	fs, err := NewFileStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Save(context.Background(), f.st); err != nil {
		t.Fatal(err)
	}
	s := f.hub.dial(f.devKey)
	cfg.Key, cfg.HubKey, cfg.Params, cfg.Store = f.devKey, f.hub.key.PubKey(), &chaincfg.RegressionNetParams, fs
	cfg.Logger = discard()
	if f.dev, err = NewDevice(s, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.dev.Close() })
	assumeSynced(f.dev)
	return f
}

// assumeSynced marks every channel d loaded as compared with the hub's
// state. The test hub here keeps no channel states and leaves ChannelSync
// unanswered (recv), so the fixture's stored record stands for the hub's:
// the device may pay on it without first learning the hub's state.
func assumeSynced(d *Device) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.chans {
		c.mu.Lock()
		c.synced = true
		c.mu.Unlock()
	}
}

// plan builds the hub's batch for the channel with the given net, the way
// the hub's settlement does, so the test signs what a real batch holds.
func (f *settleFixture) plan(t *testing.T, net settlement.Msat, newExpiry uint32) *settlement.PlannedTx {
	t.Helper()
	rev, _ := btcec.NewPrivateKey()
	revScript, _ := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(rev.PubKey()))
	// Another payer's channel pays for the earnings and the fee: a
	// batch has no hub wallet input.
	otherKey, _ := btcec.NewPrivateKey()
	other, err := channel.NewOutput(channel.Params{DeviceKey: otherKey.PubKey(), HubKey: f.hubKey.PubKey(),
		Capacity: 1_000_000, Expiry: fxExpiry})
	if err != nil {
		t.Fatal(err)
	}
	otherFunding := f.st.Funding
	otherFunding.Index++
	in := settlement.PlanInput{
		Channels: []settlement.ChannelInput{{
			Participant: "dev", Output: f.out, Funding: f.st.Funding,
			Net: net, Cooperative: true, NewExpiry: newExpiry,
		}, {
			Participant: "other", Output: other, Funding: otherFunding,
			Net: -50_000_000, Cooperative: true,
		}},
		RevenueScript: revScript, FeeRate: 1000, Height: 100, ExpiryMargin: 10,
	}
	p, err := in.Plan()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Txs) != 1 || len(p.Txs[0].Channels) != 2 || p.Txs[0].Channels[0].Participant != "dev" {
		t.Fatalf("plan has %d txs", len(p.Txs))
	}
	return p.Txs[0]
}

func serialize(t *testing.T, tx *btcwire.MsgTx) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tx.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// proposal is the hub's proposal for input 0 of ptx, with a fresh hub
// session.
func (f *settleFixture) proposal(t *testing.T, ptx *settlement.PlannedTx, spent, earned msat.Amount) (*wire.SettleProposal, *channel.KeySession) {
	t.Helper()
	tmpl, err := ptx.CoopTemplate(0)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := f.out.NewKeySession(f.hubKey)
	if err != nil {
		t.Fatal(err)
	}
	next := ptx.Channels[0].Next
	return &wire.SettleProposal{
		Epoch: 3, ChanID: f.st.Funding, Template: serialize(t, tmpl),
		NextCapacity: next.Capacity, NextExpiry: next.Expiry,
		Spent: spent, Earned: earned, HubNonce: ks.PublicNonce(),
	}, ks
}

// signed checks that the device answered with a SettleSign whose partial
// signature combines with the hub's into the batch input's signature.
func (f *settleFixture) signed(t *testing.T, ptx *settlement.PlannedTx, ks *channel.KeySession) *wire.SettleSign {
	t.Helper()
	msg := f.hub.recv(10 * time.Second)
	sign, ok := msg.(*wire.SettleSign)
	if !ok {
		t.Fatalf("device answered %#v, want SettleSign", msg)
	}
	if sign.Epoch != 3 || sign.ChanID != f.st.Funding {
		t.Fatalf("SettleSign for epoch %d chan %v", sign.Epoch, sign.ChanID)
	}
	h, err := ptx.CoopSigHash(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Sign(h, sign.DeviceNonce); err != nil {
		t.Fatal(err)
	}
	var s btcec.ModNScalar
	if s.SetBytes(&sign.PartialSig) != 0 {
		t.Fatal("partial signature overflows")
	}
	final, err := ks.Combine(&musig2.PartialSignature{S: &s})
	if err != nil {
		t.Fatalf("device partial signature does not combine: %v", err)
	}
	if err := ptx.SetCoopSignature(0, final); err != nil {
		t.Fatal(err)
	}
	// The batch input now spends the channel under btcd's script engine.
	prev := f.out.TxOut()
	fetcher := txscript.NewMultiPrevOutFetcher(nil)
	for _, c := range ptx.Channels {
		fetcher.AddPrevOut(ptx.Tx.TxIn[c.Index].PreviousOutPoint, c.Output.TxOut())
	}
	vm, err := txscript.NewEngine(prev.PkScript, ptx.Tx, 0, txscript.StandardVerifyFlags, nil,
		txscript.NewTxSigHashes(ptx.Tx, fetcher), prev.Value, fetcher)
	if err == nil {
		err = vm.Execute()
	}
	if err != nil {
		t.Fatalf("batch input does not verify: %v", err)
	}
	return sign
}

// refused checks that the device answered settle-refused naming the
// channel and signed nothing.
func (f *settleFixture) refused(t *testing.T) {
	t.Helper()
	msg := f.hub.recv(10 * time.Second)
	e, ok := msg.(*wire.ChannelError)
	if !ok {
		t.Fatalf("device answered %#v, want ChannelError", msg)
	}
	if e.Code != wire.ChanSettleRefused || e.ChanID == nil || *e.ChanID != f.st.Funding {
		t.Fatalf("refusal %q for %v", e.Code, e.ChanID)
	}
	f.dev.settleMu.Lock()
	n := len(f.dev.settle)
	f.dev.settleMu.Unlock()
	if n != 0 {
		t.Fatalf("device remembers %d signed proposals after refusing", n)
	}
	if m := f.hub.recv(100 * time.Millisecond); m != nil {
		t.Fatalf("device sent %T after refusing", m)
	}
}

// payerNet is the fixture's net as a payer that earned nothing.
var payerNet = -settlement.MsatOf(fxPaid)

func TestSettleSignsMatchingProposal(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	ptx := f.plan(t, payerNet, fxExpiry+1000)
	// 100,000 − 25,500.7 rounded toward zero: the device pays 25,500 sat.
	if got := ptx.Channels[0].Next.Capacity; got != 74_500 {
		t.Fatalf("planned next capacity %d", got)
	}
	prop, ks := f.proposal(t, ptx, fxPaid, 0)
	f.hub.send(prop)
	f.signed(t, ptx, ks)
}

func TestSettleRefusals(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	for _, tc := range []struct {
		name   string
		mutate func(*testing.T, *wire.SettleProposal)
	}{
		{"WrongAmount", func(t *testing.T, p *wire.SettleProposal) {
			// The hub takes 5 sat more than the device paid; the
			// template agrees with the proposal, so only the amount
			// check can catch it.
			p.NextCapacity -= 5
			f.retemplate(t, p, func(tx *btcwire.MsgTx) {})
		}},
		{"WrongSpent", func(t *testing.T, p *wire.SettleProposal) { p.Spent += 5000 }},
		{"EarnedWithoutEarnings", func(t *testing.T, p *wire.SettleProposal) { p.Earned = 2000 }},
		{"WrongScript", func(t *testing.T, p *wire.SettleProposal) {
			other, _ := btcec.NewPrivateKey()
			script, _ := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(other.PubKey()))
			f.retemplate(t, p, func(tx *btcwire.MsgTx) { tx.TxOut[0].PkScript = script })
		}},
		{"ShortenedExpiry", func(t *testing.T, p *wire.SettleProposal) {
			p.NextExpiry = fxExpiry - 1
			f.retemplate(t, p, func(tx *btcwire.MsgTx) {})
		}},
		{"WrongInput", func(t *testing.T, p *wire.SettleProposal) {
			f.retemplate(t, p, func(tx *btcwire.MsgTx) { tx.TxIn[0].PreviousOutPoint.Index++ })
		}},
		{"TwoOutputs", func(t *testing.T, p *wire.SettleProposal) {
			f.retemplate(t, p, func(tx *btcwire.MsgTx) { tx.AddTxOut(tx.TxOut[0]) })
		}},
		{"Garbage", func(t *testing.T, p *wire.SettleProposal) { p.Template = []byte{1, 2, 3} }},
		{"UnknownChannel", func(t *testing.T, p *wire.SettleProposal) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ptx := f.plan(t, payerNet, 0)
			prop, _ := f.proposal(t, ptx, fxPaid, 0)
			tc.mutate(t, prop)
			if tc.name == "UnknownChannel" {
				prop.ChanID.Index += 9
				f.hub.send(prop)
				msg := f.hub.recv(10 * time.Second)
				if e, ok := msg.(*wire.ChannelError); !ok || e.Code != wire.ChanSettleRefused {
					t.Fatalf("device answered %#v", msg)
				}
				return
			}
			f.hub.send(prop)
			f.refused(t)
		})
	}
}

// retemplate rebuilds p's template from its NextCapacity and NextExpiry
// (the next channel's script and value), then applies change.
func (f *settleFixture) retemplate(t *testing.T, p *wire.SettleProposal, change func(*btcwire.MsgTx)) {
	t.Helper()
	next := f.out.Params()
	next.Capacity, next.Expiry = p.NextCapacity, p.NextExpiry
	o, err := channel.NewOutput(next)
	if err != nil {
		t.Fatal(err)
	}
	tx := btcwire.NewMsgTx(channel.TxVersion)
	tx.LockTime = channel.ClaimLockTime
	tx.AddTxIn(channel.ClaimTxIn(f.st.Funding))
	tx.AddTxOut(o.TxOut())
	change(tx)
	p.Template = serialize(t, tx)
}

func TestSettleVeto(t *testing.T) {
	noLeaks(t)
	var seen SettleProposal
	f := newSettleFixture(t, DeviceConfig{OnSettle: func(p SettleProposal) bool { seen = p; return false }})
	ptx := f.plan(t, payerNet, 0)
	prop, _ := f.proposal(t, ptx, fxPaid, 0)
	f.hub.send(prop)
	f.refused(t)
	if seen.NextCapacity != 74_500 || seen.Spent != fxPaid || seen.Capacity != fxCapacity {
		t.Fatalf("OnSettle saw %+v", seen)
	}
}

// TestSettleEarnings: a prosumer's earnings raise its next channel, and
// the device signs only when the hub's figure matches its own.
func TestSettleEarnings(t *testing.T) {
	noLeaks(t)
	earned := msat.Amount(40_000_900)
	f := newSettleFixture(t, DeviceConfig{Earnings: func(context.Context, uint64) (msat.Amount, error) {
		return earned, nil
	}})
	net := settlement.MsatOf(earned) - settlement.MsatOf(fxPaid)
	ptx := f.plan(t, net, 0)
	if got := ptx.Channels[0].Next.Capacity; got != fxCapacity+14_500 {
		t.Fatalf("planned next capacity %d", got)
	}
	prop, ks := f.proposal(t, ptx, fxPaid, earned)
	f.hub.send(prop)
	f.signed(t, ptx, ks)

	// The hub under-reports the earnings by 2 sat: refused. (Forget the
	// signed proposal so refused can tell nothing new was signed.)
	f.dev.settleMu.Lock()
	clear(f.dev.settle)
	f.dev.settleMu.Unlock()
	ptx = f.plan(t, net-2000, 0)
	prop, _ = f.proposal(t, ptx, fxPaid, earned-2000)
	f.hub.send(prop)
	f.refused(t)
}

// TestSettleFreshNonces: the hub retrying the same proposal (a re-run
// round) gets a new device nonce every time, and each signature still
// combines with the hub's session of that attempt.
func TestSettleFreshNonces(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	seen := make(map[[wire.NonceSize]byte]bool)
	for range 4 {
		ptx := f.plan(t, payerNet, 0)
		prop, ks := f.proposal(t, ptx, fxPaid, 0)
		f.hub.send(prop)
		sign := f.signed(t, ptx, ks)
		if seen[sign.DeviceNonce] {
			t.Fatal("device reused a nonce")
		}
		seen[sign.DeviceNonce] = true
	}
}

func TestSettleDoneSwitchesChannel(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	ptx := f.plan(t, payerNet, fxExpiry+1000)
	prop, ks := f.proposal(t, ptx, fxPaid, 0)
	f.hub.send(prop)
	f.signed(t, ptx, ks)

	txid := ptx.Tx.TxHash()
	next := btcwire.OutPoint{Hash: txid, Index: 0}
	// A report of other terms than the device signed is not followed.
	f.hub.send(&wire.SettleDone{Epoch: 3, ChanID: f.st.Funding, NextOutpoint: next,
		NextCapacity: 74_000, NextExpiry: fxExpiry + 1000, Txid: txid})
	time.Sleep(200 * time.Millisecond)
	if _, err := f.dev.Balance(next); !errors.Is(err, ErrUnknownChannel) {
		t.Fatalf("device followed a settlement it did not sign: %v", err)
	}

	done := &wire.SettleDone{Epoch: 3, ChanID: f.st.Funding, NextOutpoint: next,
		NextCapacity: 74_500, NextExpiry: fxExpiry + 1000, Txid: txid}
	f.hub.send(done)
	f.hub.send(done) // a repeated notice changes nothing
	waitUntil(t, func() bool { _, err := f.dev.Balance(next); return err == nil })
	check := func(d *Device) {
		t.Helper()
		b, err := d.Balance(next)
		if err != nil || b.Capacity != 74_500 || b.Paid != 0 {
			t.Fatalf("new channel balance %+v, %v", b, err)
		}
		var cur, old *Channel
		for _, c := range d.Channels() {
			switch c.ID {
			case next:
				cur = c
			case f.st.Funding:
				old = c
			}
		}
		if cur == nil || cur.Status != StatusReady || cur.Seq != 0 || cur.Expiry != fxExpiry+1000 || cur.PendingID != f.st.PendingID {
			t.Fatalf("current channel %+v", cur)
		}
		if old == nil || old.Status != StatusClosed || old.CloseTx == nil || *old.CloseTx != txid || old.Paid != fxPaid {
			t.Fatalf("old channel %+v", old)
		}
		if len(d.Channels()) != 2 {
			t.Fatalf("%d channels", len(d.Channels()))
		}
	}
	check(f.dev)
	// The switch is durable: an offline device on the same store sees it.
	fs, err := NewFileStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	off, err := NewDevice(nil, DeviceConfig{Key: f.devKey, HubKey: f.hub.key.PubKey(),
		Params: &chaincfg.RegressionNetParams, Store: fs, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	check(off)
}

// TestSettleDoneByClaim: a device that was absent is settled by its claim
// signature; it follows the hub to the claim's next output.
func TestSettleDoneByClaim(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	done := f.claimDone()
	f.hub.send(done)
	waitUntil(t, func() bool { _, err := f.dev.Balance(done.NextOutpoint); return err == nil })
}

// claimDone is the SettleDone of a batch that settled the fixture's
// channel by its claim (the device absent from the round): the next
// output is the claim's, same expiry.
func (f *settleFixture) claimDone() *wire.SettleDone {
	var txid chainhash.Hash
	_, _ = rand.Read(txid[:])
	return &wire.SettleDone{Epoch: 3, ChanID: f.st.Funding, NextOutpoint: btcwire.OutPoint{Hash: txid, Index: 4},
		NextCapacity: fxCapacity - fxPaid.ToSatoshis(), NextExpiry: fxExpiry, Txid: txid}
}

// noLeaks checks, after every cleanup of t, that t left no goroutine
// behind; registered first, its cleanup runs last.
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
