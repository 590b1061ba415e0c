package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// channelCapacity is what each payer locks in its channel.
const channelCapacity = btcutil.Amount(1_000_000)

// demoChain is the regtest node hubd started, reached over its RPC (the
// address and credentials hubd wrote to hubd.json), with the hub's wallet
// borrowed as a faucet: hubd mines nothing by itself, so the demo mines.
type demoChain struct {
	c      *btcdchain.Client
	faucet *btcdchain.Wallet
}

func dialChain(dir string, rt datadir.Runtime) (*demoChain, error) {
	if rt.Btcd == nil {
		return nil, errors.New("hubd runs no regtest btcd of its own; the demo needs one")
	}
	quiet := slog.New(slog.DiscardHandler)
	c, err := btcdchain.New(btcdchain.Config{
		Host: rt.Btcd.Host, User: rt.Btcd.User, Pass: rt.Btcd.Pass, CertPath: rt.Btcd.CertPath,
		Params: &chaincfg.RegressionNetParams, Logger: quiet,
	})
	if err != nil {
		return nil, err
	}
	// Any wallet may fund a channel; the hub's regtest wallet holds the
	// coinbase of the blocks it mined at start.
	faucet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: filepath.Join(dir, datadir.WalletKeyFile), Chain: c, Logger: quiet,
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return &demoChain{c: c, faucet: faucet}, nil
}

func (dc *demoChain) Close() { dc.c.Close() }

// fundChannels opens a channel for each payer, pays all of them in one
// transaction from the faucet, mines it and waits for the hub to call
// every channel ready.
func (dc *demoChain) fundChannels(ctx context.Context, payers []*payer) (chainhash.Hash, error) {
	height, err := dc.c.BlockCount(ctx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	pending := make([]*m2mclient.PendingChannel, len(payers))
	outs := make([]*btcwire.TxOut, len(payers))
	for i, py := range payers {
		if pending[i], err = py.dev.OpenChannel(ctx, channelCapacity, uint32(height)+1000); err != nil {
			return chainhash.Hash{}, fmt.Errorf("open channel of %s: %w", py.name, err)
		}
		outs[i] = btcwire.NewTxOut(int64(channelCapacity), pending[i].PkScript)
	}
	txid, err := dc.faucet.SendMany(ctx, outs)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("fund channels: %w", err)
	}
	if _, err := dc.c.Mine(ctx, 1); err != nil {
		return chainhash.Hash{}, err
	}
	for i, py := range payers {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ch, err := py.dev.Funded(octx, pending[i].PendingID, btcwire.OutPoint{Hash: txid, Index: uint32(i)})
		cancel()
		if err != nil {
			return chainhash.Hash{}, fmt.Errorf("channel of %s: %w", py.name, err)
		}
		py.ch = ch.ID
	}
	return txid, nil
}

// LookupTx adapts the node to m2mclient.ChainLookup, as hubctl's receipt
// verify does: the proof is checked against what the node says, not the
// hub.
func (dc *demoChain) LookupTx(ctx context.Context, txid chainhash.Hash) (*btcwire.MsgTx, int64, error) {
	info, err := dc.c.GetTx(ctx, txid)
	if errors.Is(err, btcdchain.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", m2mclient.ErrTxNotFound, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return info.Tx, info.Confirmations, nil
}

// payoutAddress makes a fresh regtest P2TR address (BIP 86 key path) for a
// provider without a channel, and its output script.
func payoutAddress() (string, []byte, error) {
	k, err := btcec.NewPrivateKey()
	if err != nil {
		return "", nil, err
	}
	out := txscript.ComputeTaprootKeyNoScript(k.PubKey())
	addr, err := btcutil.NewAddressTaproot(schnorr.SerializePubKey(out), &chaincfg.RegressionNetParams)
	if err != nil {
		return "", nil, err
	}
	script, err := txscript.PayToAddrScript(addr)
	return addr.EncodeAddress(), script, err
}
