package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// TestReceiptVerifyOnRegtest anchors an epoch's receipts root in a real
// transaction on a btcd regtest node and runs `hubctl receipt verify`
// against it: unconfirmed, then confirmed in each file format, then with
// the hub lying about the proof or the key.
func TestReceiptVerifyOnRegtest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd")
	}
	ctx := t.Context()
	params := &chaincfg.RegressionNetParams
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")
	addr, err := btcdchain.KeyAddress(keyPath, params)
	if err != nil {
		t.Fatal(err)
	}
	node, err := regtest.Start(ctx, regtest.Config{Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Stop(context.Background()) })
	rpc := node.RPC()
	chain, err := btcdchain.New(btcdchain.Config{Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert, Params: params, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chain.Close() })
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: keyPath, Chain: chain, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Segwit and taproot (the wallet's outputs) activate on regtest only
	// after a few hundred blocks.
	if err := node.MineToActivation(ctx); err != nil {
		t.Fatal(err)
	}

	// The settlement transaction: it spends a P2WPKH output the test
	// funds from the wallet and carries the epoch's anchor.
	f := newFakeSettlement(t, 7)
	spendKey, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	waddr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(spendKey.PubKey().SerializeCompressed()), params)
	if err != nil {
		t.Fatal(err)
	}
	pkScript, err := txscript.PayToAddrScript(waddr)
	if err != nil {
		t.Fatal(err)
	}
	const value = 1_000_000
	fundTxid, err := wallet.Send(ctx, waddr, value)
	if err != nil {
		t.Fatal(err)
	}
	fund, err := chain.GetTx(ctx, fundTxid)
	if err != nil {
		t.Fatal(err)
	}
	vout := -1
	for i, o := range fund.Tx.TxOut {
		if bytes.Equal(o.PkScript, pkScript) {
			vout = i
		}
	}
	if vout < 0 {
		t.Fatal("funding output not found")
	}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: fundTxid, Index: uint32(vout)}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(value-10_000, pkScript))
	tx.AddTxOut(f.runs[1].Anchor.TxOut())
	hashes := txscript.NewTxSigHashes(tx, txscript.NewCannedPrevOutputFetcher(pkScript, value))
	tx.TxIn[0].Witness, err = txscript.WitnessSignature(tx, hashes, 0, value, pkScript, txscript.SigHashAll, spendKey, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chain.SendRawTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		t.Fatal(err)
	}
	run := f.runs[1]
	run.Txs, run.State = [][]byte{raw.Bytes()}, settlement.RunBroadcast
	f.runs[1] = run

	// hubctl finds the node in hubd.json, as beside a running hubd, or
	// through flags.
	dataDir := datadir.Dir(t.TempDir())
	if err := dataDir.WriteRuntime(datadir.Runtime{Network: "regtest", Btcd: &datadir.BtcdRPC{
		Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, CertPath: rpc.CertPath,
	}}); err != nil {
		t.Fatal(err)
	}
	conn := serve(t, f)
	viaRuntime := append([]string{"--datadir", string(dataDir)}, conn...)
	viaFlags := append(append([]string(nil), conn...), "receipt", "verify",
		"--btcd.rpchost", rpc.Host, "--btcd.rpcuser", rpc.User, "--btcd.rpcpass", rpc.Pass,
		"--btcd.rpccert", rpc.CertPath, "--btcd.network", "regtest")

	r := f.list[3]
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(enc)
	files := map[string]string{
		"Binary": writeFile(t, "r.bin", enc),
		"Hex":    writeFile(t, "r.hex", []byte(h+"\n")),
		"JSON":   writeFile(t, "r.json", []byte(`{"kind":"receipt","receipt":"`+h+`","events":["e1"]}`)),
	}

	code, out, errOut := runCtl(t, append(viaRuntime, "receipt", "verify", files["Hex"])...)
	if code != exitUnconfirmed || !strings.Contains(errOut, "settlement transaction not confirmed") {
		t.Fatalf("in the mempool: exit %d: %s%s", code, out, errOut)
	}
	if _, err := node.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for name, file := range files {
		code, out, errOut := runCtl(t, append(viaRuntime, "receipt", "verify", file)...)
		if code != exitOK || !strings.Contains(out, "OK: leaf 3 of 7 in epoch 1") || !strings.Contains(out, tx.TxHash().String()) {
			t.Fatalf("%s: exit %d: %s%s", name, code, out, errOut)
		}
	}
	if code, out, errOut := runCtl(t, append(viaFlags, files["Binary"])...); code != exitOK {
		t.Fatalf("btcd from flags: exit %d: %s%s", code, out, errOut)
	}
	if code, _, errOut := runCtl(t, append(viaFlags, "--min-conf", "2", files["Binary"])...); code != exitUnconfirmed {
		t.Fatalf("--min-conf 2 with one block: exit %d: %s", code, errOut)
	}

	t.Run("ExitProofWrongLeaf", func(t *testing.T) {
		f.leafOffset = 1
		defer func() { f.leafOffset = 0 }()
		code, _, errOut := runCtl(t, append(viaRuntime, "receipt", "verify", files["Hex"])...)
		if code != exitProof || !strings.Contains(errOut, "merkle proof does not verify") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("ExitProofForeignHubKey", func(t *testing.T) {
		other, _ := btcec.NewPrivateKey()
		pin := hex.EncodeToString(other.PubKey().SerializeCompressed())
		code, _, errOut := runCtl(t, append(viaRuntime, "receipt", "verify", "--hub-key", pin, files["Hex"])...)
		if code != exitProof {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("ExitNotFoundTamperedReceipt", func(t *testing.T) {
		// A changed receipt has another ID, which the hub never
		// issued; its signature no longer holds either.
		bad := *r
		bad.Amount *= 10
		b, _ := bad.MarshalBinary()
		code, _, errOut := runCtl(t, append(viaRuntime, "receipt", "verify", writeFile(t, "bad.bin", b))...)
		if code != exitNotFound {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
}
