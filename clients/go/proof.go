package m2mclient

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/settlement"
)

// Errors of VerifyReceiptOnChain, one per way a receipt can fail to be
// proven on chain, so a caller (hubctl's exit codes, a provider's dispute
// tooling) can tell a forged receipt from a forged proof from a hub that
// anchored something else.
var (
	// ErrReceiptSignature means the receipt itself does not verify: a
	// field was changed after the hub signed it, or it is malformed.
	ErrReceiptSignature = errors.New("m2mclient: receipt signature does not verify")
	// ErrProofInvalid means the Merkle proof does not lead from the
	// receipt's ID to the root the proof names.
	ErrProofInvalid = errors.New("m2mclient: merkle proof does not verify")
	// ErrRootMismatch means the proof is consistent, but the settlement
	// transaction anchors a different receipts root.
	ErrRootMismatch = errors.New("m2mclient: transaction anchors another root")
	// ErrNoAnchor means the transaction named by the proof carries no
	// m2mhub anchor output (or more than one).
	ErrNoAnchor = errors.New("m2mclient: transaction has no anchor")
	// ErrNotConfirmed means the settlement transaction is known but not
	// yet in a block.
	ErrNotConfirmed = errors.New("m2mclient: settlement transaction not confirmed")
	// ErrTxNotFound is what a ChainLookup returns for a transaction the
	// chain does not know.
	ErrTxNotFound = errors.New("m2mclient: transaction not found")
)

// ChainLookup is what VerifyReceiptOnChain needs of the base chain. A btcd
// client (settlement/btcdchain.Client.GetTx) fits it with a two-line
// adapter; the library does not link an RPC client itself. Unlike TxLookup
// (used to find a funding output) it reports confirmations, which a proof
// needs.
type ChainLookup interface {
	// LookupTx returns the transaction txid and its confirmations (0
	// while it is in the mempool). It returns an error wrapping
	// ErrTxNotFound when the chain does not know it.
	LookupTx(ctx context.Context, txid chainhash.Hash) (tx *wire.MsgTx, confirmations int64, err error)
}

// ReceiptProof is the hub's evidence that a receipt is part of a settled
// epoch: the Merkle path from the receipt's ID to the epoch's receipts root,
// and the settlement transaction whose OP_RETURN anchors that root. Nothing
// in it is trusted; VerifyReceiptOnChain checks it against the chain.
type ReceiptProof struct {
	// Epoch is the settlement epoch the receipt belongs to.
	Epoch uint64
	// Merkle is the path from the receipt's leaf to Root.
	Merkle settlement.Proof
	// Root is the receipts root the hub says it anchored.
	Root [32]byte
	// Txid is the settlement transaction carrying the anchor.
	Txid chainhash.Hash
}

// proofJSON is ReceiptProof's JSON form: hashes in hex, the Merkle proof in
// its binary encoding (settlement.Proof.MarshalBinary), also in hex.
type proofJSON struct {
	Epoch  uint64         `json:"epoch"`
	Merkle string         `json:"merkle_proof"`
	Root   string         `json:"receipts_root"`
	Txid   chainhash.Hash `json:"txid"`
}

// MarshalJSON encodes p with hex hashes and the Merkle proof's binary
// encoding in hex.
func (p ReceiptProof) MarshalJSON() ([]byte, error) {
	mb, err := p.Merkle.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(proofJSON{
		Epoch: p.Epoch, Merkle: hex.EncodeToString(mb),
		Root: hex.EncodeToString(p.Root[:]), Txid: p.Txid,
	})
}

// UnmarshalJSON decodes what MarshalJSON writes. It returns an error
// wrapping ErrProofInvalid for a malformed proof or root.
func (p *ReceiptProof) UnmarshalJSON(b []byte) error {
	var j proofJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	mb, err := hex.DecodeString(j.Merkle)
	if err != nil {
		return fmt.Errorf("%w: merkle_proof: %v", ErrProofInvalid, err)
	}
	var out ReceiptProof
	if err := out.Merkle.UnmarshalBinary(mb); err != nil {
		return fmt.Errorf("%w: %w", ErrProofInvalid, err)
	}
	root, err := hex.DecodeString(j.Root)
	if err != nil || len(root) != 32 {
		return fmt.Errorf("%w: receipts_root must be 32 bytes of hex", ErrProofInvalid)
	}
	out.Epoch, out.Root, out.Txid = j.Epoch, [32]byte(root), j.Txid
	*p = out
	return nil
}

// OnChainReceipt is what VerifyReceiptOnChain established.
type OnChainReceipt struct {
	// ID is the receipt's ID, the proven Merkle leaf.
	ID [32]byte
	// Txid and Confirmations locate the settlement transaction.
	Txid          chainhash.Hash
	Confirmations int64
	// Anchor is the transaction's anchor, at output AnchorIndex.
	Anchor      settlement.Anchor
	AnchorIndex int
}

// VerifyReceiptOnChain checks, in this order, that r carries a valid
// signature by its HubKey, that proof leads from r's ID to proof.Root, that
// the chain holds proof.Txid in a block, and that the transaction's anchor
// commits to proof.Root. Each failure wraps its own error:
// ErrReceiptSignature, ErrProofInvalid, ErrTxNotFound (from chain),
// ErrNotConfirmed, ErrNoAnchor, ErrRootMismatch.
//
// It does not decide whether r.HubKey belongs to a hub the caller trusts:
// a device or provider that pinned its hub's key calls r.VerifyKey first.
// One confirmation is enough to pass; a caller wanting a deeper one checks
// the returned Confirmations.
func VerifyReceiptOnChain(ctx context.Context, r *channel.Receipt, proof ReceiptProof, chain ChainLookup) (OnChainReceipt, error) {
	// The pure checks come first: a forged receipt or proof is rejected
	// without asking the chain anything.
	if err := r.Verify(); err != nil {
		return OnChainReceipt{}, fmt.Errorf("%w: %w", ErrReceiptSignature, err)
	}
	id := r.ID()
	if err := settlement.VerifyProof(id, proof.Merkle, proof.Root); err != nil {
		return OnChainReceipt{}, fmt.Errorf("%w: receipt %x: %w", ErrProofInvalid, id, err)
	}
	tx, conf, err := chain.LookupTx(ctx, proof.Txid)
	if err != nil {
		return OnChainReceipt{}, fmt.Errorf("m2mclient: settlement tx %s: %w", proof.Txid, err)
	}
	// A lookup that answers with another transaction is a broken or
	// lying backend; the txid is what the anchor is bound to.
	if got := tx.TxHash(); got != proof.Txid {
		return OnChainReceipt{}, fmt.Errorf("m2mclient: chain returned tx %s for %s", got, proof.Txid)
	}
	out := OnChainReceipt{ID: id, Txid: proof.Txid, Confirmations: conf}
	if conf < 1 {
		return out, fmt.Errorf("%w: %s", ErrNotConfirmed, proof.Txid)
	}
	a, idx, err := settlement.FindAnchor(tx)
	if err != nil {
		return out, fmt.Errorf("%w: %s: %w", ErrNoAnchor, proof.Txid, err)
	}
	out.Anchor, out.AnchorIndex = a, idx
	if a.ReceiptsRoot != proof.Root {
		return out, fmt.Errorf("%w: %s anchors %x, the proof leads to %x", ErrRootMismatch, proof.Txid, a.ReceiptsRoot, proof.Root)
	}
	return out, nil
}
