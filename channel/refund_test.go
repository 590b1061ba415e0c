package channel

import (
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// refundTx builds and signs p's refund with the given lock time and input
// sequence.
func refundTx(t *testing.T, p party, lockTime, sequence uint32) *wire.MsgTx {
	t.Helper()
	dest := mustParty(t, "device-wallet", 1_000, 1).out.PkScript()
	tx, err := p.out.RefundTx(p.id, dest, 500)
	if err != nil {
		t.Fatal(err)
	}
	tx.LockTime = lockTime
	tx.TxIn[0].Sequence = sequence
	fetcher := txscript.NewMultiPrevOutFetcher(prevOuts(p))
	sig, err := p.out.SignRefund(tx, 0, fetcher, nil, p.device, txscript.SigHashDefault)
	if err != nil {
		t.Fatalf("SignRefund: %v", err)
	}
	tx.TxIn[0].Witness = p.out.RefundWitness(sig)
	return tx
}

func TestRefund(t *testing.T) {
	const expiry = 900_000
	p := mustParty(t, "meter-7", 75_000, expiry)

	t.Run("OKAtExpiry", func(t *testing.T) {
		tx := refundTx(t, p, expiry, RefundSequence)
		mustExecuteAll(t, tx, prevOuts(p))
		if tx.TxOut[0].Value != 75_000-500 {
			t.Fatalf("refund pays %d", tx.TxOut[0].Value)
		}
		// Consensus finality: minable in the block after the expiry
		// height, not in the expiry block itself.
		utx := btcutil.NewTx(tx)
		if blockchain.IsFinalizedTransaction(utx, expiry, time.Unix(0, 0)) {
			t.Fatal("refund final in block at expiry height")
		}
		if !blockchain.IsFinalizedTransaction(utx, expiry+1, time.Unix(0, 0)) {
			t.Fatal("refund not final in block after expiry")
		}
	})

	t.Run("OKAfterExpiry", func(t *testing.T) {
		mustExecuteAll(t, refundTx(t, p, expiry+1000, RefundSequence), prevOuts(p))
	})

	t.Run("FailsBeforeExpiry", func(t *testing.T) {
		if err := execute(t, refundTx(t, p, expiry-1, RefundSequence), 0, prevOuts(p)); err == nil {
			t.Fatal("refund with lock time before expiry passed the script engine")
		}
	})

	t.Run("FailsWithFinalSequence", func(t *testing.T) {
		if err := execute(t, refundTx(t, p, expiry, wire.MaxTxInSequenceNum), 0, prevOuts(p)); err == nil {
			t.Fatal("refund with a final input passed the script engine")
		}
	})

	t.Run("FailsWithTimeLockTime", func(t *testing.T) {
		if err := execute(t, refundTx(t, p, txscript.LockTimeThreshold+expiry, RefundSequence), 0, prevOuts(p)); err == nil {
			t.Fatal("refund with a timestamp lock time passed the script engine")
		}
	})

	t.Run("FailsSignedByHub", func(t *testing.T) {
		tx := refundTx(t, p, expiry, RefundSequence)
		fetcher := txscript.NewMultiPrevOutFetcher(prevOuts(p))
		// Sign the refund leaf with the hub key through the claim
		// helper's sibling to get a well-formed but wrong signature.
		sig, err := signLeaf(tx, 0, fetcher, nil, p.out.RefundLeaf(), p.hub, txscript.SigHashDefault)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[0].Witness = p.out.RefundWitness(sig)
		if err := execute(t, tx, 0, prevOuts(p)); err == nil {
			t.Fatal("refund signed by the hub passed the script engine")
		}
		if _, err := p.out.SignRefund(tx, 0, fetcher, nil, p.hub, txscript.SigHashDefault); !errors.Is(err, ErrNotParticipant) {
			t.Fatalf("SignRefund(hub key) = %v, want ErrNotParticipant", err)
		}
	})

	t.Run("ErrFee", func(t *testing.T) {
		if _, err := p.out.RefundTx(p.id, nil, 75_000); err == nil {
			t.Fatal("refund with fee equal to capacity accepted")
		}
	})

	t.Run("OKNextChannelAfterClaim", func(t *testing.T) {
		// I3 holds across a claim: the next channel output is refundable
		// by the device alone after the same expiry.
		s := State{ChannelID: p.id, Seq: 1, Paid: 40_000_000}
		claim := claimTx(t, p, s, txscript.SigHashDefault)
		mustExecuteAll(t, claim, prevOuts(p))
		next, err := p.out.Next(s.Paid)
		if err != nil {
			t.Fatal(err)
		}
		np := party{device: p.device, hub: p.hub, out: next,
			id: wire.OutPoint{Hash: claim.TxHash(), Index: 0}}
		if next.TxOut().Value != claim.TxOut[0].Value || string(next.PkScript()) != string(claim.TxOut[0].PkScript) {
			t.Fatal("Next does not describe the claim's output")
		}
		mustExecuteAll(t, refundTx(t, np, expiry, RefundSequence), prevOuts(np))
	})
}
