package hub

import (
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
)

// The hub's view of the base chain. The channel manager and the settler
// each name the calls they make (channels.Chain, settler.Chain); the values
// those calls return are the hub's own, so the service links no RPC client.
// An adapter (settlement/btcdchain.HubChain) converts its node's answers into
// them, and its "not found" into an error wrapping ErrNotFound.

// TxOut is an unspent transaction output as the chain sees it.
type TxOut struct {
	Value    btcutil.Amount
	PkScript []byte
	// Confirmations is 0 for an output created in the mempool.
	Confirmations int64
	Coinbase      bool
}

// TxInfo is a transaction found in the mempool or the best chain.
type TxInfo struct {
	Tx *btcwire.MsgTx
	// Confirmations is 0 while the transaction is in the mempool.
	Confirmations int64
	// BlockHash is nil while the transaction is in the mempool.
	BlockHash *chainhash.Hash
}
