package channels_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// regtestChain starts a real btcd regtest node whose coinbase pays a hub
// wallet, mined past taproot activation.
func regtestChain(t *testing.T) (*regtest.Node, *btcdchain.Client, *btcdchain.Wallet) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts btcd")
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")
	params := &chaincfg.RegressionNetParams
	addr, err := btcdchain.KeyAddress(keyPath, params)
	if err != nil {
		t.Fatal(err)
	}
	node, err := regtest.Start(t.Context(), regtest.Config{Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Stop(context.Background()) })
	rpc := node.RPC()
	client, err := btcdchain.New(btcdchain.Config{Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert, Params: params, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	w, err := btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: keyPath, Chain: client, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.MineToActivation(t.Context()); err != nil {
		t.Fatal(err)
	}
	return node, client, w
}

// fundOnChain pays amount to pkScript from the wallet and returns the
// outpoint.
func fundOnChain(t *testing.T, c *btcdchain.Client, w *btcdchain.Wallet, pkScript []byte, amount btcutil.Amount) btcwire.OutPoint {
	t.Helper()
	_, addrs, _, err := txscript.ExtractPkScriptAddrs(pkScript, &chaincfg.RegressionNetParams)
	if err != nil || len(addrs) != 1 {
		t.Fatalf("script address: %v", err)
	}
	txid, err := w.Send(t.Context(), addrs[0], amount)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.GetTx(t.Context(), txid)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range info.Tx.TxOut {
		if bytes.Equal(o.PkScript, pkScript) && o.Value == int64(amount) {
			return btcwire.OutPoint{Hash: txid, Index: uint32(i)}
		}
	}
	t.Fatal("funding output not found")
	return btcwire.OutPoint{}
}

// TestRegtestOpenPayClaim runs a channel's whole life on a real btcd:
// funded by the wallet, ready after min depth, paid over a real session,
// claimed by the hub, the claim confirmed with exactly the expected amounts.
func TestRegtestOpenPayClaim(t *testing.T) {
	node, client, w := regtestChain(t)
	ctx := t.Context()
	payout, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(chantest.MustKey(t).PubKey()))
	if err != nil {
		t.Fatal(err)
	}
	h := chantest.NewHarness(t, btcdchain.HubChain{Client: client}, func(c *channels.Config) {
		c.PayoutScript = payout
		c.PollInterval = 100 * time.Millisecond
		c.FeeRate = 2
	})
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	height, err := client.BlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const capacity = btcutil.Amount(200_000)
	expiry := uint32(height) + 500

	t.Run("FundingMismatch", func(t *testing.T) {
		for _, wrong := range []struct {
			name   string
			script func([]byte) []byte
			value  btcutil.Amount
		}{
			{"WrongValue", func(s []byte) []byte { return s }, capacity - 1},
			{"WrongScript", func([]byte) []byte { return payout }, capacity},
		} {
			off, _ := payer.Offer(capacity, expiry)
			op := fundOnChain(t, client, w, wrong.script(off.PkScript), wrong.value)
			if _, err := node.Mine(ctx, 1); err != nil {
				t.Fatal(err)
			}
			payer.Send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
			chantest.Refusal(payer, wire.ChanFundingMismatch)
			rec, err := h.Store.ChannelByPending(ctx, off.PendingID)
			if err != nil || rec.Status != hub.ChannelFailed {
				t.Fatalf("%s: channel %s, %v", wrong.name, rec.Status, err)
			}
		}
	})

	off, out := payer.Offer(capacity, expiry)
	op := fundOnChain(t, client, w, off.PkScript, capacity)
	payer.Send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
	// In the mempool: not ready, however long the hub looks.
	time.Sleep(300 * time.Millisecond)
	if rec, _ := h.Ch.Channel(ctx, op); rec.Status != hub.ChannelPending {
		t.Fatalf("status %s before confirmation", rec.Status)
	}
	if _, err := node.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ready := chantest.Expect[*wire.ChannelReady](payer)
	if ready.Outpoint != op {
		t.Fatalf("ready for %v", ready.Outpoint)
	}
	c := &chantest.Channel{Op: op, Out: out, Pend: off.PendingID}
	var paid msat.Amount
	for _, amt := range []msat.Amount{12_345_678, 1_000, 999, 40_000_000} {
		payer.Pay(c, amt, prov.ID)
		chantest.Expect[*wire.ReceiptNotice](prov)
		paid += amt
	}
	paidSat := paid.ToSatoshis()

	txid, err := h.Ch.Claim(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if cl := chantest.Expect[*wire.ChannelClosed](payer); cl.Txid != txid {
		t.Fatal("ChannelClosed names another txid")
	}
	if _, err := node.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	info, err := client.GetTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	if info.Confirmations < 1 {
		t.Fatal("claim not confirmed")
	}
	tx := info.Tx
	weight := int64(tx.SerializeSizeStripped()*3 + tx.SerializeSize())
	fee := 2 * btcutil.Amount((weight+3)/4)
	if len(tx.TxOut) != 2 ||
		tx.TxOut[0].Value != int64(capacity-paidSat) || !bytes.Equal(tx.TxOut[0].PkScript, off.PkScript) ||
		tx.TxOut[1].Value != int64(paidSat-fee) || !bytes.Equal(tx.TxOut[1].PkScript, payout) {
		t.Fatalf("claim outputs %d→%x, %d→%x; want %d to the next channel output and %d to the hub",
			tx.TxOut[0].Value, tx.TxOut[0].PkScript, tx.TxOut[1].Value, tx.TxOut[1].PkScript,
			capacity-paidSat, paidSat-fee)
	}
	// The next channel output is on chain, unspent, for the device.
	next, err := client.TxOut(ctx, btcwire.OutPoint{Hash: txid, Index: 0}, false)
	if err != nil || next.Value != capacity-paidSat {
		t.Fatalf("next channel output %v, %v", next.Value, err)
	}
	waitStatus(t, h, op, hub.ChannelClosed)
}

func waitStatus(t *testing.T, h *chantest.Harness, op btcwire.OutPoint, want hub.ChannelStatus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := h.Ch.Channel(context.Background(), op)
		if err == nil && rec.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s (%v), want %s", rec.Status, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
