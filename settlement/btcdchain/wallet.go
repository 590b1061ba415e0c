package btcdchain

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/mempool"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// DefaultFeeRate is the wallet's fee rate when WalletConfig.FeeRate is zero:
// 2 sat/vB, twice btcd's default minimum relay fee.
const DefaultFeeRate btcutil.Amount = 2000

// WalletConfig configures a Wallet.
type WalletConfig struct {
	// KeyPath is the file holding the wallet's private key. It is created
	// with mode 0600 on first use and must not be readable by others.
	KeyPath string
	// Chain is the node the wallet reads and broadcasts through. It must
	// run with --addrindex and --txindex.
	Chain *Client
	// FeeRate is in satoshis per 1000 virtual bytes. Zero means
	// DefaultFeeRate.
	FeeRate btcutil.Amount
	// Logger receives diagnostics. Nil means slog.Default().
	Logger *slog.Logger
}

// Wallet is the hub's single-key on-chain wallet: one BIP 86 taproot address
// whose coins are found through the node's address index, so the wallet
// keeps no state of its own beyond the key. That is enough for regtest and
// for funding settlement; it is not meant to scale to many thousands of
// outputs, since every query replays the address history.
type Wallet struct {
	chain   *Client
	priv    *btcec.PrivateKey
	addr    *btcutil.AddressTaproot
	script  []byte
	feeRate btcutil.Amount
	log     *slog.Logger

	// sendMu serialises Send so that two sends never pick the same coins:
	// the first one's transaction is in the mempool, and so excluded,
	// before the second one looks.
	sendMu sync.Mutex
}

// NewWallet loads the key at cfg.KeyPath, creating it if missing, and returns
// the wallet for it. It fails with ErrKeyFile if the file is malformed or not
// private to its owner.
func NewWallet(cfg WalletConfig) (*Wallet, error) {
	if cfg.KeyPath == "" {
		return nil, errors.New("btcdchain: WalletConfig.KeyPath is required")
	}
	if cfg.Chain == nil {
		return nil, errors.New("btcdchain: WalletConfig.Chain is required")
	}
	if cfg.FeeRate == 0 {
		cfg.FeeRate = DefaultFeeRate
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	priv, err := loadOrCreateKey(cfg.KeyPath)
	if err != nil {
		return nil, err
	}
	addr, err := bip86Address(priv, cfg.Chain.Params())
	if err != nil {
		return nil, err
	}
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	return &Wallet{
		chain:   cfg.Chain,
		priv:    priv,
		addr:    addr,
		script:  script,
		feeRate: cfg.FeeRate,
		log:     cfg.Logger,
	}, nil
}

// KeyAddress returns the P2TR address of the wallet key at keyPath, creating
// the key if missing, without needing a node. It breaks the start-up cycle of
// an embedded regtest node: btcd wants the wallet's address as --miningaddr
// before the Client that NewWallet needs can exist.
func KeyAddress(keyPath string, params *chaincfg.Params) (*btcutil.AddressTaproot, error) {
	priv, err := loadOrCreateKey(keyPath)
	if err != nil {
		return nil, err
	}
	return bip86Address(priv, params)
}

// bip86Address returns the key-path-only taproot address of priv: the output
// key is the internal key tweaked with an empty script tree (BIP 86).
func bip86Address(priv *btcec.PrivateKey, params *chaincfg.Params) (*btcutil.AddressTaproot, error) {
	outKey := txscript.ComputeTaprootKeyNoScript(priv.PubKey())
	addr, err := btcutil.NewAddressTaproot(schnorr.SerializePubKey(outKey), params)
	if err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	return addr, nil
}

// Address returns the wallet's P2TR address.
func (w *Wallet) Address() btcutil.Address { return w.addr }

// PubKey returns the wallet's internal (untweaked) public key.
func (w *Wallet) PubKey() *btcec.PublicKey { return w.priv.PubKey() }

// PrivKey returns the wallet's internal private key: the BIP 86 key of its
// address, which is what the hub's settlement takes as RevenueKey when its
// revenue goes to this wallet, so it can spend that output in a fee-bumping
// child (CPFP).
func (w *Wallet) PrivKey() *btcec.PrivateKey { return w.priv }

// UTXO is an unspent output paying the wallet.
type UTXO struct {
	OutPoint wire.OutPoint
	Value    btcutil.Amount
	// Confirmations is 0 for an output of a mempool transaction.
	Confirmations int64
	Coinbase      bool
}

// spendable reports whether the output may go into the next block: it must
// be confirmed, and a coinbase output must have matured.
func (u UTXO) spendable(maturity int64) bool {
	if u.Confirmations < 1 {
		return false
	}
	return !u.Coinbase || u.Confirmations >= maturity
}

// UTXOs returns the wallet's unspent outputs, including those created and
// excluding those spent by mempool transactions.
//
// The address index lists both the transactions paying the address and
// those spending from it, so the unspent set is every output to the wallet
// not consumed by an input of another listed transaction.
func (w *Wallet) UTXOs(ctx context.Context) ([]UTXO, error) {
	txs, err := w.chain.AddressTxs(ctx, w.addr)
	if err != nil {
		return nil, err
	}
	spent := make(map[wire.OutPoint]bool)
	for _, t := range txs {
		for _, in := range t.Tx.TxIn {
			spent[in.PreviousOutPoint] = true
		}
	}
	var utxos []UTXO
	for _, t := range txs {
		hash := t.Tx.TxHash()
		coinbase := blockchain.IsCoinBaseTx(t.Tx)
		for i, out := range t.Tx.TxOut {
			op := wire.OutPoint{Hash: hash, Index: uint32(i)}
			if spent[op] || !bytes.Equal(out.PkScript, w.script) {
				continue
			}
			utxos = append(utxos, UTXO{
				OutPoint:      op,
				Value:         btcutil.Amount(out.Value),
				Confirmations: t.Confirmations,
				Coinbase:      coinbase,
			})
		}
	}
	return utxos, nil
}

// Balance splits the wallet's unspent value by what can be spent now.
type Balance struct {
	// Spendable is confirmed and, for coinbase outputs, mature.
	Spendable btcutil.Amount
	// Immature is coinbase value not yet spendable (fewer than
	// CoinbaseMaturity confirmations).
	Immature btcutil.Amount
	// Unconfirmed is value of outputs still in the mempool, such as change.
	Unconfirmed btcutil.Amount
}

// Total returns the sum of all three parts.
func (b Balance) Total() btcutil.Amount { return b.Spendable + b.Immature + b.Unconfirmed }

// Balance returns the wallet's balance as the node sees it now.
func (w *Wallet) Balance(ctx context.Context) (Balance, error) {
	utxos, err := w.UTXOs(ctx)
	if err != nil {
		return Balance{}, err
	}
	maturity := int64(w.chain.Params().CoinbaseMaturity)
	var b Balance
	for _, u := range utxos {
		switch {
		case u.spendable(maturity):
			b.Spendable += u.Value
		case u.Confirmations < 1:
			b.Unconfirmed += u.Value
		default:
			b.Immature += u.Value
		}
	}
	return b, nil
}

// Send pays amount to the address to, with change back to the wallet, and
// broadcasts the transaction. It spends only confirmed, mature outputs and
// returns ErrInsufficientFunds if they do not cover amount plus fee, or
// ErrRejected if the node refuses the transaction.
func (w *Wallet) Send(ctx context.Context, to btcutil.Address, amount btcutil.Amount) (chainhash.Hash, error) {
	if !to.IsForNet(w.chain.Params()) {
		return chainhash.Hash{}, fmt.Errorf("%w: address %s is not for %s",
			ErrWrongNetwork, to, w.chain.Params().Name)
	}
	toScript, err := txscript.PayToAddrScript(to)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("btcdchain: %w", err)
	}
	payment := wire.NewTxOut(int64(amount), toScript)
	if amount <= 0 || mempool.IsDust(payment, mempool.DefaultMinRelayTxFee) {
		return chainhash.Hash{}, fmt.Errorf("btcdchain: amount %v is not above the dust limit", amount)
	}

	w.sendMu.Lock()
	defer w.sendMu.Unlock()

	utxos, err := w.UTXOs(ctx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	maturity := int64(w.chain.Params().CoinbaseMaturity)
	utxos = slices.DeleteFunc(utxos, func(u UTXO) bool { return !u.spendable(maturity) })
	// Largest first keeps the input count, and so the fee, small.
	slices.SortFunc(utxos, func(a, b UTXO) int { return cmp.Compare(b.Value, a.Value) })

	tx, prevOuts, err := w.fund(utxos, payment)
	if err != nil {
		return chainhash.Hash{}, err
	}

	if err := w.checkInputs(ctx, tx, prevOuts); err != nil {
		return chainhash.Hash{}, err
	}

	if err := w.sign(tx, prevOuts); err != nil {
		return chainhash.Hash{}, err
	}
	txid, err := w.chain.SendRawTransaction(ctx, tx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	w.log.Info("wallet sent", "txid", txid, "to", to.EncodeAddress(),
		"amount", amount, "inputs", len(tx.TxIn), "outputs", len(tx.TxOut))
	return txid, nil
}

// checkInputs confirms against the UTXO set and the mempool, rather than the
// address index's view of history, that every chosen coin still exists, is
// what the index said, and is not being spent by a mempool transaction.
func (w *Wallet) checkInputs(ctx context.Context, tx *wire.MsgTx, prevOuts map[wire.OutPoint]*wire.TxOut) error {
	ops := make([]wire.OutPoint, len(tx.TxIn))
	for i, in := range tx.TxIn {
		op := in.PreviousOutPoint
		ops[i] = op
		out, err := w.chain.TxOut(ctx, op, true)
		if err != nil {
			return fmt.Errorf("btcdchain: input %s: %w", op, err)
		}
		prev := prevOuts[op]
		if int64(out.Value) != prev.Value || !bytes.Equal(out.PkScript, prev.PkScript) {
			return fmt.Errorf("btcdchain: input %s differs from the address index", op)
		}
	}
	spenders, err := w.chain.MempoolSpenders(ctx, ops)
	if err != nil {
		return err
	}
	for i, s := range spenders {
		if s != nil {
			return fmt.Errorf("btcdchain: input %s already spent by mempool tx %s", ops[i], s)
		}
	}
	return nil
}

// fund picks inputs from utxos (in order) and builds the unsigned
// transaction paying payment, with a change output when the change is not
// dust. The fee is computed from the exact weight the signed transaction will
// have: a BIP 86 key-path witness is always one 64-byte signature.
func (w *Wallet) fund(utxos []UTXO, payment *wire.TxOut) (*wire.MsgTx, map[wire.OutPoint]*wire.TxOut, error) {
	tx := wire.NewMsgTx(2)
	tx.AddTxOut(payment)
	prevOuts := make(map[wire.OutPoint]*wire.TxOut)
	var in btcutil.Amount
	amount := btcutil.Amount(payment.Value)

	for _, u := range utxos {
		tx.AddTxIn(wire.NewTxIn(&u.OutPoint, nil, nil))
		prevOuts[u.OutPoint] = wire.NewTxOut(int64(u.Value), w.script)
		in += u.Value

		// First try with change.
		change := wire.NewTxOut(0, w.script)
		withChange := tx.Copy()
		withChange.AddTxOut(change)
		fee := w.fee(withChange)
		if rest := in - amount - fee; rest > 0 {
			change.Value = int64(rest)
			if !mempool.IsDust(change, mempool.DefaultMinRelayTxFee) {
				withChange.TxOut[1].Value = int64(rest)
				return withChange, prevOuts, nil
			}
		}
		// Change would be dust or negative: without it, whatever is
		// left over goes to the fee.
		if in-amount >= w.fee(tx) {
			return tx, prevOuts, nil
		}
	}
	return nil, nil, fmt.Errorf("%w: have %v spendable, need %v plus fee",
		ErrInsufficientFunds, in, amount)
}

// fee returns the fee for tx at the wallet's rate, assuming every input will
// carry a 64-byte Schnorr signature.
func (w *Wallet) fee(tx *wire.MsgTx) btcutil.Amount {
	sized := tx.Copy()
	for _, in := range sized.TxIn {
		in.Witness = wire.TxWitness{make([]byte, schnorr.SignatureSize)}
	}
	weight := blockchain.GetTransactionWeight(btcutil.NewTx(sized))
	vsize := (weight + blockchain.WitnessScaleFactor - 1) / blockchain.WitnessScaleFactor
	// Round up so the rate is never below what was asked for.
	return btcutil.Amount((vsize*int64(w.feeRate) + 999) / 1000)
}

// sign adds a BIP 86 key-path signature to every input, then runs btcd's
// script engine on each so that a signing bug shows here with a clear error
// rather than as a vague rejection from the node.
func (w *Wallet) sign(tx *wire.MsgTx, prevOuts map[wire.OutPoint]*wire.TxOut) error {
	fetcher := txscript.NewMultiPrevOutFetcher(prevOuts)
	sigHashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, in := range tx.TxIn {
		prev := prevOuts[in.PreviousOutPoint]
		wit, err := txscript.TaprootWitnessSignature(tx, sigHashes, i,
			prev.Value, prev.PkScript, txscript.SigHashDefault, w.priv)
		if err != nil {
			return fmt.Errorf("btcdchain: sign input %d: %w", i, err)
		}
		in.Witness = wit
	}
	for i, in := range tx.TxIn {
		prev := prevOuts[in.PreviousOutPoint]
		vm, err := txscript.NewEngine(prev.PkScript, tx, i,
			txscript.StandardVerifyFlags, nil, sigHashes, prev.Value, fetcher)
		if err != nil {
			return fmt.Errorf("btcdchain: verify input %d: %w", i, err)
		}
		if err := vm.Execute(); err != nil {
			return fmt.Errorf("btcdchain: verify input %d: %w", i, err)
		}
	}
	return nil
}

// SendMany pays every output in one transaction, with change back to the
// wallet, and broadcasts it; output i of the transaction is outputs[i] and
// the change, when not dust, comes last. Funding hundreds of channels in
// one transaction pays for one set of inputs and one change output instead
// of one per channel. Coins are chosen, checked and signed as in Send. It
// returns ErrInsufficientFunds if the spendable coins do not cover the
// outputs plus fee, or ErrRejected if the node refuses the transaction.
func (w *Wallet) SendMany(ctx context.Context, outputs []*wire.TxOut) (chainhash.Hash, error) {
	if len(outputs) == 0 {
		return chainhash.Hash{}, errors.New("btcdchain: no outputs to pay")
	}
	var total btcutil.Amount
	for i, o := range outputs {
		if o == nil || len(o.PkScript) == 0 {
			return chainhash.Hash{}, fmt.Errorf("btcdchain: output %d has no script", i)
		}
		if o.Value <= 0 || o.Value > btcutil.MaxSatoshi || mempool.IsDust(o, mempool.DefaultMinRelayTxFee) {
			return chainhash.Hash{}, fmt.Errorf("btcdchain: output %d: amount %v is not above the dust limit",
				i, btcutil.Amount(o.Value))
		}
		total += btcutil.Amount(o.Value)
		if total > btcutil.MaxSatoshi {
			return chainhash.Hash{}, fmt.Errorf("btcdchain: outputs total more than %v", btcutil.Amount(btcutil.MaxSatoshi))
		}
	}

	w.sendMu.Lock()
	defer w.sendMu.Unlock()

	utxos, err := w.UTXOs(ctx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	maturity := int64(w.chain.Params().CoinbaseMaturity)
	utxos = slices.DeleteFunc(utxos, func(u UTXO) bool { return !u.spendable(maturity) })
	slices.SortFunc(utxos, func(a, b UTXO) int { return cmp.Compare(b.Value, a.Value) })

	// The outputs are copied so that the caller's slice is never
	// aliased by the transaction the wallet signs.
	tx := wire.NewMsgTx(2)
	for _, o := range outputs {
		tx.AddTxOut(wire.NewTxOut(o.Value, slices.Clone(o.PkScript)))
	}
	prevOuts := make(map[wire.OutPoint]*wire.TxOut)
	var in btcutil.Amount
	funded := false
	for _, u := range utxos {
		tx.AddTxIn(wire.NewTxIn(&u.OutPoint, nil, nil))
		prevOuts[u.OutPoint] = wire.NewTxOut(int64(u.Value), w.script)
		in += u.Value

		change := wire.NewTxOut(0, w.script)
		tx.AddTxOut(change)
		if rest := in - total - w.fee(tx); rest > 0 {
			change.Value = int64(rest)
			if !mempool.IsDust(change, mempool.DefaultMinRelayTxFee) {
				funded = true
				break
			}
		}
		// Change would be dust or negative: without it, the rest goes
		// to the fee if it covers it.
		tx.TxOut = tx.TxOut[:len(tx.TxOut)-1]
		if in-total >= w.fee(tx) {
			funded = true
			break
		}
	}
	if !funded {
		return chainhash.Hash{}, fmt.Errorf("%w: have %v spendable, need %v plus fee",
			ErrInsufficientFunds, in, total)
	}

	if err := w.checkInputs(ctx, tx, prevOuts); err != nil {
		return chainhash.Hash{}, err
	}
	if err := w.sign(tx, prevOuts); err != nil {
		return chainhash.Hash{}, err
	}
	txid, err := w.chain.SendRawTransaction(ctx, tx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	w.log.Info("wallet sent to many", "txid", txid, "outputs", len(outputs),
		"amount", total, "inputs", len(tx.TxIn))
	return txid, nil
}
