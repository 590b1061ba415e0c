package hub_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// fakeChain is a test-only stand-in for the chain adapter in unit tests of
// the channel manager; the regtest test uses the real btcd node.
type fakeChain struct {
	mu     sync.Mutex
	height int32
	outs   map[btcwire.OutPoint]btcdchain.TxOut
	confs  map[chainhash.Hash]int64
	sent   []*btcwire.MsgTx
}

func newFakeChain(height int32) *fakeChain {
	return &fakeChain{height: height, outs: map[btcwire.OutPoint]btcdchain.TxOut{}, confs: map[chainhash.Hash]int64{}}
}

func (f *fakeChain) BlockCount(context.Context) (int32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.height, nil
}

func (f *fakeChain) TxOut(_ context.Context, op btcwire.OutPoint, _ bool) (btcdchain.TxOut, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.outs[op]
	if !ok {
		return btcdchain.TxOut{}, btcdchain.ErrNotFound
	}
	return o, nil
}

func (f *fakeChain) Confirmations(_ context.Context, txid chainhash.Hash) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.confs[txid]
	if !ok {
		return 0, btcdchain.ErrNotFound
	}
	return n, nil
}

func (f *fakeChain) SendRawTransaction(_ context.Context, tx *btcwire.MsgTx) (chainhash.Hash, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, tx)
	f.confs[tx.TxHash()] = 0
	return tx.TxHash(), nil
}

// fund pays value to pkScript in a made-up transaction with confs
// confirmations and returns the outpoint.
func (f *fakeChain) fund(value btcutil.Amount, pkScript []byte, confs int64) btcwire.OutPoint {
	var op btcwire.OutPoint
	_, _ = rand.Read(op.Hash[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outs[op] = btcdchain.TxOut{Value: value, PkScript: pkScript, Confirmations: confs}
	return op
}

// sessionsRef breaks the construction cycle between the server (which needs
// its handler) and the channel manager (which needs the server's sessions),
// as hubd's wiring must too.
type sessionsRef struct{ srv *hub.Server }

func (r *sessionsRef) Session(id string) (*hub.Session, bool) { return r.srv.Session(id) }

// harness is a hub with a real bbolt store, a real registry, a real BOLT 8
// server, and the channel manager as its handler.
type harness struct {
	t      testing.TB
	hubKey *btcec.PrivateKey
	store  *boltstore.Store
	reg    *hub.Registry
	srv    *hub.Server
	ch     *hub.Channels
	chain  hub.Chain
	params *chaincfg.Params
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(tb testing.TB, chain hub.Chain, mod func(*hub.ChannelsConfig), storeOpts ...func(*boltstore.Config)) *harness {
	tb.Helper()
	scfg := boltstore.Config{Path: tb.TempDir()}
	for _, o := range storeOpts {
		o(&scfg)
	}
	st, err := boltstore.New(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	reg, err := hub.NewRegistry(hub.RegistryConfig{Store: st, Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	h := &harness{t: tb, hubKey: mustKey(tb), store: st, reg: reg, chain: chain, params: &chaincfg.RegressionNetParams}
	payout, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(mustKey(tb).PubKey()))
	if err != nil {
		tb.Fatal(err)
	}
	ref := &sessionsRef{}
	cfg := hub.ChannelsConfig{
		Store: st, Devices: reg, Sessions: ref, Chain: chain, HubKey: h.hubKey,
		PayoutScript: payout, Params: h.params, PollInterval: 50 * time.Millisecond,
		MinCapacity: 10_000, MaxCapacity: 10_000_000, SafetyMargin: 6,
		Logger: quiet(),
	}
	if mod != nil {
		mod(&cfg)
	}
	h.ch, err = hub.NewChannels(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	h.srv, err = hub.NewServer(hub.ServerConfig{
		Addr: "127.0.0.1:0", Key: h.hubKey, Auth: reg, Handler: h.ch, Logger: quiet(),
		PingInterval: time.Hour, PongTimeout: time.Hour,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ref.srv = h.srv
	h.ch.Start()
	tb.Cleanup(func() {
		_ = h.srv.Close()
		_ = h.ch.Close()
	})
	return h
}

func mustKey(tb testing.TB) *btcec.PrivateKey {
	tb.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// device is a minimal device-side driver speaking internal/wire directly
// over a BOLT 8 connection.
type device struct {
	t    testing.TB
	key  *btcec.PrivateKey
	id   string
	conn *brontide.Conn
	in   chan lnwire.Message
	done chan struct{}
}

// enrol registers a device with roles and connects it.
func (h *harness) enrol(roles ...hub.Role) *device {
	h.t.Helper()
	key := mustKey(h.t)
	d, err := h.reg.Enrol(context.Background(), hub.EnrolRequest{Key: hub.PubKeyOf(key.PubKey()), Roles: roles}, "test")
	if err != nil {
		h.t.Fatal(err)
	}
	return h.connect(key, d.ID)
}

func (h *harness) connect(key *btcec.PrivateKey, id string) *device {
	h.t.Helper()
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: h.hubKey.PubKey(), Address: h.srv.Addr().(*net.TCPAddr)},
		5*time.Second, net.DialTimeout)
	if err != nil {
		h.t.Fatal(err)
	}
	dev := &device{t: h.t, key: key, id: id, conn: c, in: make(chan lnwire.Message, 256), done: make(chan struct{})}
	h.t.Cleanup(func() {
		_ = c.Close()
		<-dev.done
	})
	dev.send(wire.NewInit())
	go dev.read()
	if _, ok := dev.next(5 * time.Second).(*lnwire.Init); !ok {
		h.t.Fatal("hub did not answer init")
	}
	// The session is registered just after the Init reply is queued.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, ok := h.srv.Session(id); ok {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatal("session not registered")
		}
		time.Sleep(time.Millisecond)
	}
	return dev
}

func (d *device) read() {
	defer close(d.done)
	defer close(d.in)
	for {
		m, err := wire.ReadMessage(d.conn, wire.MaxMessageSize)
		if err != nil {
			return
		}
		if _, ok := m.(*lnwire.Ping); ok {
			continue
		}
		d.in <- m
	}
}

func (d *device) send(m lnwire.Message) {
	d.t.Helper()
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(d.conn, m); err != nil {
		d.t.Fatalf("send %T: %v", m, err)
	}
}

// next returns the next message from the hub, failing the test after
// within.
func (d *device) next(within time.Duration) lnwire.Message {
	d.t.Helper()
	select {
	case m, ok := <-d.in:
		if !ok {
			d.t.Fatal("hub closed the connection")
		}
		return m
	case <-time.After(within):
		d.t.Fatalf("nothing from the hub within %v", within)
	}
	return nil
}

// expect reads the next message and requires it to be a T.
func expect[T lnwire.Message](d *device) T {
	d.t.Helper()
	m := d.next(5 * time.Second)
	v, ok := m.(T)
	if !ok {
		if ce, isErr := m.(*wire.ChannelError); isErr {
			d.t.Fatalf("got ChannelError %s, want %T", ce.Error(), v)
		}
		if le, isErr := m.(*lnwire.Error); isErr {
			d.t.Fatalf("got Error %s, want %T", wire.ParseError(le).Error(), v)
		}
		d.t.Fatalf("got %T, want %T", m, v)
	}
	return v
}

// devChannel is the device's view of one channel.
type devChannel struct {
	op   btcwire.OutPoint
	out  *channel.Output
	seq  uint64
	paid lnwire.MilliSatoshi
	pend [32]byte
}

// offer opens a channel and returns the hub's offer.
func (d *device) offer(capacity btcutil.Amount, expiry uint32) (*wire.ChannelOffer, *channel.Output) {
	d.t.Helper()
	d.send(&wire.OpenChannel{ReqID: 1, Capacity: capacity, Expiry: expiry})
	off := expect[*wire.ChannelOffer](d)
	out, err := channel.NewOutput(channel.Params{DeviceKey: d.key.PubKey(), HubKey: off.HubChanKey, Capacity: capacity, Expiry: expiry})
	if err != nil {
		d.t.Fatal(err)
	}
	if string(out.PkScript()) != string(off.PkScript) {
		d.t.Fatal("offer's pk script is not the channel output of its params")
	}
	return off, out
}

// open runs open → fund (on the fake chain, already deep enough) → ready.
func (d *device) open(f *fakeChain, capacity btcutil.Amount, expiry uint32) *devChannel {
	d.t.Helper()
	off, out := d.offer(capacity, expiry)
	op := f.fund(capacity, off.PkScript, 1)
	d.send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
	r := expect[*wire.ChannelReady](d)
	if r.Outpoint != op {
		d.t.Fatalf("ready for %v, funded %v", r.Outpoint, op)
	}
	return &devChannel{op: op, out: out, pend: off.PendingID}
}

// payMsg builds a signed Pay of amount on top of the device's state.
func (d *device) payMsg(c *devChannel, seq uint64, paid lnwire.MilliSatoshi, amount lnwire.MilliSatoshi, payee string) *wire.Pay {
	d.t.Helper()
	st := channel.State{ChannelID: c.op, Seq: seq, Paid: paid}
	var sig [64]byte
	if paid <= c.out.Params().MaxPaid() {
		s, err := c.out.SignClaim(d.key, st)
		if err != nil {
			d.t.Fatal(err)
		}
		copy(sig[:], s.Serialize())
	}
	return &wire.Pay{ChanID: c.op, Seq: seq, Paid: paid, Amount: amount, Payee: payee, Sig: sig}
}

// pay pays amount to payee and requires the PayAck.
func (d *device) pay(c *devChannel, amount lnwire.MilliSatoshi, payee string) *wire.PayAck {
	d.t.Helper()
	d.send(d.payMsg(c, c.seq+1, c.paid+amount, amount, payee))
	ack := expect[*wire.PayAck](d)
	c.seq++
	c.paid += amount
	if ack.Seq != c.seq || ack.ChanID != c.op {
		d.t.Fatalf("ack for %v/%d, want %v/%d", ack.ChanID, ack.Seq, c.op, c.seq)
	}
	return ack
}

// refusal reads the next message and requires a ChannelError with code.
func refusal(d *device, code wire.ChanCode) *wire.ChannelError {
	d.t.Helper()
	ce := expect[*wire.ChannelError](d)
	if ce.Code != code {
		d.t.Fatalf("refused with %q (%s), want %q", ce.Code, ce.Message, code)
	}
	return ce
}

// CheckLeaks fails t if goroutines started during it outlive it.
func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// TestHeight is the fake chain's starting height in the channel tests.
const testHeight = 1000
