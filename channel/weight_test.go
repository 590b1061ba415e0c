package channel

import (
	"testing"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// inputWeight is the weight of one input: its non-witness part counts four
// times (outpoint 36, empty script length 1, sequence 4), its witness once.
func inputWeight(in *wire.TxIn) int {
	return 4*(36+1+4) + in.Witness.SerializeSize()
}

// txWeight is a transaction's BIP141 weight.
func txWeight(tx *wire.MsgTx) int {
	return 3*tx.SerializeSizeStripped() + tx.SerializeSize()
}

// TestWeights measures, on fully signed transactions, the sizes that
// settlement fees and the per-transaction channel count rest on; the figures
// are quoted in docs/channel.md.
func TestWeights(t *testing.T) {
	p := mustParty(t, "weigh", 500_000, 950_000)
	prev := prevOuts(p)

	coop := func(hashType txscript.SigHashType) *wire.MsgTx {
		tx := coopTx(p, 400_000)
		sig, _ := coopSign(t, p, tx, 0, prev, hashType)
		tx.TxIn[0].Witness = KeySpendWitness(sig, hashType)
		mustExecuteAll(t, tx, prev)
		return tx
	}
	s := State{ChannelID: p.id, Seq: 1, Paid: 100_000_000}

	cases := []struct {
		name string
		got  int
		want int
	}{
		{"key-path input, SIGHASH_DEFAULT", inputWeight(coop(txscript.SigHashDefault).TxIn[0]), 230},
		{"key-path input, SINGLE|ANYONECANPAY", inputWeight(coop(ClaimHashType).TxIn[0]), 231},
		{"P2TR output", 4 * coopTx(p, 1).TxOut[0].SerializeSize(), 172},
		{"claim input, hub SIGHASH_DEFAULT", inputWeight(claimTx(t, p, s, txscript.SigHashDefault).TxIn[0]), 431},
		{"claim input, hub SINGLE|ANYONECANPAY", inputWeight(claimTx(t, p, s, ClaimHashType).TxIn[0]), 432},
		{"refund input", inputWeight(refundTx(t, p, 950_000, RefundSequence).TxIn[0]), 337},
	}
	for _, c := range cases {
		t.Logf("%-38s %4d WU = %6.2f vB", c.name, c.got, float64(c.got)/4)
		if c.got != c.want {
			t.Errorf("%s: %d WU, want %d", c.name, c.got, c.want)
		}
	}

	// Check the per-item figures add up on a whole transaction: one
	// cooperative input/output pair and one claim pair.
	tx := coop(ClaimHashType)
	other := mustParty(t, "weigh-2", 80_000, 950_000)
	otherState := State{ChannelID: other.id, Seq: 1, Paid: 1_000_000}
	claimSig, err := other.out.SignClaim(other.device, otherState)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AppendClaim(tx, other.out, otherState); err != nil {
		t.Fatal(err)
	}
	all := prevOuts(p, other)
	hubSig, err := other.out.SignClaimHub(tx, 1, txscript.NewMultiPrevOutFetcher(all), nil, other.hub, txscript.SigHashDefault)
	if err != nil {
		t.Fatal(err)
	}
	tx.TxIn[1].Witness = other.out.ClaimWitness(claimSig, hubSig)
	mustExecuteAll(t, tx, all)
	// Overhead: version 4, lock time 4, two one-byte counts, all ×4,
	// plus the segwit marker and flag at ×1.
	const overhead = 4*(4+4+1+1) + 2
	if got, want := txWeight(tx), overhead+231+172+431+172; got != want {
		t.Fatalf("batch weight %d, per-item sum %d", got, want)
	}

	// Channels per standard transaction (400,000 WU), cooperative
	// settlement: each channel is one SINGLE|ANYONECANPAY key-path input
	// and one P2TR output. Besides them: the hub's revenue (a P2TR
	// output) and OP_RETURN <32-byte receipts root> <32-byte audit head>
	// (8 + 1 + 67 bytes), with 3-byte input and output counts.
	const (
		standard   = 400_000
		fixed      = 4*(4+4+3+3) + 2 + 172 + 4*(8+1+67)
		perCoop    = 231 + 172
		perClaim   = 431 + 172
		wantCoopN  = (standard - fixed) / perCoop
		wantClaimN = (standard - fixed) / perClaim
	)
	t.Logf("cooperative channels per standard tx: %d (%.2f vB each)", wantCoopN, float64(perCoop)/4)
	t.Logf("claim-path channels per standard tx:  %d (%.2f vB each)", wantClaimN, float64(perClaim)/4)
	if wantCoopN < 950 {
		t.Errorf("only %d cooperative channels fit a standard transaction", wantCoopN)
	}
}
