package hubtest

import (
	"bytes"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/settlement"
)

// RunTxids returns the ids of the transactions of run r, in order.
func RunTxids(t *testing.T, r settlement.Run) []chainhash.Hash {
	var ids []chainhash.Hash
	for _, raw := range r.Txs {
		var tx btcwire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tx.TxHash())
	}
	return ids
}

// IndexOfInput returns the index of the input of tx spending op, or -1.
func IndexOfInput(tx *btcwire.MsgTx, op btcwire.OutPoint) int {
	for i, in := range tx.TxIn {
		if in.PreviousOutPoint == op {
			return i
		}
	}
	return -1
}
