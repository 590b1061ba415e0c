package btcdchain

import (
	"context"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
)

// HubChain adapts a Client to the hub's chain ports (channels.Chain,
// settler.Chain): its answers are the hub's own types, and an unknown
// transaction or output is an error wrapping hub.ErrNotFound (and
// ErrNotFound). BlockCount and SendRawTransaction are the Client's.
type HubChain struct {
	*Client
}

// TxOut looks up an unspent output as Client.TxOut does.
func (h HubChain) TxOut(ctx context.Context, op wire.OutPoint, includeMempool bool) (hub.TxOut, error) {
	o, err := h.Client.TxOut(ctx, op, includeMempool)
	if err != nil {
		return hub.TxOut{}, notFound(err)
	}
	return hub.TxOut{Value: o.Value, PkScript: o.PkScript, Confirmations: o.Confirmations, Coinbase: o.Coinbase}, nil
}

// GetTx returns a transaction as Client.GetTx does.
func (h HubChain) GetTx(ctx context.Context, txid chainhash.Hash) (hub.TxInfo, error) {
	info, err := h.Client.GetTx(ctx, txid)
	if err != nil {
		return hub.TxInfo{}, notFound(err)
	}
	return hub.TxInfo{Tx: info.Tx, Confirmations: info.Confirmations, BlockHash: info.BlockHash}, nil
}

// Confirmations returns how many blocks confirm txid, as
// Client.Confirmations does.
func (h HubChain) Confirmations(ctx context.Context, txid chainhash.Hash) (int64, error) {
	n, err := h.Client.Confirmations(ctx, txid)
	return n, notFound(err)
}

// notFound makes the node's "not found" the hub's too, keeping both in the
// chain.
func notFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %w", hub.ErrNotFound, err)
	}
	return err
}
