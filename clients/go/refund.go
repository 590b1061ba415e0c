package m2mclient

import (
	"context"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
)

// Broadcaster publishes a transaction; *btcdchain.Client satisfies it.
type Broadcaster interface {
	// SendRawTransaction broadcasts tx and returns its id, or the node's
	// reason for refusing it.
	SendRawTransaction(ctx context.Context, tx *wire.MsgTx) (chainhash.Hash, error)
}

// BuildRefund builds and signs, with the device key alone, the refund of a
// channel output with terms p sitting at outpoint at: everything but fee
// goes to dest. The transaction has lock time p.Expiry, so a node accepts it
// only once the chain has passed the expiry height. It is checked with
// btcd's script engine before it is returned.
//
// at and p.Capacity name the output to refund: the funding output, or,
// after the hub claimed unilaterally, the device's next channel output,
// which keeps the channel's keys and expiry (hence its script) and is worth
// Capacity − paid.
func BuildRefund(key *btcec.PrivateKey, p channel.Params, at wire.OutPoint, dest []byte, fee btcutil.Amount) (*wire.MsgTx, error) {
	if !key.PubKey().IsEqual(p.DeviceKey) {
		return nil, fmt.Errorf("m2mclient: refund: %w", channel.ErrNotParticipant)
	}
	if len(dest) == 0 {
		return nil, fmt.Errorf("m2mclient: refund: empty destination script")
	}
	out, err := channel.NewOutput(p)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: refund: %w", err)
	}
	tx, err := out.RefundTx(at, dest, fee)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: refund: %w", err)
	}
	prev := out.TxOut()
	fetcher := txscript.NewCannedPrevOutputFetcher(prev.PkScript, prev.Value)
	sig, err := out.SignRefund(tx, 0, fetcher, nil, key, txscript.SigHashDefault)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: refund: %w", err)
	}
	tx.TxIn[0].Witness = out.RefundWitness(sig)

	// A refund that fails the script would only be found out when the
	// device needs it most; check it now.
	vm, err := txscript.NewEngine(prev.PkScript, tx, 0, txscript.StandardVerifyFlags,
		nil, txscript.NewTxSigHashes(tx, fetcher), prev.Value, fetcher)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: refund: script engine: %w", err)
	}
	if err := vm.Execute(); err != nil {
		return nil, fmt.Errorf("m2mclient: refund does not verify: %w", err)
	}
	return tx, nil
}

// Refund builds and signs the refund of the channel's funding output to dest
// from the device's own records; no hub is involved, so it works when the
// hub is gone (invariant I3). The caller broadcasts it once the chain tip
// has reached the channel's expiry (see BroadcastRefund). It returns an
// error wrapping ErrUnknownChannel when the device has no such channel.
func (d *Device) Refund(ctx context.Context, chanID wire.OutPoint, dest []byte, fee btcutil.Amount) (*wire.MsgTx, error) {
	c, err := d.channelCopy(chanID)
	if err != nil {
		return nil, err
	}
	return BuildRefund(d.cfg.Key, c.Params(d.cfg.Key.PubKey()), chanID, dest, fee)
}

// RefundOutput is Refund for the device's next channel output after the hub
// claimed the channel unilaterally: the output at outpoint at, worth value,
// created by the claim transaction.
func (d *Device) RefundOutput(ctx context.Context, chanID, at wire.OutPoint, value btcutil.Amount,
	dest []byte, fee btcutil.Amount) (*wire.MsgTx, error) {

	c, err := d.channelCopy(chanID)
	if err != nil {
		return nil, err
	}
	p := c.Params(d.cfg.Key.PubKey())
	p.Capacity = value
	return BuildRefund(d.cfg.Key, p, at, dest, fee)
}

// BroadcastRefund builds the refund of the channel's funding output, as
// Refund does, and broadcasts it through b.
func (d *Device) BroadcastRefund(ctx context.Context, b Broadcaster, chanID wire.OutPoint,
	dest []byte, fee btcutil.Amount) (chainhash.Hash, error) {

	tx, err := d.Refund(ctx, chanID, dest, fee)
	if err != nil {
		return chainhash.Hash{}, err
	}
	txid, err := b.SendRawTransaction(ctx, tx)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("m2mclient: broadcast refund: %w", err)
	}
	return txid, nil
}
