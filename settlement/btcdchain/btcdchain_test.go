package btcdchain_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var regtestParams = &chaincfg.RegressionNetParams

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// harness is a real btcd regtest node whose blocks pay the hub wallet.
type harness struct {
	node   *regtest.Node
	chain  *btcdchain.Client
	wallet *btcdchain.Wallet
}

func mustClient(t *testing.T, rpc regtest.RPCConfig) *btcdchain.Client {
	t.Helper()
	return mustClientTimeout(t, rpc, 0)
}

// mustClientTimeout is mustClient with a call timeout (0: the default).
func mustClientTimeout(t *testing.T, rpc regtest.RPCConfig, timeout time.Duration) *btcdchain.Client {
	t.Helper()
	c, err := btcdchain.New(btcdchain.Config{
		Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert,
		Params: regtestParams, CallTimeout: timeout, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mustHarness wires things in the order hubd does: the wallet key and its
// address first, since btcd needs the address as --miningaddr, then the node,
// then the client and the wallet over it.
func mustHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")

	addr, err := btcdchain.KeyAddress(keyPath, regtestParams)
	if err != nil {
		t.Fatal(err)
	}

	node, err := regtest.Start(t.Context(), regtest.Config{
		Dir:        filepath.Join(dir, "btcd"),
		MiningAddr: addr.EncodeAddress(),
		Logger:     testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Stop(context.Background()) })

	chain := mustClient(t, node.RPC())
	w, err := btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: keyPath, Chain: chain, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if w.Address().EncodeAddress() != addr.EncodeAddress() {
		t.Fatal("wallet address differs from KeyAddress")
	}
	return &harness{node: node, chain: chain, wallet: w}
}

func newTaprootAddr(t *testing.T) btcutil.Address {
	t.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	out := txscript.ComputeTaprootKeyNoScript(priv.PubKey())
	addr, err := btcutil.NewAddressTaproot(schnorr.SerializePubKey(out), regtestParams)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// subsidies sums the block rewards of heights from..to inclusive.
func subsidies(from, to int32) btcutil.Amount {
	var sum btcutil.Amount
	for h := from; h <= to; h++ {
		sum += btcutil.Amount(blockchain.CalcBlockSubsidy(h, regtestParams))
	}
	return sum
}

func TestWalletSendConfirms(t *testing.T) {
	h := mustHarness(t)
	ctx := t.Context()

	if err := h.chain.Healthy(ctx); err != nil {
		t.Fatalf("Healthy: %v", err)
	}
	if err := h.node.MineToActivation(ctx); err != nil {
		t.Fatal(err)
	}
	height, err := h.chain.BlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if height != regtest.ActivationHeight {
		t.Fatalf("height = %d, want %d", height, regtest.ActivationHeight)
	}

	// Every block 1..432 paid the wallet. A coinbase at height c has
	// height-c+1 confirmations and is spendable at 100, so 1..333 are
	// mature and 334..432 are not. Fees are zero: no other transactions.
	mature := height - int32(regtestParams.CoinbaseMaturity) + 1
	bal, err := h.wallet.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := btcdchain.Balance{Spendable: subsidies(1, mature), Immature: subsidies(mature+1, height)}
	if bal != want {
		t.Fatalf("balance = %+v, want %+v", bal, want)
	}

	to := newTaprootAddr(t)
	const amount = btcutil.Amount(123_456_789)
	txid, err := h.wallet.Send(ctx, to, amount)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}

	info, err := h.chain.GetTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	if info.Confirmations != 0 || info.BlockHash != nil {
		t.Fatalf("fresh tx: %d confirmations, block %v", info.Confirmations, info.BlockHash)
	}
	tx := info.Tx
	if len(tx.TxIn) != 1 || len(tx.TxOut) != 2 {
		t.Fatalf("tx has %d inputs, %d outputs; want 1, 2", len(tx.TxIn), len(tx.TxOut))
	}
	// The input is the largest mature coinbase: a 50 BTC one.
	in, err := h.chain.TxOut(ctx, tx.TxIn[0].PreviousOutPoint, false)
	if err != nil {
		t.Fatalf("input before mining: %v", err)
	}
	fee := in.Value - amount - btcutil.Amount(tx.TxOut[1].Value)
	vsize := (blockchain.GetTransactionWeight(btcutil.NewTx(tx)) + 3) / 4
	t.Logf("send: vsize %d vB, fee %v (%.2f sat/vB)", vsize, fee, float64(fee)/float64(vsize))
	if wantFee := btcutil.Amount((vsize*int64(btcdchain.DefaultFeeRate) + 999) / 1000); fee != wantFee {
		t.Fatalf("fee = %v, want %v for %d vB", fee, wantFee, vsize)
	}
	// A one-input, two-P2TR-output key-path spend is 154 vB.
	if vsize != 154 {
		t.Errorf("vsize = %d, want 154", vsize)
	}

	// In the mempool: the spent coin is gone from Spendable, the change is
	// Unconfirmed, and gettxout with the mempool no longer finds the input.
	bal, err = h.wallet.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bal.Unconfirmed != btcutil.Amount(tx.TxOut[1].Value) ||
		bal.Spendable != want.Spendable-in.Value {
		t.Fatalf("balance with tx in mempool = %+v", bal)
	}
	spenders, err := h.chain.MempoolSpenders(ctx, []wire.OutPoint{tx.TxIn[0].PreviousOutPoint, {Hash: txid, Index: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if spenders[0] == nil || *spenders[0] != txid || spenders[1] != nil {
		t.Fatalf("mempool spenders = %v, want [%v <nil>]", spenders, txid)
	}

	if _, err := h.chain.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	conf, err := h.chain.Confirmations(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	if conf != 1 {
		t.Fatalf("confirmations after one block = %d, want 1", conf)
	}
	out, err := h.chain.TxOut(ctx, wire.OutPoint{Hash: txid, Index: 0}, false)
	if err != nil {
		t.Fatalf("payment output: %v", err)
	}
	toScript, _ := txscript.PayToAddrScript(to)
	if out.Value != amount || string(out.PkScript) != string(toScript) || out.Confirmations != 1 || out.Coinbase {
		t.Fatalf("payment output = %+v", out)
	}
	if _, err := h.chain.TxOut(ctx, tx.TxIn[0].PreviousOutPoint, false); !errors.Is(err, btcdchain.ErrNotFound) {
		t.Fatalf("spent input: err = %v, want ErrNotFound", err)
	}

	// The fee came back to the wallet in block 433's coinbase, so the
	// wallet lost exactly the payment and gained the new subsidy.
	after, err := h.wallet.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := after.Total(), want.Total()-amount+subsidies(height+1, height+1); got != want {
		t.Fatalf("total after = %v, want %v (%+v)", got, want, after)
	}
	if after.Unconfirmed != 0 {
		t.Fatalf("unconfirmed after mining = %v", after.Unconfirmed)
	}

	t.Run("SpendsConfirmedChange", func(t *testing.T) {
		// Ask for more than any single coin so the change output,
		// now confirmed, must be combined with others.
		big := btcutil.Amount(60 * btcutil.SatoshiPerBitcoin)
		txid, err := h.wallet.Send(ctx, newTaprootAddr(t), big)
		if err != nil {
			t.Fatal(err)
		}
		info, err := h.chain.GetTx(ctx, txid)
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Tx.TxIn) < 2 {
			t.Fatalf("60 BTC paid from %d inputs", len(info.Tx.TxIn))
		}
		if _, err := h.chain.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if conf, err := h.chain.Confirmations(ctx, txid); err != nil || conf != 1 {
			t.Fatalf("confirmations = %d, %v", conf, err)
		}
	})

	t.Run("ErrInsufficientFunds", func(t *testing.T) {
		_, err := h.wallet.Send(ctx, newTaprootAddr(t), 20_000*btcutil.SatoshiPerBitcoin)
		if !errors.Is(err, btcdchain.ErrInsufficientFunds) {
			t.Fatalf("err = %v, want ErrInsufficientFunds", err)
		}
	})

	t.Run("ErrWrongNetwork", func(t *testing.T) {
		addr, err := btcutil.DecodeAddress("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", &chaincfg.MainNetParams)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.wallet.Send(ctx, addr, 100_000); !errors.Is(err, btcdchain.ErrWrongNetwork) {
			t.Fatalf("err = %v, want ErrWrongNetwork", err)
		}
	})

	t.Run("ErrRejected", func(t *testing.T) {
		// A changed copy of a confirmed transaction: its input is
		// spent and its signature no longer matches.
		dup := info.Tx.Copy()
		dup.TxOut[0].Value--
		if _, err := h.chain.SendRawTransaction(ctx, dup); !errors.Is(err, btcdchain.ErrRejected) {
			t.Fatalf("err = %v, want ErrRejected", err)
		}
	})

	t.Run("GetTxErrNotFound", func(t *testing.T) {
		if _, err := h.chain.GetTx(ctx, chainhash.Hash{1}); !errors.Is(err, btcdchain.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})

	t.Run("UnusedAddressHasNoTxs", func(t *testing.T) {
		txs, err := h.chain.AddressTxs(ctx, newTaprootAddr(t))
		if err != nil || len(txs) != 0 {
			t.Fatalf("AddressTxs = %d txs, %v", len(txs), err)
		}
	})

	t.Run("UnhealthyAfterStop", func(t *testing.T) {
		if err := h.node.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := h.chain.Healthy(callCtx); err == nil {
			t.Fatal("Healthy = nil with the node stopped")
		}
	})
}

func TestHealthyErrWrongNetwork(t *testing.T) {
	node, err := regtest.Start(t.Context(), regtest.Config{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop(context.Background())
	rpc := node.RPC()
	c, err := btcdchain.New(btcdchain.Config{
		Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, CertPath: rpc.CertPath,
		Params: &chaincfg.TestNet3Params,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Healthy(t.Context()); !errors.Is(err, btcdchain.ErrWrongNetwork) {
		t.Fatalf("err = %v, want ErrWrongNetwork", err)
	}
	if _, err := c.Mine(t.Context(), 1); !errors.Is(err, btcdchain.ErrMiningUnsupported) {
		t.Fatalf("Mine on testnet params: err = %v, want ErrMiningUnsupported", err)
	}
}

func TestWalletKeyFile(t *testing.T) {
	chain, err := btcdchain.New(btcdchain.Config{Host: "127.0.0.1:1", Cert: []byte("unused"), Params: regtestParams})
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	newWallet := func(path string) (*btcdchain.Wallet, error) {
		return btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: path, Chain: chain})
	}

	t.Run("CreatedOncePrivate", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "wallet.key")
		w1, err := newWallet(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode = %v, want 0600", fi.Mode().Perm())
		}
		w2, err := newWallet(path)
		if err != nil {
			t.Fatal(err)
		}
		if w1.Address().EncodeAddress() != w2.Address().EncodeAddress() {
			t.Fatal("second load produced another key")
		}
		if !w1.PubKey().IsEqual(w2.PubKey()) {
			t.Fatal("pubkeys differ")
		}
		if a := w1.Address().EncodeAddress(); a[:6] != "bcrt1p" {
			t.Fatalf("address %s is not regtest P2TR", a)
		}
	})

	t.Run("ErrKeyFileLoosePermissions", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "wallet.key")
		if _, err := newWallet(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := newWallet(path); !errors.Is(err, btcdchain.ErrKeyFile) {
			t.Fatalf("err = %v, want ErrKeyFile", err)
		}
	})

	t.Run("ErrKeyFileMalformed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "wallet.key")
		if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := newWallet(path); !errors.Is(err, btcdchain.ErrKeyFile) {
			t.Fatalf("err = %v, want ErrKeyFile", err)
		}
	})
}
