package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/settlement"
)

// settlementSummary is the settled epoch, as read back from the chain.
type settlementSummary struct {
	Epoch uint64   `json:"epoch"`
	Txids []string `json:"txids"`
	// VBytes is the batch's virtual size; Channels the channels it
	// settles and Payouts the providers it pays without one.
	VBytes   int64 `json:"vbytes"`
	Channels int   `json:"channels"`
	Payouts  int   `json:"payouts"`
	// VBytesPerChannel is what one cooperative channel adds to the batch
	// (its key-path input and its next channel's output), measured on the
	// transaction; VBytesAvgPerChannel spreads the whole batch (payouts,
	// revenue, anchor and header included) over its channels.
	VBytesPerChannel    float64 `json:"vbytes_per_channel"`
	VBytesAvgPerChannel float64 `json:"vbytes_avg_per_channel"`
	FeeSat              int64   `json:"fee_sat"`
	RevenueSat          int64   `json:"hub_revenue_sat"`
	ConfirmHeight       uint32  `json:"confirm_height"`
	ReceiptsRoot        string  `json:"receipts_root"`
	Seconds             float64 `json:"seconds"`
}

// receiptCheck is the receipt the demo verified against the chain.
type receiptCheck struct {
	ID            string `json:"id"`
	Leaf          uint64 `json:"leaf"`
	Leaves        uint64 `json:"leaves"`
	Txid          string `json:"txid"`
	Confirmations int64  `json:"confirmations"`
}

// settleEpoch settles the open epoch through the admin API (the POST
// /v1/settlement/run of `hubctl settle run`), mines until the batch
// confirms, and checks every participant's part of it on chain against
// the hub's plan and the demo's own records.
func settleEpoch(w *world, chain *demoChain, sum *summary) error {
	ctx, say := w.ctx, w.say
	start := time.Now()
	say("9. the operator settles the epoch (hubctl settle run): nets per participant, one batch transaction")
	// The dry run names every participant's net, mode and settled
	// amount; the run itself reports only its transactions.
	plan, err := w.admin.SettlementPlan(ctx)
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	run, err := w.admin.Settle(ctx)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	ss := &sum.Settlement
	ss.Epoch = run.Epoch.Number
	// hubd mines nothing: mine a block whenever the batch is out, until
	// the hub's poll loop sees it confirmed.
	deadline := time.Now().Add(90 * time.Second)
	for run.State != settlement.RunConfirmed {
		switch {
		case run.State == settlement.RunFailed || run.State == settlement.RunReplaced:
			return fmt.Errorf("epoch %d run %s: %s", run.Epoch.Number, run.State, run.Error)
		case time.Now().After(deadline):
			return fmt.Errorf("epoch %d still %s", run.Epoch.Number, run.State)
		case run.State == settlement.RunBroadcast:
			// The hub counts confirmations as blocks arrive,
			// so keep mining until it calls the run confirmed.
			if _, err := chain.c.Mine(ctx, 1); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		st, err := w.admin.SettlementStatus(ctx, run.Epoch.Number, 1)
		if err != nil {
			return err
		}
		if len(st.Runs) == 0 {
			return fmt.Errorf("epoch %d has no run", run.Epoch.Number)
		}
		run = st.Runs[0]
	}
	ss.Txids, ss.ConfirmHeight, ss.ReceiptsRoot = run.Txids, run.ConfirmHeight, run.Anchor.ReceiptsRoot.String()
	ss.Seconds = time.Since(start).Seconds()

	byID := map[string]*participant{}
	for _, p := range w.parts {
		byID[p.ID] = p
	}
	for _, pv := range plan.Participants {
		p := byID[pv.ID]
		if p == nil {
			return fmt.Errorf("the plan settles %s, who took no part", pv.ID)
		}
		if int64(pv.Net) != p.NetMsat {
			return fmt.Errorf("%s: the hub's net is %d msat, its own records say %d", p.Name, int64(pv.Net), p.NetMsat)
		}
		p.Mode, p.SettledSat, p.CarriedMsat = pv.Mode, int64(pv.Settled), int64(pv.Carried)
	}
	for _, c := range plan.Carried {
		if p := byID[c.Participant]; p != nil && c.Reason != string(settlement.CarryRemainder) {
			p.CarryReason = c.Reason
		}
	}
	if err := w.readBatch(chain, ss); err != nil {
		return err
	}
	for _, p := range w.parts {
		if p.OnChainSat != p.SettledSat {
			return fmt.Errorf("%s: the batch moves %d sat, the plan %d", p.Name, p.OnChainSat, p.SettledSat)
		}
	}
	say("   epoch %d confirmed at height %d in %.1f s: %d transaction(s)", ss.Epoch, ss.ConfirmHeight, ss.Seconds, len(ss.Txids))
	return nil
}

// readBatch reads the confirmed batch from the node: what each
// participant's channel or payout got, the fee (inputs − outputs, with the
// inputs' values from their funding transactions) and the sizes.
func (w *world) readBatch(chain *demoChain, ss *settlementSummary) error {
	ctx := w.ctx
	var weight, chanWeight int64
	for _, id := range ss.Txids {
		h, err := chainhash.NewHashFromStr(id)
		if err != nil {
			return err
		}
		info, err := chain.c.GetTx(ctx, *h)
		if err != nil {
			return fmt.Errorf("batch %s: %w", id, err)
		}
		if info.Confirmations < 1 {
			return fmt.Errorf("batch %s is not in a block", id)
		}
		tx := info.Tx
		weight += blockchain.GetTransactionWeight(btcutil.NewTx(tx))
		var in, out int64
		for i, txIn := range tx.TxIn {
			prev, err := chain.c.GetTx(ctx, txIn.PreviousOutPoint.Hash)
			if err != nil {
				return err
			}
			value := prev.Tx.TxOut[txIn.PreviousOutPoint.Index].Value
			in += value
			// Input i spends a channel; output i is its next channel.
			for _, p := range w.parts {
				if p.Channel == txIn.PreviousOutPoint.String() {
					p.OnChainSat = tx.TxOut[i].Value - value
					ss.Channels++
					// Outpoint, sequence and script length are
					// non-witness bytes (4 WU each); the key-path
					// signature is witness (1 WU per byte).
					stripped := 32 + 4 + 4 + btcwire.VarIntSerializeSize(uint64(len(txIn.SignatureScript))) + len(txIn.SignatureScript)
					chanWeight = int64(4*stripped + txIn.Witness.SerializeSize() + 4*tx.TxOut[i].SerializeSize())
				}
			}
		}
		for i, o := range tx.TxOut {
			out += o.Value
			known := i < len(tx.TxIn) || o.Value == 0 // a next channel, or the anchor
			for _, p := range w.parts {
				if p.PayoutScript != nil && string(o.PkScript) == string(p.PayoutScript) {
					p.OnChainSat += o.Value
					ss.Payouts++
					known = true
				}
			}
			if !known {
				ss.RevenueSat += o.Value
			}
		}
		ss.FeeSat += in - out
	}
	ss.VBytes = (weight + 3) / 4
	ss.VBytesPerChannel = float64(chanWeight) / 4
	if ss.Channels > 0 {
		ss.VBytesAvgPerChannel = float64(weight) / 4 / float64(ss.Channels)
	}
	return nil
}

// verifyReceipt checks one receipt against the chain the way a device or
// provider would: the hub's signature with the pinned key, then the hub's
// Merkle proof up to the root that the batch's OP_RETURN anchors, read from
// the node.
func verifyReceipt(ctx context.Context, admin *httpapi.Client, chain *demoChain, hubKey *btcec.PublicKey,
	r *channel.Receipt) (receiptCheck, error) {

	if r == nil {
		return receiptCheck{}, errors.New("no receipt to verify")
	}
	if err := r.VerifyKey(hubKey); err != nil {
		return receiptCheck{}, err
	}
	id := r.ID()
	pv, err := admin.ReceiptProof(ctx, id)
	if err != nil {
		return receiptCheck{}, fmt.Errorf("proof: %w", err)
	}
	// ProofJSON is the client library's ReceiptProof in JSON.
	b, err := json.Marshal(pv.Proof)
	if err != nil {
		return receiptCheck{}, err
	}
	var proof m2mclient.ReceiptProof
	if err := json.Unmarshal(b, &proof); err != nil {
		return receiptCheck{}, fmt.Errorf("hub's proof: %w", err)
	}
	got, err := m2mclient.VerifyReceiptOnChain(ctx, r, proof, chain)
	if err != nil {
		return receiptCheck{}, err
	}
	return receiptCheck{ID: fmt.Sprintf("%x", id), Leaf: proof.Merkle.Index, Leaves: proof.Merkle.Leaves,
		Txid: got.Txid.String(), Confirmations: got.Confirmations}, nil
}
