package m2mclient_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

var regtestParams = &chaincfg.RegressionNetParams

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newKey(tb testing.TB) *btcec.PrivateKey {
	tb.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func p2tr(tb testing.TB) []byte {
	tb.Helper()
	s, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(newKey(tb).PubKey()))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// sessionsRef breaks the cycle between the server (which needs the channel
// manager as its handler) and the manager (which needs the server's
// sessions).
type sessionsRef struct{ srv *hub.Server }

func (r *sessionsRef) Session(id string) (*hub.Session, bool) { return r.srv.Session(id) }

// e2e is a real hub (bbolt store, registry, BOLT 8 server, channel manager)
// on a real btcd regtest node whose blocks pay a wallet the device funds
// channels from.
type e2e struct {
	node   *regtest.Node
	chain  *btcdchain.Client
	wallet *btcdchain.Wallet
	hubKey *btcec.PrivateKey
	reg    *hub.Registry
	srv    *hub.Server
	ch     *hub.Channels
}

func startE2E(t *testing.T) *e2e {
	t.Helper()
	if testing.Short() {
		t.Skip("starts btcd")
	}
	ctx := t.Context()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")
	addr, err := btcdchain.KeyAddress(keyPath, regtestParams)
	if err != nil {
		t.Fatal(err)
	}
	node, err := regtest.Start(ctx, regtest.Config{Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Stop(context.Background()) })
	rpc := node.RPC()
	chain, err := btcdchain.New(btcdchain.Config{Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert, Params: regtestParams, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chain.Close() })
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: keyPath, Chain: chain, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.MineToActivation(ctx); err != nil {
		t.Fatal(err)
	}

	st, err := boltstore.New(boltstore.Config{Path: filepath.Join(dir, "hub")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	reg, err := hub.NewRegistry(hub.RegistryConfig{Store: st, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{node: node, chain: chain, wallet: wallet, hubKey: newKey(t), reg: reg}
	ref := &sessionsRef{}
	e.ch, err = hub.NewChannels(hub.ChannelsConfig{
		Store: st, Devices: reg, Sessions: ref, Chain: chain, HubKey: e.hubKey,
		PayoutScript: p2tr(t), Params: regtestParams, PollInterval: 100 * time.Millisecond,
		MinExpiryDelta: 10, SafetyMargin: 2, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = hub.NewServer(hub.ServerConfig{Addr: "127.0.0.1:0", Key: e.hubKey, Auth: reg, Handler: e.ch, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ref.srv = e.srv
	e.ch.Start()
	t.Cleanup(e.stopHub)
	return e
}

func (e *e2e) stopHub() {
	_ = e.srv.Close()
	_ = e.ch.Close()
}

// enrol registers a key with roles and opens its session.
func (e *e2e) enrol(t *testing.T, roles ...hub.Role) (*btcec.PrivateKey, string, *m2mclient.Session) {
	t.Helper()
	key := newKey(t)
	d, err := e.reg.Enrol(t.Context(), hub.EnrolRequest{Key: hub.PubKeyOf(key.PubKey()), Roles: roles}, "test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := m2mclient.Dial(t.Context(), e.srv.Addr().String(), e.hubKey.PubKey(), key, m2mclient.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return key, d.ID, s
}

func (e *e2e) lookup(ctx context.Context, id chainhash.Hash) (*wire.MsgTx, error) {
	info, err := e.chain.GetTx(ctx, id)
	return info.Tx, err
}

func (e *e2e) height(t *testing.T) uint32 {
	t.Helper()
	h, err := e.chain.BlockCount(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return uint32(h)
}

// fundAndOpen opens a channel and mines its funding while FundAndOpen waits
// for ChannelReady.
func (e *e2e) fundAndOpen(t *testing.T, d *m2mclient.Device, capacity btcutil.Amount, expiry uint32) *m2mclient.Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Mine until the hub has seen the funding at depth; a block
		// every half second is plenty and keeps the test independent of
		// when exactly the funding reaches the mempool.
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_, _ = e.node.Mine(ctx, 1)
			}
		}
	}()
	c, err := d.FundAndOpen(ctx, e.wallet, e.lookup, capacity, expiry)
	if err != nil {
		t.Fatalf("FundAndOpen: %v", err)
	}
	return c
}

func TestDeviceAgainstHub(t *testing.T) {
	e := startE2E(t)
	ctx := t.Context()
	devKey, _, devSess := e.enrol(t, hub.RolePayer)
	_, provID, provSess := e.enrol(t, hub.RoleProvider)

	dir := t.TempDir()
	newDevice := func(s *m2mclient.Session) *m2mclient.Device {
		d, err := m2mclient.NewDevice(s, m2mclient.DeviceConfig{
			Key: devKey, HubKey: e.hubKey.PubKey(), Params: regtestParams, Dir: dir,
			Policy: m2mclient.Policy{
				MaxPerPayment: 2_000_000, MaxPerHour: 10_000_000,
				AllowedProviders: []string{provID}, MaxHold: 3_000_000,
			},
			AutoAuthorize: true, Logger: quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := newDevice(devSess)
	t.Cleanup(func() { _ = d.Close() })
	prov, err := m2mclient.NewProvider(provSess, m2mclient.ProviderConfig{HubKey: e.hubKey.PubKey(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Close() })

	const capacity = 100_000
	ch := e.fundAndOpen(t, d, capacity, e.height(t)+50)
	if ch.Status != m2mclient.StatusReady {
		t.Fatalf("channel %s", ch.Status)
	}

	t.Run("Pay", func(t *testing.T) {
		var paid lnwire.MilliSatoshi
		for i, amt := range []lnwire.MilliSatoshi{1_500, 250_000, 1_000_000} {
			r, err := d.Pay(ctx, ch.ID, provID, amt, "kWh")
			if err != nil {
				t.Fatalf("pay %d: %v", i, err)
			}
			paid += amt
			if r.Seq != uint64(i+1) || r.Paid != paid || r.Amount != amt || r.Payee != provID {
				t.Fatalf("receipt %d: %+v", i, r)
			}
			select {
			case pr := <-prov.Receipts():
				if pr.ID() != r.ID() {
					t.Fatalf("provider got receipt %x, device %x", pr.ID(), r.ID())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("provider got no receipt")
			}
		}
		b, err := d.Balance(ch.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b.Paid != paid || b.Available != lnwire.NewMSatFromSatoshis(capacity-330)-paid {
			t.Fatalf("balance %+v", b)
		}
		hist, err := d.History(ctx, ch.ID)
		if err != nil || len(hist) != 3 {
			t.Fatalf("history: %d receipts, %v", len(hist), err)
		}
	})

	t.Run("ErrPolicy", func(t *testing.T) {
		if _, err := d.Pay(ctx, ch.ID, provID, 2_000_001, ""); !errors.Is(err, m2mclient.ErrPolicy) {
			t.Fatalf("over per-payment: %v", err)
		}
		if _, err := d.Pay(ctx, ch.ID, "dev-stranger", 1, ""); !errors.Is(err, m2mclient.ErrPolicy) {
			t.Fatalf("not allowed: %v", err)
		}
	})

	t.Run("HoldCapture", func(t *testing.T) {
		before, _ := d.Balance(ch.ID)
		id, err := prov.RequestHold(ctx, devIDOf(t, e, devKey), 2_000_000, time.Hour, "charging")
		if err != nil {
			t.Fatalf("RequestHold: %v", err)
		}
		if err := prov.Capture(ctx, id, 700_000, "7 kWh"); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-prov.Receipts():
			if r.Amount != 700_000 || r.HoldID != id {
				t.Fatalf("capture receipt %+v", r)
			}
		case e := <-prov.Errors():
			t.Fatalf("capture refused: %v", e)
		case <-time.After(10 * time.Second):
			t.Fatal("no receipt for the capture")
		}
		if err := prov.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			b, _ := d.Balance(ch.ID)
			return b.Reserved == 0 && b.Paid == before.Paid+700_000
		})

		// Over MaxHold: the device refuses, the provider hears so.
		if _, err := prov.RequestHold(ctx, devIDOf(t, e, devKey), 3_000_001, time.Hour, ""); !errors.Is(err, m2mclient.ErrHoldRefused) {
			t.Fatalf("hold over MaxHold: %v", err)
		}
	})

	t.Run("Restart", func(t *testing.T) {
		// A second Device over the same directory sees the same channel.
		before, _ := d.Balance(ch.ID)
		off := newDevice(nil)
		defer off.Close()
		after, err := off.Balance(ch.ID)
		if err != nil || after != before {
			t.Fatalf("reloaded balance %+v (%v), want %+v", after, err, before)
		}
	})

	t.Run("Resync", func(t *testing.T) {
		// What a crash leaves behind: a signed state saved as pending
		// but never sent (a), or sent and acknowledged with the PayAck
		// lost (b). A restarted device resolves it before paying again.
		_ = d.Close()
		store, err := m2mclient.NewFileStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		load := func() m2mclient.ChannelState {
			sts, err := store.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range sts {
				if st.Funding == ch.ID {
					return st
				}
			}
			t.Fatal("channel not stored")
			return m2mclient.ChannelState{}
		}
		st := load()
		out, err := channel.NewOutput(st.Params(devKey.PubKey()))
		if err != nil {
			t.Fatal(err)
		}
		next := channel.State{ChannelID: ch.ID, Seq: st.Seq + 1, Paid: st.Paid + 3_000}
		sig, err := out.SignClaim(devKey, next)
		if err != nil {
			t.Fatal(err)
		}
		st.Pending = &m2mclient.PendingPayment{Seq: next.Seq, Paid: next.Paid, Amount: 3_000, Payee: provID, Sig: [64]byte(sig.Serialize())}
		if err := store.Save(ctx, st); err != nil {
			t.Fatal(err)
		}
		d = newDevice(devSess)
		if b, _ := d.Balance(ch.ID); b.Unconfirmed != 3_000 {
			t.Fatalf("pending not reloaded: %+v", b)
		}
		r, err := d.Pay(ctx, ch.ID, provID, 1_000, "")
		if err != nil {
			t.Fatalf("pay after restart with an unsent state: %v", err)
		}
		if r.Seq != next.Seq+1 || r.Paid != next.Paid+1_000 {
			t.Fatalf("unsent state not resent first: receipt seq %d paid %d", r.Seq, r.Paid)
		}

		// (b): roll the record back one state, with that state pending.
		_ = d.Close()
		acked := load()
		rolled := acked
		rolled.Seq, rolled.Paid = acked.Seq-1, acked.Paid-1_000
		rolled.Pending = &m2mclient.PendingPayment{Seq: acked.Seq, Paid: acked.Paid, Amount: 1_000, Payee: provID, Sig: acked.Sig}
		if err := store.Save(ctx, rolled); err != nil {
			t.Fatal(err)
		}
		d = newDevice(devSess)
		r, err = d.Pay(ctx, ch.ID, provID, 500, "")
		if err != nil {
			t.Fatalf("pay after restart with an acknowledged pending state: %v", err)
		}
		if r.Seq != acked.Seq+1 || r.Paid != acked.Paid+500 {
			t.Fatalf("acknowledged state not adopted: receipt seq %d paid %d", r.Seq, r.Paid)
		}
		for len(prov.Receipts()) > 0 {
			<-prov.Receipts()
		}
	})

	t.Run("Latency", func(t *testing.T) {
		const n = 300
		lat := make([]time.Duration, n)
		for i := range lat {
			t0 := time.Now()
			if _, err := d.Pay(ctx, ch.ID, provID, 1, ""); err != nil {
				t.Fatal(err)
			}
			lat[i] = time.Since(t0)
			select {
			case <-prov.Receipts():
			default:
			}
		}
		slices.Sort(lat)
		t.Logf("Pay round trip over loopback incl. fsyncs, %d payments: p50 %v p99 %v", n, lat[n/2], lat[n*99/100])
	})

	t.Run("CloseChannel", func(t *testing.T) {
		b, _ := d.Balance(ch.ID)
		dest := p2tr(t)
		tx, err := d.CloseChannel(ctx, ch.ID, dest)
		if err != nil {
			t.Fatalf("CloseChannel: %v", err)
		}
		if _, err := e.node.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		info, err := e.chain.GetTx(ctx, tx.TxHash())
		if err != nil || info.Confirmations < 1 {
			t.Fatalf("close tx not confirmed: %v %+v", err, info)
		}
		var got int64 = -1
		for _, out := range info.Tx.TxOut {
			if string(out.PkScript) == string(dest) {
				got = out.Value
			}
		}
		if want := int64(capacity - b.Paid.ToSatoshis()); got != want {
			t.Fatalf("device got %d sat on chain, want %d", got, want)
		}
		if _, err := d.Pay(ctx, ch.ID, provID, 1, ""); !errors.Is(err, m2mclient.ErrNotReady) {
			t.Fatalf("pay after close: %v", err)
		}
	})
}

// devIDOf returns the registry id of a device key.
func devIDOf(t *testing.T, e *e2e, key *btcec.PrivateKey) string {
	t.Helper()
	return hub.DeviceID(hub.PubKeyOf(key.PubKey()))
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRefundWithHubGone: the device recovers its channel alone after
// expiry, with the hub stopped and no session (invariant I3).
func TestRefundWithHubGone(t *testing.T) {
	e := startE2E(t)
	ctx := t.Context()
	devKey, _, devSess := e.enrol(t, hub.RolePayer)
	_, provID, provSess := e.enrol(t, hub.RoleProvider)
	dir := t.TempDir()
	cfg := m2mclient.DeviceConfig{Key: devKey, HubKey: e.hubKey.PubKey(), Params: regtestParams, Dir: dir, Logger: quiet()}
	d, err := m2mclient.NewDevice(devSess, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const capacity = 50_000
	expiry := e.height(t) + 12
	ch := e.fundAndOpen(t, d, capacity, expiry)
	if _, err := d.Pay(ctx, ch.ID, provID, 5_000, ""); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	_ = devSess.Close()
	// Sessions first: a client that redials while the server is closing
	// holds Server.Close up for the handshake timeout.
	_ = provSess.Close()
	e.stopHub()

	off, err := m2mclient.NewDevice(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	dest := p2tr(t)
	// Before expiry the refund is time-locked: a node either refuses it
	// or (btcd on regtest, which relays non-standard transactions) keeps
	// it in the mempool without mining it.
	txid, err := off.BroadcastRefund(ctx, e.chain, ch.ID, dest, 1_000)
	early := err == nil
	if err != nil && !errors.Is(err, btcdchain.ErrRejected) {
		t.Fatalf("refund before expiry: %v", err)
	}
	if early {
		if _, err := e.node.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if n, err := e.chain.Confirmations(ctx, txid); err != nil || n != 0 {
			t.Fatalf("refund mined before expiry: %d confirmations, %v", n, err)
		}
	}
	for e.height(t) < expiry {
		if _, err := e.node.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if !early {
		if txid, err = off.BroadcastRefund(ctx, e.chain, ch.ID, dest, 1_000); err != nil {
			t.Fatalf("refund after expiry: %v", err)
		}
	}
	if _, err := e.node.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	info, err := e.chain.GetTx(ctx, txid)
	if err != nil || info.Confirmations < 1 {
		t.Fatalf("refund not confirmed after expiry: %v %+v", err, info)
	}
	if got := info.Tx.TxOut[0].Value; got != capacity-1_000 {
		t.Fatalf("refund pays %d sat, want %d", got, capacity-1_000)
	}
}
