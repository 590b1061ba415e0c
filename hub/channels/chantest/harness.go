// Package chantest runs a hub's channel manager behind a real session
// server and bbolt store, with devices driven from tests over internal/wire,
// for the tests of the channel manager and of what builds on it (charging).
package chantest

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
	"github.com/m2mhub/m2mhub/msat"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// FakeChain is a test-only stand-in for the chain adapter in unit tests of
// the channel manager; the regtest test uses the real btcd node.
type FakeChain struct {
	Mu     sync.Mutex
	height int32
	Outs   map[btcwire.OutPoint]hub.TxOut
	Confs  map[chainhash.Hash]int64
	Sent   []*btcwire.MsgTx
	// SendErr, when set, fails every broadcast (a node that is down).
	SendErr error
}

// NewFakeChain returns a fake chain at height with nothing on it.
func NewFakeChain(height int32) *FakeChain {
	return &FakeChain{height: height, Outs: map[btcwire.OutPoint]hub.TxOut{}, Confs: map[chainhash.Hash]int64{}}
}

// BlockCount returns the fake tip height.
func (f *FakeChain) BlockCount(context.Context) (int32, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.height, nil
}

// TxOut returns a funded output, or an error wrapping hub.ErrNotFound.
func (f *FakeChain) TxOut(_ context.Context, op btcwire.OutPoint, _ bool) (hub.TxOut, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	o, ok := f.Outs[op]
	if !ok {
		return hub.TxOut{}, hub.ErrNotFound
	}
	return o, nil
}

// Confirmations returns a sent transaction's confirmations.
func (f *FakeChain) Confirmations(_ context.Context, txid chainhash.Hash) (int64, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	n, ok := f.Confs[txid]
	if !ok {
		return 0, hub.ErrNotFound
	}
	return n, nil
}

// SendRawTransaction records tx as sent, or fails with SendErr.
func (f *FakeChain) SendRawTransaction(_ context.Context, tx *btcwire.MsgTx) (chainhash.Hash, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if f.SendErr != nil {
		return chainhash.Hash{}, f.SendErr
	}
	f.Sent = append(f.Sent, tx)
	f.Confs[tx.TxHash()] = 0
	return tx.TxHash(), nil
}

// Fund pays value to pkScript in a made-up transaction with confs
// confirmations and returns the outpoint.
func (f *FakeChain) Fund(value btcutil.Amount, pkScript []byte, confs int64) btcwire.OutPoint {
	var op btcwire.OutPoint
	_, _ = rand.Read(op.Hash[:])
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Outs[op] = hub.TxOut{Value: value, PkScript: pkScript, Confirmations: confs}
	return op
}

// Harness is a hub with a real bbolt store, a real registry, a real BOLT 8
// server, and the channel manager as its handler.
type Harness struct {
	T      testing.TB
	HubKey *btcec.PrivateKey
	Store  *boltstore.Store
	Reg    *registry.Registry
	Srv    *session.Server
	Ch     *channels.Manager
	Chain  channels.Chain
	Params *chaincfg.Params
}

// Quiet returns a logger that discards everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// NewHarness starts a hub on chain: mod adjusts the channel manager's
// configuration, storeOpts the bbolt store's. Everything stops at the end
// of tb.
func NewHarness(tb testing.TB, chain channels.Chain, mod func(*channels.Config), storeOpts ...func(*boltstore.Config)) *Harness {
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
	// Built in dependency order: the directory of live sessions, the
	// channel manager (which reads devices from the store and reaches them
	// through the directory), the registry (which freezes their channels),
	// and the server (which authenticates through the registry and hands
	// messages to the manager).
	dir := session.NewDirectory()
	h := &Harness{T: tb, HubKey: MustKey(tb), Store: st, Chain: chain, Params: &chaincfg.RegressionNetParams}
	payout, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(MustKey(tb).PubKey()))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := channels.Config{
		Store: st, Devices: st, Sessions: dir, Chain: chain, HubKey: h.HubKey,
		PayoutScript: payout, Params: h.Params, PollInterval: 50 * time.Millisecond,
		MinCapacity: 10_000, MaxCapacity: 10_000_000, SafetyMargin: 6,
		Logger: Quiet(),
	}
	if mod != nil {
		mod(&cfg)
	}
	h.Ch, err = channels.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	h.Reg, err = registry.New(registry.Config{Store: st, Channels: h.Ch, Logger: Quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := p2plisten.Listen(p2plisten.Config{Addr: "127.0.0.1:0", Key: &keychain.PrivKeyECDH{PrivKey: h.HubKey}, Logger: Quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	h.Srv, err = session.New(session.Config{
		Listener: session.NewListener(ln), Auth: h.Reg, Handler: h.Ch, Directory: dir, Logger: Quiet(),
		PingInterval: time.Hour, PongTimeout: time.Hour,
	})
	if err != nil {
		tb.Fatal(err)
	}
	h.Ch.Start()
	tb.Cleanup(func() {
		_ = h.Srv.Close()
		_ = h.Ch.Close()
	})
	return h
}

// MustKey returns a fresh private key.
func MustKey(tb testing.TB) *btcec.PrivateKey {
	tb.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Device is a minimal device-side driver speaking internal/wire directly
// over a BOLT 8 connection.
type Device struct {
	T    testing.TB
	Key  *btcec.PrivateKey
	ID   string
	Conn *brontide.Conn
	In   chan wire.Message
	Done chan struct{}
}

// Enrol registers a device with roles and connects it.
func (h *Harness) Enrol(roles ...hub.Role) *Device {
	h.T.Helper()
	key := MustKey(h.T)
	d, err := h.Reg.Enrol(context.Background(), registry.EnrolRequest{Key: hub.PubKeyOf(key.PubKey()), Roles: roles}, "test")
	if err != nil {
		h.T.Fatal(err)
	}
	return h.Connect(key, d.ID)
}

// Connect opens a session for the device id with key.
func (h *Harness) Connect(key *btcec.PrivateKey, id string) *Device {
	h.T.Helper()
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: h.HubKey.PubKey(), Address: h.Srv.Addr().(*net.TCPAddr)},
		5*time.Second, net.DialTimeout)
	if err != nil {
		h.T.Fatal(err)
	}
	dev := &Device{T: h.T, Key: key, ID: id, Conn: c, In: make(chan wire.Message, 256), Done: make(chan struct{})}
	h.T.Cleanup(func() {
		_ = c.Close()
		<-dev.Done
	})
	dev.Send(wire.NewInit())
	go dev.read()
	if _, ok := dev.Next(5 * time.Second).(*wire.Init); !ok {
		h.T.Fatal("hub did not answer init")
	}
	// The session is registered just after the Init reply is queued.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, ok := h.Srv.Session(id); ok {
			break
		}
		if time.Now().After(deadline) {
			h.T.Fatal("session not registered")
		}
		time.Sleep(time.Millisecond)
	}
	return dev
}

func (d *Device) read() {
	defer close(d.Done)
	defer close(d.In)
	for {
		m, err := wire.ReadMessage(d.Conn, wire.MaxMessageSize)
		if err != nil {
			return
		}
		if _, ok := m.(*wire.Ping); ok {
			continue
		}
		d.In <- m
	}
}

// Send writes m to the device's session.
func (d *Device) Send(m wire.Message) {
	d.T.Helper()
	_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(d.Conn, m); err != nil {
		d.T.Fatalf("send %T: %v", m, err)
	}
}

// Next returns the next message from the hub, failing the test after
// within.
func (d *Device) Next(within time.Duration) wire.Message {
	d.T.Helper()
	select {
	case m, ok := <-d.In:
		if !ok {
			d.T.Fatal("hub closed the connection")
		}
		return m
	case <-time.After(within):
		d.T.Fatalf("nothing from the hub within %v", within)
	}
	return nil
}

// Expect reads the next message and requires it to be a T.
func Expect[T wire.Message](d *Device) T {
	d.T.Helper()
	m := d.Next(5 * time.Second)
	v, ok := m.(T)
	if !ok {
		if ce, isErr := m.(*wire.ChannelError); isErr {
			d.T.Fatalf("got ChannelError %s, want %T", ce.Error(), v)
		}
		if le, isErr := m.(*wire.Error); isErr {
			d.T.Fatalf("got Error %s, want %T", wire.ParseError(le).Error(), v)
		}
		d.T.Fatalf("got %T, want %T", m, v)
	}
	return v
}

// Channel is the device's view of one channel.
type Channel struct {
	Op   btcwire.OutPoint
	Out  *channel.Output
	Seq  uint64
	Paid msat.Amount
	Pend [32]byte
}

// Offer opens a channel and returns the hub's offer.
func (d *Device) Offer(capacity btcutil.Amount, expiry uint32) (*wire.ChannelOffer, *channel.Output) {
	d.T.Helper()
	d.Send(&wire.OpenChannel{ReqID: 1, Capacity: capacity, Expiry: expiry})
	off := Expect[*wire.ChannelOffer](d)
	out, err := channel.NewOutput(channel.Params{DeviceKey: d.Key.PubKey(), HubKey: off.HubChanKey, Capacity: capacity, Expiry: expiry})
	if err != nil {
		d.T.Fatal(err)
	}
	if string(out.PkScript()) != string(off.PkScript) {
		d.T.Fatal("offer's pk script is not the channel output of its params")
	}
	return off, out
}

// Open runs open → fund (on the fake chain, already deep enough) → ready.
func (d *Device) Open(f *FakeChain, capacity btcutil.Amount, expiry uint32) *Channel {
	d.T.Helper()
	off, out := d.Offer(capacity, expiry)
	op := f.Fund(capacity, off.PkScript, 1)
	d.Send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
	r := Expect[*wire.ChannelReady](d)
	if r.Outpoint != op {
		d.T.Fatalf("ready for %v, funded %v", r.Outpoint, op)
	}
	return &Channel{Op: op, Out: out, Pend: off.PendingID}
}

// PayMsg builds a signed Pay of amount on top of the device's state.
func (d *Device) PayMsg(c *Channel, seq uint64, paid msat.Amount, amount msat.Amount, payee string) *wire.Pay {
	d.T.Helper()
	st := channel.State{ChannelID: c.Op, Seq: seq, Paid: paid}
	var sig [64]byte
	if paid <= c.Out.Params().MaxPaid() {
		s, err := c.Out.SignClaim(d.Key, st)
		if err != nil {
			d.T.Fatal(err)
		}
		copy(sig[:], s.Serialize())
	}
	return &wire.Pay{ChanID: c.Op, Seq: seq, Paid: paid, Amount: amount, Payee: payee, Sig: sig}
}

// Pay pays amount to payee and requires the PayAck.
func (d *Device) Pay(c *Channel, amount msat.Amount, payee string) *wire.PayAck {
	d.T.Helper()
	d.Send(d.PayMsg(c, c.Seq+1, c.Paid+amount, amount, payee))
	ack := Expect[*wire.PayAck](d)
	c.Seq++
	c.Paid += amount
	if ack.Seq != c.Seq || ack.ChanID != c.Op {
		d.T.Fatalf("ack for %v/%d, want %v/%d", ack.ChanID, ack.Seq, c.Op, c.Seq)
	}
	return ack
}

// Refusal reads the next message and requires a ChannelError with code.
func Refusal(d *Device, code wire.ChanCode) *wire.ChannelError {
	d.T.Helper()
	ce := Expect[*wire.ChannelError](d)
	if ce.Code != code {
		d.T.Fatalf("refused with %q (%s), want %q", ce.Code, ce.Message, code)
	}
	return ce
}

// CheckLeaks fails t if goroutines started during it outlive it.
func CheckLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// TestHeight is the fake chain's starting height in the channel tests.
const TestHeight = 1000
