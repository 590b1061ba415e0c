package record

import (
	"bytes"
	"fmt"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
)

// Spenders maps every outpoint the serialized transactions of a settlement
// run spend to the txid that spends it: the index both stores keep to find
// the run that spends a channel. A transaction that does not decode is
// refused with an error wrapping hub.ErrInvalid.
func Spenders(txs [][]byte) (map[wire.OutPoint]chainhash.Hash, error) {
	out := make(map[wire.OutPoint]chainhash.Hash)
	for i, raw := range txs {
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("%w: run transaction %d: %v", hub.ErrInvalid, i, err)
		}
		txid := tx.TxHash()
		for _, in := range tx.TxIn {
			out[in.PreviousOutPoint] = txid
		}
	}
	return out, nil
}
