package btcdchain_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// TestWalletSendMany pays 500 outputs of different values in one
// transaction on a real regtest node and reads every one back from the
// UTXO set once mined.
func TestWalletSendMany(t *testing.T) {
	h := mustHarness(t)
	ctx := t.Context()
	if err := h.node.MineToActivation(ctx); err != nil {
		t.Fatal(err)
	}

	const n = 500
	outs := make([]*wire.TxOut, n)
	var total int64
	for i := range outs {
		script, err := txscript.PayToAddrScript(newTaprootAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		// 1 BTC + i sat each: 500 BTC in all, more than any one coin
		// (50 BTC at most), so several inputs are needed.
		outs[i] = wire.NewTxOut(btcutil.SatoshiPerBitcoin+int64(i), script)
		total += outs[i].Value
	}
	txid, err := h.wallet.SendMany(ctx, outs)
	if err != nil {
		t.Fatalf("SendMany: %v", err)
	}
	if _, err := h.chain.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	info, err := h.chain.GetTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	if info.Confirmations != 1 {
		t.Fatalf("confirmations = %d, want 1", info.Confirmations)
	}
	tx := info.Tx
	if len(tx.TxOut) != n+1 {
		t.Fatalf("tx has %d outputs, want %d and change", len(tx.TxOut), n)
	}
	if len(tx.TxIn) < 11 {
		t.Fatalf("500 BTC paid from %d inputs of at most 50 BTC", len(tx.TxIn))
	}
	for i, want := range outs {
		got, err := h.chain.TxOut(ctx, wire.OutPoint{Hash: txid, Index: uint32(i)}, false)
		if err != nil {
			t.Fatalf("output %d: %v", i, err)
		}
		if int64(got.Value) != want.Value || !bytes.Equal(got.PkScript, want.PkScript) || got.Confirmations != 1 {
			t.Fatalf("output %d = %v sat to %x, want %v sat to %x", i, got.Value, got.PkScript, want.Value, want.PkScript)
		}
	}
	walletScript, err := txscript.PayToAddrScript(h.wallet.Address())
	if err != nil {
		t.Fatal(err)
	}
	change := tx.TxOut[n]
	if !bytes.Equal(change.PkScript, walletScript) {
		t.Fatal("last output is not change to the wallet")
	}

	// The fee is the wallet's rate on the exact size, rounded up.
	var in int64
	for _, txIn := range tx.TxIn {
		// Inputs are mature coinbases or earlier change: read them
		// from their own transactions.
		prev, err := h.chain.GetTx(ctx, txIn.PreviousOutPoint.Hash)
		if err != nil {
			t.Fatal(err)
		}
		in += prev.Tx.TxOut[txIn.PreviousOutPoint.Index].Value
	}
	fee := btcutil.Amount(in - total - change.Value)
	vsize := (blockchain.GetTransactionWeight(btcutil.NewTx(tx)) + 3) / 4
	if want := btcutil.Amount((vsize*int64(btcdchain.DefaultFeeRate) + 999) / 1000); fee != want {
		t.Fatalf("fee = %v, want %v for %d vB", fee, want, vsize)
	}
	t.Logf("SendMany: %d outputs, %d inputs, %d vB, fee %v", n, len(tx.TxIn), vsize, fee)

	t.Run("ErrInsufficientFunds", func(t *testing.T) {
		script, _ := txscript.PayToAddrScript(newTaprootAddr(t))
		big := []*wire.TxOut{
			wire.NewTxOut(10_000*btcutil.SatoshiPerBitcoin, script),
			wire.NewTxOut(10_000*btcutil.SatoshiPerBitcoin, script),
		}
		if _, err := h.wallet.SendMany(ctx, big); !errors.Is(err, btcdchain.ErrInsufficientFunds) {
			t.Fatalf("err = %v, want ErrInsufficientFunds", err)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		script, _ := txscript.PayToAddrScript(newTaprootAddr(t))
		cases := map[string][]*wire.TxOut{
			"none":      nil,
			"dust":      {wire.NewTxOut(100_000, script), wire.NewTxOut(329, script)},
			"no script": {wire.NewTxOut(100_000, nil)},
			"nil":       {nil},
		}
		for name, outs := range cases {
			if _, err := h.wallet.SendMany(ctx, outs); err == nil {
				t.Errorf("%s: SendMany succeeded", name)
			}
		}
		// Nothing was broadcast by the refused calls.
		bal, err := h.wallet.Balance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if bal.Unconfirmed != 0 {
			t.Fatalf("unconfirmed %v after refused sends", bal.Unconfirmed)
		}
	})
}
