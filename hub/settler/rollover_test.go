package settler_test

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/txscript"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// TestClaimAfterRollover claims a channel that a settlement rolled over:
// its record has a masked pending id of its own but keeps the hub key of
// the channel the device opened, so the hub must derive its key from the
// root pending id to sign the claim.
func TestClaimAfterRollover(t *testing.T) {
	e := newSettleEnv(t)
	p := e.device("payer", true)
	op := e.openChannel(p, 100_000)
	e.h.Mine(t, 1)
	e.pay(op, p, "provider", 5_000_000)

	s := e.settlement(nil)
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = e.confirm(s, r.Epoch.Number)
	next := readyChannel(t, e, p)
	if next.Funding.Hash != hubtest.RunTxids(t, r)[0] {
		t.Fatalf("payer's ready channel %v is not an output of the batch", next.Funding)
	}
	if root, ok := channels.RootPendingID(next, e.h.PubKey()); !ok || root == next.PendingID {
		t.Fatalf("next channel's pending id is not a rollover's (root found %v)", ok)
	}

	e.pay(next.Funding, p, "provider", 20_000_000)
	txid, err := e.h.Channels().Claim(t.Context(), next.Funding)
	if err != nil {
		t.Fatalf("claim of the rolled-over channel: %v", err)
	}
	e.h.Mine(t, 1)
	tx := e.chainTx(txid)
	if tx.TxIn[0].PreviousOutPoint != next.Funding {
		t.Fatalf("claim spends %v, want %v", tx.TxIn[0].PreviousOutPoint, next.Funding)
	}
}

// readyChannel returns a device's ready channel.
func readyChannel(t *testing.T, e *settleEnv, id string) hub.ChannelRecord {
	t.Helper()
	recs, err := e.h.Store().ChannelsByDevice(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Status == hub.ChannelReady {
			return rec
		}
	}
	t.Fatalf("%s has no ready channel", id)
	return hub.ChannelRecord{}
}

// TestWalletRevenueKey checks that the faucet wallet's key is the key of
// its own address as the settlement sees it, so hubd can take both from
// one wallet and bump its batches by CPFP.
func TestWalletRevenueKey(t *testing.T) {
	e := newSettleEnv(t)
	w := e.h.Wallet()
	script, err := txscript.PayToAddrScript(w.Address())
	if err != nil {
		t.Fatal(err)
	}
	e.settlement(func(c *settler.Config) { c.RevenueScript, c.RevenueKey = script, w.PrivKey() })
	_, err = settler.New(settler.Config{
		Store: e.h.Store(), Channels: e.h.Channels(), Chain: btcdchain.HubChain{Client: e.h.Chain()}, Cosigners: e,
		RevenueScript: script, RevenueKey: e.revKey,
	})
	if !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("a revenue key that does not own the script: %v, want ErrInvalid", err)
	}
}
