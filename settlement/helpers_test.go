package settlement

import (
	"crypto/sha256"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/msat"
)

// mustKey derives a deterministic private key from name.
func mustKey(tb testing.TB, name string) *btcec.PrivateKey {
	tb.Helper()
	seed := sha256.Sum256([]byte(name))
	key, _ := btcec.PrivKeyFromBytes(seed[:])
	return key
}

// party is one device's channel with the hub.
type party struct {
	name    string
	device  *btcec.PrivateKey
	hub     *btcec.PrivateKey
	out     *channel.Output
	funding wire.OutPoint
}

// mustParty builds the channel of device name, funded at a made-up outpoint.
func mustParty(tb testing.TB, name string, capacity btcutil.Amount, expiry uint32) party {
	tb.Helper()
	device, hub := mustKey(tb, name+"/device"), mustKey(tb, "hub")
	out, err := channel.NewOutput(channel.Params{
		DeviceKey: device.PubKey(), HubKey: hub.PubKey(), Capacity: capacity, Expiry: expiry,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return party{name, device, hub, out,
		wire.OutPoint{Hash: chainhash.HashH([]byte(name + "/funding")), Index: 0}}
}

// claim returns the device-signed state (seq, paid) of p.
func (p party) claim(tb testing.TB, seq uint64, paid msat.Amount) channel.Claim {
	tb.Helper()
	s := channel.State{ChannelID: p.funding, Seq: seq, Paid: paid}
	sig, err := p.out.SignClaim(p.device, s)
	if err != nil {
		tb.Fatal(err)
	}
	return channel.NewClaim(s, sig)
}

// p2tr returns a P2TR script paying to a key derived from name.
func p2tr(tb testing.TB, name string) []byte {
	tb.Helper()
	s, err := txscript.PayToTaprootScript(mustKey(tb, name).PubKey())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// p2wpkh returns a P2WPKH script paying to a key derived from name.
func p2wpkh(tb testing.TB, name string) []byte {
	tb.Helper()
	h := btcutil.Hash160(mustKey(tb, name).PubKey().SerializeCompressed())
	s, err := txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(h).Script()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// weight is a transaction's BIP141 weight.
func weight(tx *wire.MsgTx) int { return 3*tx.SerializeSizeStripped() + tx.SerializeSize() }

// mustExecuteAll runs btcd's script engine with standard flags on every
// input of t.
func mustExecuteAll(tb testing.TB, t *PlannedTx) {
	tb.Helper()
	sigHashes := txscript.NewTxSigHashes(t.Tx, t.PrevOuts())
	for i, in := range t.Tx.TxIn {
		prev := t.PrevOuts().FetchPrevOutput(in.PreviousOutPoint)
		vm, err := txscript.NewEngine(prev.PkScript, t.Tx, i, txscript.StandardVerifyFlags,
			nil, sigHashes, prev.Value, t.PrevOuts())
		if err != nil {
			tb.Fatalf("input %d: %v", i, err)
		}
		if err := vm.Execute(); err != nil {
			tb.Fatalf("input %d: script engine: %v", i, err)
		}
	}
}

// coopSign runs both sides of the MuSig2 round for cooperative input i:
// the device signs its one-pair template after checking its output, the
// hub signs the batch.
func coopSign(tb testing.TB, t *PlannedTx, i int, p party) *schnorr.Signature {
	tb.Helper()
	c := t.Channels[i]
	tmpl, err := t.CoopTemplate(i)
	if err != nil {
		tb.Fatal(err)
	}
	if err := VerifyOwnOutput(tmpl, 0, p.funding, int64(c.Next.Capacity), p.out.PkScript()); err != nil {
		tb.Fatalf("device check: %v", err)
	}
	devMsg, err := channel.KeySpendSigHash(tmpl, 0, txscript.NewCannedPrevOutputFetcher(p.out.PkScript(), int64(p.out.Params().Capacity)), nil, CoopHashType)
	if err != nil {
		tb.Fatal(err)
	}
	hubMsg, err := t.CoopSigHash(i)
	if err != nil {
		tb.Fatal(err)
	}
	if devMsg != hubMsg {
		tb.Fatalf("input %d: template sighash differs from the batch's", i)
	}
	dev, err := p.out.NewKeySession(p.device)
	if err != nil {
		tb.Fatal(err)
	}
	hub, err := p.out.NewKeySession(p.hub)
	if err != nil {
		tb.Fatal(err)
	}
	devPartial, err := dev.Sign(devMsg, hub.PublicNonce())
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := hub.Sign(hubMsg, dev.PublicNonce()); err != nil {
		tb.Fatal(err)
	}
	sig, err := hub.Combine(devPartial)
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}
