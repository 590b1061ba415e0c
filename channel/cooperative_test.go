package channel

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// coopSign runs a full two-party MuSig2 round on input idx of tx and
// returns both parties' combined signatures.
func coopSign(t *testing.T, p party, tx *wire.MsgTx, idx int, prev map[wire.OutPoint]*wire.TxOut,
	hashType txscript.SigHashType) (*schnorr.Signature, *schnorr.Signature) {

	t.Helper()
	fetcher := txscript.NewMultiPrevOutFetcher(prev)
	msg, err := KeySpendSigHash(tx, idx, fetcher, nil, hashType)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := p.out.NewKeySession(p.device)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := p.out.NewKeySession(p.hub)
	if err != nil {
		t.Fatal(err)
	}
	devPartial, err := dev.Sign(msg, hub.PublicNonce())
	if err != nil {
		t.Fatal(err)
	}
	hubPartial, err := hub.Sign(msg, dev.PublicNonce())
	if err != nil {
		t.Fatal(err)
	}
	devFinal, err := dev.Combine(hubPartial)
	if err != nil {
		t.Fatalf("device Combine: %v", err)
	}
	hubFinal, err := hub.Combine(devPartial)
	if err != nil {
		t.Fatalf("hub Combine: %v", err)
	}
	return devFinal, hubFinal
}

// coopTx spends p cooperatively to a next output worth value.
func coopTx(p party, value int64) *wire.MsgTx {
	tx := wire.NewMsgTx(TxVersion)
	in := wire.NewTxIn(&p.id, nil, nil)
	in.Sequence = ClaimSequence
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(value, p.out.PkScript()))
	return tx
}

func TestKeySpend(t *testing.T) {
	p := mustParty(t, "ev-42", 500_000, 950_000)
	prev := prevOuts(p)

	for name, hashType := range map[string]txscript.SigHashType{
		"OKDefault":            txscript.SigHashDefault,
		"OKSingleAnyoneCanPay": ClaimHashType,
	} {
		t.Run(name, func(t *testing.T) {
			tx := coopTx(p, 400_000)
			devFinal, hubFinal := coopSign(t, p, tx, 0, prev, hashType)
			for who, sig := range map[string]*schnorr.Signature{"device": devFinal, "hub": hubFinal} {
				tx.TxIn[0].Witness = KeySpendWitness(sig, hashType)
				if err := execute(t, tx, 0, prev); err != nil {
					t.Fatalf("%s's combined signature: %v", who, err)
				}
			}
			// The signature must not survive a change to what it
			// commits to.
			tx.TxOut[0].Value++
			if err := execute(t, tx, 0, prev); err == nil {
				t.Fatal("tampered cooperative spend passed the script engine")
			}
		})
	}

	t.Run("OKComposedWithClaims", func(t *testing.T) {
		// One participant co-signs (SINGLE|ANYONECANPAY), another is
		// absent and settled with its claim signature, in one batch.
		other := mustParty(t, "absent", 80_000, 950_000)
		s := State{ChannelID: other.id, Seq: 9, Paid: 30_000_000}
		claimSig, err := other.out.SignClaim(other.device, s)
		if err != nil {
			t.Fatal(err)
		}
		tx := coopTx(p, 450_000)
		if _, err := AppendClaim(tx, other.out, s); err != nil {
			t.Fatal(err)
		}
		all := prevOuts(p, other)
		devFinal, _ := coopSign(t, p, tx, 0, all, ClaimHashType)
		tx.TxIn[0].Witness = KeySpendWitness(devFinal, ClaimHashType)
		hubSig, err := other.out.SignClaimHub(tx, 1, txscript.NewMultiPrevOutFetcher(all), nil, other.hub, ClaimHashType)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[1].Witness = other.out.ClaimWitness(claimSig, hubSig)
		mustExecuteAll(t, tx, all)
	})

	t.Run("FailsSignedByOneKey", func(t *testing.T) {
		tx := coopTx(p, 400_000)
		fetcher := txscript.NewMultiPrevOutFetcher(prev)
		// The device alone, tweaking its own key with the script root as
		// a single-key taproot output would, cannot spend the key path.
		for who, priv := range map[string]*btcec.PrivateKey{"device": p.device, "hub": p.hub} {
			raw, err := txscript.RawTxInTaprootSignature(tx, txscript.NewTxSigHashes(tx, fetcher), 0,
				p.out.TxOut().Value, p.out.PkScript(), p.out.ScriptRoot(), txscript.SigHashDefault, priv)
			if err != nil {
				t.Fatal(err)
			}
			tx.TxIn[0].Witness = wire.TxWitness{raw}
			if err := execute(t, tx, 0, prev); err == nil {
				t.Fatalf("key path signed by the %s alone passed the script engine", who)
			}
		}
	})

	t.Run("ErrNotParticipant", func(t *testing.T) {
		if _, err := p.out.NewKeySession(mustKey(t, "mallory")); !errors.Is(err, ErrNotParticipant) {
			t.Fatalf("NewKeySession(stranger) = %v, want ErrNotParticipant", err)
		}
	})

	t.Run("ErrBadSignature", func(t *testing.T) {
		// A partial signature made with the wrong key (a stranger's
		// channel with the same hub) is caught and blamed on the peer.
		tx := coopTx(p, 400_000)
		msg, err := KeySpendSigHash(tx, 0, txscript.NewMultiPrevOutFetcher(prev), nil, txscript.SigHashDefault)
		if err != nil {
			t.Fatal(err)
		}
		stranger := mustParty(t, "stranger", 500_000, 950_000)
		hub, err := p.out.NewKeySession(p.hub)
		if err != nil {
			t.Fatal(err)
		}
		wrong, err := stranger.out.NewKeySession(stranger.device)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hub.Sign(msg, wrong.PublicNonce()); err != nil {
			t.Fatal(err)
		}
		wrongPartial, err := wrong.Sign(msg, hub.PublicNonce())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hub.Combine(wrongPartial); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("Combine(wrong key) = %v, want ErrBadSignature", err)
		}
		for name, bad := range map[string]*musig2.PartialSignature{
			"nil":        nil,
			"empty":      {},
			"zeroScalar": {S: new(btcec.ModNScalar)},
		} {
			if _, err := hub.Combine(bad); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Combine(%s) = %v, want ErrBadSignature", name, err)
			}
		}
	})

	t.Run("ErrSessionState", func(t *testing.T) {
		dev, err := p.out.NewKeySession(p.device)
		if err != nil {
			t.Fatal(err)
		}
		hub, err := p.out.NewKeySession(p.hub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dev.Combine(&musig2.PartialSignature{}); !errors.Is(err, ErrSessionState) {
			t.Fatalf("Combine before Sign = %v, want ErrSessionState", err)
		}
		var msg [32]byte
		if _, err := dev.Sign(msg, hub.PublicNonce()); err != nil {
			t.Fatal(err)
		}
		msg[0] = 1
		if _, err := dev.Sign(msg, hub.PublicNonce()); !errors.Is(err, ErrSessionState) {
			t.Fatalf("second Sign = %v, want ErrSessionState", err)
		}
	})

	t.Run("FreshNonces", func(t *testing.T) {
		a, err := p.out.NewKeySession(p.device)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.out.NewKeySession(p.device)
		if err != nil {
			t.Fatal(err)
		}
		if a.PublicNonce() == b.PublicNonce() {
			t.Fatal("two sessions of one key drew the same nonce")
		}
	})
}
