package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubproc"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// settleContract prices a passage at 10,000 sat with a 10 % hub fee, so
// the epoch's fees (1,000 sat per passage) pay the batch's mining fee.
var settleContract = []byte(`{"kind":"toll","version":1,"id":"settle-kill-flat","currency":"msat","fee":{"bps":"1000"},` +
	`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"10000000"}}}`)

// startSettleHub (re)starts hubd on h.dir with env added to its
// environment and its BOLT 8 port fixed at port, so a device's Session
// reconnects by itself to the restarted hub.
func (h *meterHub) startSettleHub(port int, env ...string) {
	t := h.t
	t.Helper()
	logs := &syncBuffer{}
	args := append(meterHubArgs(), "--listen", "127.0.0.1:"+strconv.Itoa(port))
	p, err := hubproc.Start(context.Background(), hubproc.Config{
		Binary: filepath.Join(binDir, "hubd"), DataDir: h.dir, Args: args, Env: env, Output: logs,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
		if t.Failed() {
			t.Logf("hubd log (%v):\n%s", env, logs.String())
		}
	})
	h.p = &hubProc{Proc: p, rt: p.Runtime()}
	h.hubKey = h.p.hubKey(t)
	token, err := datadir.Dir(h.dir).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	h.admin = httpapi.NewClient(h.p.rt.AdminAddr, token)
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(h.dir, datadir.NATSKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if h.hub, err = nats.Connect(h.p.rt.NATSURL, opt, nats.Name("settle kill test operator")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.hub.Close)
	if h.js, err = jetstream.New(h.hub); err != nil {
		t.Fatal(err)
	}
}

// chain connects to the running hubd's regtest btcd.
func (h *meterHub) chain() *btcdchain.Client {
	h.t.Helper()
	rt := h.p.rt
	c, err := btcdchain.New(btcdchain.Config{
		Host: rt.Btcd.Host, User: rt.Btcd.User, Pass: rt.Btcd.Pass, CertPath: rt.Btcd.CertPath,
		Params: &chaincfg.RegressionNetParams, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// mineEvery mines a block every 300 ms on the running hubd's btcd until
// the returned stop is called (hubd mines nothing itself).
func (h *meterHub) mineEvery(ctx context.Context) (stop func()) {
	chain := h.chain()
	stopMining := chain.MineEvery(ctx, 300*time.Millisecond)
	return func() {
		stopMining()
		chain.Close()
	}
}

// freePort returns a TCP port free at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestKill9AtEachSettlementState kills the real hubd with SIGKILL right
// after each state of a settlement run is durable (hubd's test-only crash
// point), restarts it without the crash point and checks on chain that the
// epoch settled exactly once: every settled channel's old outpoint is spent
// by the run's batch and nothing else, the provider's payout address was
// paid once, the txid is the one stored before the kill once the run was
// signed, and the online payer's channel moved to its next outpoint and
// pays on it.
func TestKill9AtEachSettlementState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd and its regtest btcd twice per state")
	}
	for _, state := range []settlement.RunState{
		settlement.RunPlanned, settlement.RunSigning, settlement.RunSigned,
		settlement.RunBroadcast, settlement.RunConfirmed,
	} {
		t.Run(string(state), func(t *testing.T) { settleKillTrial(t, state) })
	}
}

func settleKillTrial(t *testing.T, state settlement.RunState) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h := &meterHub{t: t, dir: t.TempDir()}
	port := freePort(t)
	h.startSettleHub(port, crashAfterEnv+"="+string(state))

	contract := h.publish(t, ctx, settleContract)
	prov := h.addProvider(t, ctx, nil, "gate")
	payoutAddr := newPayoutAddr(t)
	mustHubctl(t, h.dir, "device", "set-payout", prov.id, payoutAddr.EncodeAddress())

	onKey, onID := h.enrol(t, ctx, "online-car", hub.RolePayer)
	offKey, offID := h.enrol(t, ctx, "offline-car", hub.RolePayer)
	online := h.connect(t, ctx, onKey, onID, false)
	offline := h.connect(t, ctx, offKey, offID, false)
	h.fund(t, ctx, 1_000_000, online, offline)

	at := rfc(time.Now().UTC().Add(-time.Minute))
	for _, py := range []*payer{online, offline} {
		e := metering.Event{ID: "passage-" + py.id, Subject: py.id, Time: at,
			Data: metering.Data{Contract: contract, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
		prov.send(t, ctx, e)
		assertPaid(t, prov.receipts(t, e.ID), contract, 10_000_000)
	}
	// The offline payer goes away before the run: the hub can settle it
	// only by its claim signature.
	_ = offline.dev.Close()
	_ = offline.sess.Close()

	// Settle; hubd kills itself once the run's state is durable, possibly
	// before it answers.
	stopMining := h.mineEvery(ctx)
	settleErr := make(chan error, 1)
	go func() {
		_, err := h.admin.Settle(ctx)
		settleErr <- err
	}()
	select {
	case <-h.p.Done():
	case <-ctx.Done():
		t.Fatalf("hubd did not crash after %s", state)
	}
	stopMining()
	<-settleErr // whatever it is: the hub died around it
	h.hub.Close()

	// What the run was when hubd died, from its store.
	before := storedRun(t, ctx, h.dir)
	if before.State != state {
		t.Fatalf("stored run is %s, want %s (the crash point)", before.State, state)
	}
	beforeTxids := txids(t, before.Txs)
	t.Logf("killed after %s: epoch %d attempt %d, txids %v", state, before.Epoch.Number, before.Attempt, beforeTxids)

	// Restart without the crash point and mine until the epoch confirms.
	h.startSettleHub(port)
	stopMining = h.mineEvery(ctx)
	defer func() { stopMining() }()
	var final httpapi.RunView
	for {
		var st httpapi.StatusView
		out := mustHubctl(t, h.dir, "--json", "settle", "status", "--epoch", strconv.FormatUint(before.Epoch.Number, 10))
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("settle status: %v\n%s", err, out)
		}
		if len(st.Runs) > 0 {
			final = st.Runs[0]
			if final.State == settlement.RunConfirmed {
				break
			}
			if final.State.Final() {
				t.Fatalf("epoch %d run %s: %s", before.Epoch.Number, final.State, final.Error)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("epoch %d not confirmed after the restart: %+v", before.Epoch.Number, final)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopMining()
	stopMining = func() {}

	if len(final.Txids) != 1 {
		t.Fatalf("confirmed run has txids %v, want one batch", final.Txids)
	}
	if state != settlement.RunPlanned && state != settlement.RunSigning {
		if len(beforeTxids) != 1 || beforeTxids[0] != final.Txids[0] {
			t.Fatalf("confirmed batch %v, stored before the kill %v", final.Txids, beforeTxids)
		}
	}
	var batchID chainhash.Hash
	if err := chainhash.Decode(&batchID, final.Txids[0]); err != nil {
		t.Fatal(err)
	}

	// From the chain: the batch is confirmed, it spends both old
	// outpoints, which are gone from the UTXO set, and the provider's
	// payout address was paid by it alone.
	chain := h.chain()
	defer chain.Close()
	_, next := checkBatch(t, ctx, chain, batchID, payoutAddr, online, offline)

	// The online payer followed the settlement to its next outpoint and
	// pays on it.
	deadline := time.Now().Add(20 * time.Second)
	for !onChannel(online.dev, next[online.id]) {
		if time.Now().After(deadline) {
			t.Fatalf("online payer did not move to %v: %+v", next[online.id], online.dev.Channels())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The device's session reconnects to the restarted hubd on its own
	// backoff; until it has, Pay answers ErrNotConnected.
	payCtx, cancelPay := context.WithTimeout(ctx, 20*time.Second)
	var rc *channel.Receipt
	var err error
	for {
		rc, err = online.dev.Pay(payCtx, next[online.id], prov.id, 1_000, "after the settlement")
		if !errors.Is(err, m2mclient.ErrNotConnected) || payCtx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancelPay()
	if err != nil {
		t.Fatalf("payment on the next channel: %v", err)
	}
	if rc.Channel != next[online.id] || rc.Seq != 1 {
		t.Fatalf("receipt on %v seq %d, want %v seq 1", rc.Channel, rc.Seq, next[online.id])
	}
	t.Logf("killed after %s: epoch %d settled once by %s (attempt %d) in %v",
		state, before.Epoch.Number, batchID, final.Attempt, time.Since(start).Round(time.Millisecond))
}

// storedRun reads, with hubd down, the latest settlement run from the
// store.
func storedRun(t *testing.T, ctx context.Context, dir string) settlement.Run {
	t.Helper()
	st, err := boltstore.New(boltstore.Config{Path: dir})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.Close()
	runs, err := st.Runs(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		t.Fatalf("%d runs stored, want 1", len(runs))
	}
	return runs[0]
}

// txids decodes a run's stored transactions into their ids.
func txids(t *testing.T, txs [][]byte) []string {
	t.Helper()
	ids := make([]string, 0, len(txs))
	for _, b := range txs {
		var tx btcwire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(b)); err != nil {
			t.Fatalf("stored tx: %v", err)
		}
		ids = append(ids, tx.TxHash().String())
	}
	return ids
}

// onChannel reports whether d has a ready channel at op with nothing paid.
func onChannel(d *m2mclient.Device, op btcwire.OutPoint) bool {
	for _, c := range d.Channels() {
		if c.ID == op && c.Status == m2mclient.StatusReady && c.Seq == 0 {
			return true
		}
	}
	return false
}

// indexOfInput is the index of the input spending op, or -1.
func indexOfInput(tx *btcwire.MsgTx, op btcwire.OutPoint) int {
	for i, in := range tx.TxIn {
		if in.PreviousOutPoint == op {
			return i
		}
	}
	return -1
}

// newPayoutAddr is a fresh regtest P2WPKH address for a provider's payout.
func newPayoutAddr(t *testing.T) *btcutil.AddressWitnessPubKeyHash {
	t.Helper()
	key, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// checkBatch checks on chain that the batch batchID is confirmed, spends
// every payer's channel (gone from the UTXO set) and is the only
// transaction paying payoutAddr. It returns the batch and each payer's
// next outpoint (input i continues at output i).
func checkBatch(t *testing.T, ctx context.Context, chain *btcdchain.Client, batchID chainhash.Hash, payoutAddr btcutil.Address,
	payers ...*payer) (*btcwire.MsgTx, map[string]btcwire.OutPoint) {
	t.Helper()
	info, err := chain.GetTx(ctx, batchID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Confirmations < 1 {
		t.Fatalf("batch %s has %d confirmations", batchID, info.Confirmations)
	}
	next := map[string]btcwire.OutPoint{}
	for _, py := range payers {
		i := indexOfInput(info.Tx, py.ch)
		if i < 0 {
			t.Fatalf("%s's channel %v is not an input of the batch", py.id, py.ch)
		}
		if _, err := chain.TxOut(ctx, py.ch, true); !errors.Is(err, btcdchain.ErrNotFound) {
			t.Fatalf("old outpoint %v of %s: gettxout %v, want spent", py.ch, py.id, err)
		}
		next[py.id] = btcwire.OutPoint{Hash: batchID, Index: uint32(i)}
	}
	paid, err := chain.AddressTxs(ctx, payoutAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(paid) != 1 || paid[0].Tx.TxHash() != batchID {
		ids := make([]string, len(paid))
		for i, p := range paid {
			ids[i] = p.Tx.TxHash().String()
		}
		t.Fatalf("payout address paid by %v, want only the batch %s", ids, batchID)
	}
	return info.Tx, next
}
