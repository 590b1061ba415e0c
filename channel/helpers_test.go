package channel

import (
	"crypto/sha256"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// mustKey derives a deterministic private key from name.
func mustKey(tb testing.TB, name string) *btcec.PrivateKey {
	tb.Helper()
	seed := sha256.Sum256([]byte(name))
	key, _ := btcec.PrivKeyFromBytes(seed[:])
	return key
}

// party is one channel's keys and output.
type party struct {
	device, hub *btcec.PrivateKey
	out         *Output
	id          wire.OutPoint
}

// mustParty builds a channel named name with the given capacity and expiry,
// funded at a made-up outpoint derived from name.
func mustParty(tb testing.TB, name string, capacity btcutil.Amount, expiry uint32) party {
	tb.Helper()
	device := mustKey(tb, name+"/device")
	hub := mustKey(tb, "hub")
	out, err := NewOutput(Params{
		DeviceKey: device.PubKey(),
		HubKey:    hub.PubKey(),
		Capacity:  capacity,
		Expiry:    expiry,
	})
	if err != nil {
		tb.Fatalf("NewOutput: %v", err)
	}
	return party{
		device: device,
		hub:    hub,
		out:    out,
		id:     wire.OutPoint{Hash: chainhash.HashH([]byte(name + "/funding")), Index: 1},
	}
}

// prevOuts maps each party's funding outpoint to its funding output.
func prevOuts(ps ...party) map[wire.OutPoint]*wire.TxOut {
	m := make(map[wire.OutPoint]*wire.TxOut, len(ps))
	for _, p := range ps {
		m[p.id] = p.out.TxOut()
	}
	return m
}

// execute runs btcd's script engine, with standard verification flags, on
// input idx of tx.
func execute(tb testing.TB, tx *wire.MsgTx, idx int, prev map[wire.OutPoint]*wire.TxOut) error {
	tb.Helper()
	fetcher := txscript.NewMultiPrevOutFetcher(prev)
	sigHashes := txscript.NewTxSigHashes(tx, fetcher)
	po := prev[tx.TxIn[idx].PreviousOutPoint]
	if po == nil {
		tb.Fatalf("no prevout for input %d", idx)
	}
	vm, err := txscript.NewEngine(po.PkScript, tx, idx, txscript.StandardVerifyFlags,
		nil, sigHashes, po.Value, fetcher)
	if err != nil {
		return err
	}
	return vm.Execute()
}

// mustExecuteAll fails the test unless every input of tx is valid.
func mustExecuteAll(tb testing.TB, tx *wire.MsgTx, prev map[wire.OutPoint]*wire.TxOut) {
	tb.Helper()
	for i := range tx.TxIn {
		if err := execute(tb, tx, i, prev); err != nil {
			tb.Fatalf("input %d: script engine: %v", i, err)
		}
	}
}
