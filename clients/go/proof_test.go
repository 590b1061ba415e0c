package m2mclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/settlement"
)

// chainTxs is a ChainLookup over transactions held in memory: a test-only
// stand-in for the node, which VerifyReceiptOnChain only reads.
type chainTxs map[chainhash.Hash]struct {
	tx   *wire.MsgTx
	conf int64
}

func (c chainTxs) LookupTx(_ context.Context, txid chainhash.Hash) (*wire.MsgTx, int64, error) {
	e, ok := c[txid]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", m2mclient.ErrTxNotFound, txid)
	}
	return e.tx, e.conf, nil
}

func (c chainTxs) add(tx *wire.MsgTx, conf int64) chainhash.Hash {
	c[tx.TxHash()] = struct {
		tx   *wire.MsgTx
		conf int64
	}{tx, conf}
	return tx.TxHash()
}

// proofWorld is an epoch of signed receipts, its Merkle tree, and a
// settlement-shaped transaction anchoring the tree's root.
type proofWorld struct {
	receipts []*channel.Receipt
	tree     *settlement.MerkleTree
	chain    chainTxs
	txid     chainhash.Hash
}

func mustProofWorld(tb testing.TB, n int) *proofWorld {
	tb.Helper()
	var seed [32]byte
	seed[0], seed[31] = 1, 77
	hubKey, _ := btcec.PrivKeyFromBytes(seed[:])
	w := &proofWorld{chain: chainTxs{}}
	ids := make([][32]byte, n)
	for i := range n {
		r := &channel.Receipt{
			Channel: wire.OutPoint{Hash: chainhash.Hash{byte(i)}, Index: uint32(i)},
			Seq:     uint64(i + 1), Payer: fmt.Sprintf("car-%d", i), Payee: "gantry-7",
			Amount: 1_500, Paid: 1_500 * 1000, Memo: "toll",
			Time: time.UnixMilli(1_700_000_000_000 + int64(i)).UTC(),
		}
		if err := r.Sign(hubKey); err != nil {
			tb.Fatal(err)
		}
		w.receipts = append(w.receipts, r)
		ids[i] = r.ID()
	}
	w.tree = settlement.NewMerkleTree(ids)
	w.txid = w.chain.add(anchorTx(w.tree.Root(), 0), 3)
	return w
}

// anchorTx is a transaction shaped like a settlement batch: an input, a
// payout, and the anchor output.
func anchorTx(root [32]byte, salt uint32) *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{0xaa}, Index: salt}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(50_000, append([]byte{0x51, 0x20}, make([]byte, 32)...)))
	tx.AddTxOut(settlement.Anchor{ReceiptsRoot: root, AuditHead: [32]byte{0xad}}.TxOut())
	return tx
}

func (w *proofWorld) proof(tb testing.TB, i int) m2mclient.ReceiptProof {
	tb.Helper()
	p, err := w.tree.Proof(i)
	if err != nil {
		tb.Fatal(err)
	}
	return m2mclient.ReceiptProof{Epoch: 4, Merkle: p, Root: w.tree.Root(), Txid: w.txid}
}

func TestVerifyReceiptOnChain(t *testing.T) {
	ctx := context.Background()
	w := mustProofWorld(t, 13) // odd count: promoted nodes on several levels

	t.Run("OK", func(t *testing.T) {
		for i, r := range w.receipts {
			got, err := m2mclient.VerifyReceiptOnChain(ctx, r, w.proof(t, i), w.chain)
			if err != nil {
				t.Fatalf("receipt %d: %v", i, err)
			}
			if got.ID != r.ID() || got.Txid != w.txid || got.Confirmations != 3 || got.AnchorIndex != 1 || got.Anchor.ReceiptsRoot != w.tree.Root() {
				t.Fatalf("receipt %d: %+v", i, got)
			}
		}
	})

	// Each way of lying fails, and with its own error: the errors are
	// checked against every other sentinel, not just the expected one.
	all := []error{
		m2mclient.ErrReceiptSignature, m2mclient.ErrProofInvalid, m2mclient.ErrRootMismatch,
		m2mclient.ErrNoAnchor, m2mclient.ErrNotConfirmed, m2mclient.ErrTxNotFound,
	}
	cases := []struct {
		name string
		want error
		// mutate returns the receipt and proof to check, and the chain.
		mutate func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs)
	}{
		{"ErrReceiptSignatureAmountChanged", m2mclient.ErrReceiptSignature, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			r := *w.receipts[5]
			r.Amount++ // a provider inflating what it was paid
			return &r, w.proof(t, 5), w.chain
		}},
		{"ErrProofInvalidOtherReceiptsPath", m2mclient.ErrProofInvalid, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			return w.receipts[5], w.proof(t, 6), w.chain // a valid receipt with another leaf's path
		}},
		{"ErrProofInvalidSiblingFlipped", m2mclient.ErrProofInvalid, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			p := w.proof(t, 5)
			p.Merkle.Siblings = append([][32]byte(nil), p.Merkle.Siblings...)
			p.Merkle.Siblings[1][0] ^= 1
			return w.receipts[5], p, w.chain
		}},
		{"ErrProofInvalidLeafCount", m2mclient.ErrProofInvalid, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			p := w.proof(t, 12)
			p.Merkle.Leaves = 14
			return w.receipts[12], p, w.chain
		}},
		{"ErrRootMismatch", m2mclient.ErrRootMismatch, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			// A self-consistent proof over a different tree (the
			// receipt plus an extra leaf), pointing at a transaction
			// that anchors the real epoch's root.
			ids := [][32]byte{w.receipts[0].ID(), {0xee}}
			other := settlement.NewMerkleTree(ids)
			mp, _ := other.Proof(0)
			return w.receipts[0], m2mclient.ReceiptProof{Epoch: 4, Merkle: mp, Root: other.Root(), Txid: w.txid}, w.chain
		}},
		{"ErrNoAnchor", m2mclient.ErrNoAnchor, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			c := chainTxs{}
			tx := anchorTx(w.tree.Root(), 9)
			tx.TxOut = tx.TxOut[:1]
			p := w.proof(t, 2)
			p.Txid = c.add(tx, 6)
			return w.receipts[2], p, c
		}},
		{"ErrNotConfirmed", m2mclient.ErrNotConfirmed, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			c := chainTxs{}
			p := w.proof(t, 2)
			p.Txid = c.add(anchorTx(w.tree.Root(), 1), 0)
			return w.receipts[2], p, c
		}},
		{"ErrTxNotFound", m2mclient.ErrTxNotFound, func() (*channel.Receipt, m2mclient.ReceiptProof, chainTxs) {
			return w.receipts[2], w.proof(t, 2), chainTxs{}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, p, chain := c.mutate()
			_, err := m2mclient.VerifyReceiptOnChain(ctx, r, p, chain)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for _, other := range all {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("%v also matches %v", err, other)
				}
			}
		})
	}
}

func TestReceiptProofJSON(t *testing.T) {
	w := mustProofWorld(t, 5)
	p := w.proof(t, 4)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back m2mclient.ReceiptProof
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := m2mclient.VerifyReceiptOnChain(context.Background(), w.receipts[4], back, w.chain); err != nil {
		t.Fatalf("round-tripped proof %s: %v", b, err)
	}
	t.Run("ErrProofInvalid", func(t *testing.T) {
		for _, bad := range []string{
			`{"epoch":1,"merkle_proof":"zz","receipts_root":"` + fmt.Sprintf("%x", p.Root) + `","txid":"` + p.Txid.String() + `"}`,
			`{"epoch":1,"merkle_proof":"00","receipts_root":"` + fmt.Sprintf("%x", p.Root) + `","txid":"` + p.Txid.String() + `"}`,
			`{"epoch":1,"merkle_proof":"` + mustHexProof(t, p) + `","receipts_root":"abcd","txid":"` + p.Txid.String() + `"}`,
		} {
			if err := json.Unmarshal([]byte(bad), &back); !errors.Is(err, m2mclient.ErrProofInvalid) {
				t.Errorf("%s: got %v", bad, err)
			}
		}
	})
}

func mustHexProof(tb testing.TB, p m2mclient.ReceiptProof) string {
	tb.Helper()
	b, err := p.Merkle.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}
