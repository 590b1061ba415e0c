package channel

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// claimTx signs s for p as the device, puts it alone in a transaction, has
// the hub sign with hubHash and returns the transaction with its witness.
func claimTx(t *testing.T, p party, s State, hubHash txscript.SigHashType) *wire.MsgTx {
	t.Helper()
	sig, err := p.out.SignClaim(p.device, s)
	if err != nil {
		t.Fatalf("SignClaim: %v", err)
	}
	if err := p.out.VerifyClaim(s, sig); err != nil {
		t.Fatalf("VerifyClaim: %v", err)
	}
	tx, err := p.out.ClaimTemplate(s)
	if err != nil {
		t.Fatal(err)
	}
	fetcher := txscript.NewMultiPrevOutFetcher(prevOuts(p))
	hubSig, err := p.out.SignClaimHub(tx, 0, fetcher, nil, p.hub, hubHash)
	if err != nil {
		t.Fatalf("SignClaimHub: %v", err)
	}
	tx.TxIn[0].Witness = p.out.ClaimWitness(sig, hubSig)
	return tx
}

func TestClaim(t *testing.T) {
	p := mustParty(t, "car-1", 250_000, 900_000)
	s := State{ChannelID: p.id, Seq: 7, Paid: 123_456_789}

	t.Run("OK", func(t *testing.T) {
		tx := claimTx(t, p, s, txscript.SigHashDefault)
		mustExecuteAll(t, tx, prevOuts(p))
		if got, want := btcutil.Amount(tx.TxOut[0].Value), btcutil.Amount(250_000-123_456); got != want {
			t.Fatalf("next output %d sat, want %d", got, want)
		}
	})

	t.Run("OKHubSignsSingleAnyoneCanPay", func(t *testing.T) {
		tx := claimTx(t, p, s, ClaimHashType)
		mustExecuteAll(t, tx, prevOuts(p))
	})

	t.Run("OKAtMaxPaid", func(t *testing.T) {
		max := State{ChannelID: p.id, Seq: 8, Paid: p.out.Params().MaxPaid()}
		tx := claimTx(t, p, max, txscript.SigHashDefault)
		mustExecuteAll(t, tx, prevOuts(p))
		if tx.TxOut[0].Value != int64(Reserve) {
			t.Fatalf("next output at max paid is %d sat, want the reserve", tx.TxOut[0].Value)
		}
	})

	t.Run("ErrOverCapacity", func(t *testing.T) {
		over := State{ChannelID: p.id, Seq: 8, Paid: p.out.Params().MaxPaid() + 1}
		if _, err := p.out.SignClaim(p.device, over); !errors.Is(err, ErrOverCapacity) {
			t.Fatalf("SignClaim = %v, want ErrOverCapacity", err)
		}
		var sig schnorr.Signature
		if err := p.out.VerifyClaim(over, &sig); !errors.Is(err, ErrOverCapacity) {
			t.Fatalf("VerifyClaim = %v, want ErrOverCapacity", err)
		}
	})

	t.Run("FailsWithOnlyDeviceSig", func(t *testing.T) {
		tx := claimTx(t, p, s, txscript.SigHashDefault)
		// An empty hub signature makes OP_CHECKSIGVERIFY fail.
		tx.TxIn[0].Witness[1] = nil
		if err := execute(t, tx, 0, prevOuts(p)); err == nil {
			t.Fatal("claim without hub signature passed the script engine")
		}
		// So does the device's signature in the hub's place.
		tx.TxIn[0].Witness[1] = tx.TxIn[0].Witness[0]
		if err := execute(t, tx, 0, prevOuts(p)); err == nil {
			t.Fatal("claim with the device signature twice passed the script engine")
		}
	})

	t.Run("FailsWithOnlyHubSig", func(t *testing.T) {
		tx := claimTx(t, p, s, txscript.SigHashDefault)
		hubAsDevice, err := p.out.SignClaimHub(tx, 0, txscript.NewMultiPrevOutFetcher(prevOuts(p)), nil, p.hub, ClaimHashType)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[0].Witness[0] = hubAsDevice
		if err := execute(t, tx, 0, prevOuts(p)); err == nil {
			t.Fatal("claim signed by the hub alone passed the script engine")
		}
	})

	t.Run("FailsWithTamperedAmount", func(t *testing.T) {
		tx := claimTx(t, p, s, txscript.SigHashDefault)
		// The hub takes one satoshi more than the device signed for and
		// re-signs its own part; the device signature must break.
		tx.TxOut[0].Value--
		fetcher := txscript.NewMultiPrevOutFetcher(prevOuts(p))
		hubSig, err := p.out.SignClaimHub(tx, 0, fetcher, nil, p.hub, txscript.SigHashDefault)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[0].Witness[1] = hubSig
		if err := execute(t, tx, 0, prevOuts(p)); err == nil {
			t.Fatal("claim with a tampered next output passed the script engine")
		}
	})

	t.Run("ErrBadSignature", func(t *testing.T) {
		sig, err := p.out.SignClaim(p.device, s)
		if err != nil {
			t.Fatal(err)
		}
		more := s
		more.Paid += 1000
		if err := p.out.VerifyClaim(more, sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifyClaim(other paid) = %v, want ErrBadSignature", err)
		}
		other := s
		other.ChannelID.Index++
		if err := p.out.VerifyClaim(other, sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifyClaim(other channel) = %v, want ErrBadSignature", err)
		}
		h, err := p.out.ClaimSigHash(s)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := schnorr.Sign(mustKey(t, "mallory"), h[:])
		if err != nil {
			t.Fatal(err)
		}
		if err := p.out.VerifyClaim(s, forged); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifyClaim(forged) = %v, want ErrBadSignature", err)
		}
		if err := p.out.VerifyClaim(s, nil); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifyClaim(nil) = %v, want ErrBadSignature", err)
		}
	})

	t.Run("ErrNotParticipant", func(t *testing.T) {
		if _, err := p.out.SignClaim(p.hub, s); !errors.Is(err, ErrNotParticipant) {
			t.Fatalf("SignClaim(hub key) = %v, want ErrNotParticipant", err)
		}
		tx, err := p.out.ClaimTemplate(s)
		if err != nil {
			t.Fatal(err)
		}
		fetcher := txscript.NewMultiPrevOutFetcher(prevOuts(p))
		if _, err := p.out.SignClaimHub(tx, 0, fetcher, nil, p.device, txscript.SigHashDefault); !errors.Is(err, ErrNotParticipant) {
			t.Fatalf("SignClaimHub(device key) = %v, want ErrNotParticipant", err)
		}
	})

	t.Run("SubSatoshiIsCredit", func(t *testing.T) {
		// 1000 msat and 1999 msat both sign for 1 sat: the signature is
		// the same claim, and the 999 msat difference is credit.
		a := State{ChannelID: p.id, Seq: 1, Paid: 1000}
		b := State{ChannelID: p.id, Seq: 2, Paid: 1999}
		ha, err := p.out.ClaimSigHash(a)
		if err != nil {
			t.Fatal(err)
		}
		hb, err := p.out.ClaimSigHash(b)
		if err != nil {
			t.Fatal(err)
		}
		if ha != hb {
			t.Fatal("sub-satoshi difference changed the claim sighash")
		}
		if b.PaidSat() != 1 || b.Credit() != 999 {
			t.Fatalf("PaidSat %d Credit %d, want 1 and 999", b.PaidSat(), b.Credit())
		}
		c := State{ChannelID: p.id, Seq: 3, Paid: 2000}
		hc, err := p.out.ClaimSigHash(c)
		if err != nil {
			t.Fatal(err)
		}
		if hc == hb {
			t.Fatal("a whole satoshi more did not change the claim sighash")
		}
	})
}

// TestClaimComposes puts three channels' claims, each signed by its device
// alone on its own one-input template, into one batch transaction together
// with the hub's revenue output, and runs every input through the engine.
func TestClaimComposes(t *testing.T) {
	parties := []party{
		mustParty(t, "toll-tag", 50_000, 900_000),
		mustParty(t, "charger", 2_000_000, 910_000),
		mustParty(t, "router", 10_000, 920_000),
	}
	states := []State{
		{ChannelID: parties[0].id, Seq: 3, Paid: 4_999_999},
		{ChannelID: parties[1].id, Seq: 1200, Paid: 1_500_000_000},
		{ChannelID: parties[2].id, Seq: 1, Paid: 1},
	}
	sigs := make([]*schnorr.Signature, len(parties))
	for i, p := range parties {
		sig, err := p.out.SignClaim(p.device, states[i])
		if err != nil {
			t.Fatal(err)
		}
		sigs[i] = sig
	}

	for name, order := range map[string][]int{"InOrder": {0, 1, 2}, "Shuffled": {2, 0, 1}} {
		t.Run(name, func(t *testing.T) {
			tx := wire.NewMsgTx(TxVersion)
			var revenue btcutil.Amount
			for _, j := range order {
				i, err := AppendClaim(tx, parties[j].out, states[j])
				if err != nil {
					t.Fatalf("AppendClaim: %v", err)
				}
				if i != len(tx.TxIn)-1 || tx.TxIn[i].PreviousOutPoint != parties[j].id {
					t.Fatalf("claim %d landed at %d", j, i)
				}
				revenue += states[j].PaidSat()
			}
			const fee = 1_000
			hubPkScript := mustParty(t, "hub-wallet", 1_000, 1).out.PkScript()
			tx.AddTxOut(wire.NewTxOut(int64(revenue-fee), hubPkScript))

			prev := prevOuts(parties...)
			fetcher := txscript.NewMultiPrevOutFetcher(prev)
			sigHashes := txscript.NewTxSigHashes(tx, fetcher)
			for i, j := range order {
				p := parties[j]
				hubSig, err := p.out.SignClaimHub(tx, i, fetcher, sigHashes, p.hub, txscript.SigHashDefault)
				if err != nil {
					t.Fatal(err)
				}
				tx.TxIn[i].Witness = p.out.ClaimWitness(sigs[j], hubSig)
			}
			mustExecuteAll(t, tx, prev)

			var in, out int64
			for _, po := range prev {
				in += po.Value
			}
			for _, o := range tx.TxOut {
				out += o.Value
			}
			if in-out != fee {
				t.Fatalf("fee %d, want %d", in-out, fee)
			}
		})
	}

	t.Run("ErrMisaligned", func(t *testing.T) {
		tx := wire.NewMsgTx(TxVersion)
		tx.AddTxOut(wire.NewTxOut(1, nil))
		if _, err := AppendClaim(tx, parties[0].out, states[0]); !errors.Is(err, ErrMisaligned) {
			t.Fatalf("AppendClaim after a non-claim output = %v, want ErrMisaligned", err)
		}
		tx = wire.NewMsgTx(1)
		if _, err := AppendClaim(tx, parties[0].out, states[0]); !errors.Is(err, ErrMisaligned) {
			t.Fatalf("AppendClaim to version 1 = %v, want ErrMisaligned", err)
		}
		tx = wire.NewMsgTx(TxVersion)
		tx.LockTime = 5
		if _, err := AppendClaim(tx, parties[0].out, states[0]); !errors.Is(err, ErrMisaligned) {
			t.Fatalf("AppendClaim with lock time = %v, want ErrMisaligned", err)
		}
	})

	t.Run("FailsWhenOutputsSwapped", func(t *testing.T) {
		// Two claims whose next outputs trade places: each device
		// signature sees someone else's output at its index.
		tx := wire.NewMsgTx(TxVersion)
		for j := 0; j < 2; j++ {
			if _, err := AppendClaim(tx, parties[j].out, states[j]); err != nil {
				t.Fatal(err)
			}
		}
		tx.TxOut[0], tx.TxOut[1] = tx.TxOut[1], tx.TxOut[0]
		prev := prevOuts(parties[0], parties[1])
		fetcher := txscript.NewMultiPrevOutFetcher(prev)
		for j := 0; j < 2; j++ {
			hubSig, err := parties[j].out.SignClaimHub(tx, j, fetcher, nil, parties[j].hub, txscript.SigHashDefault)
			if err != nil {
				t.Fatal(err)
			}
			tx.TxIn[j].Witness = parties[j].out.ClaimWitness(sigs[j], hubSig)
			if err := execute(t, tx, j, prev); err == nil {
				t.Fatalf("input %d valid with another channel's output", j)
			}
		}
	})
}

func TestCreditBound(t *testing.T) {
	for _, paid := range []msat.Amount{0, 1, 999, 1000, 1001, 123_456_789, 99_670_000} {
		s := State{Paid: paid}
		if s.Credit() >= 1000 {
			t.Fatalf("paid %d: credit %d not below 1 sat", paid, s.Credit())
		}
		if msat.FromSatoshis(s.PaidSat())+s.Credit() != paid {
			t.Fatalf("paid %d: PaidSat %d + Credit %d", paid, s.PaidSat(), s.Credit())
		}
	}
}
