package channel

import (
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// RefundTx returns the device's unilateral exit: a transaction with lock
// time Expiry that spends the channel with funding outpoint id through the
// refund leaf and pays Capacity − fee to pkScript. It can be mined in any
// block above Expiry, so the device can broadcast it once the chain tip
// reaches Expiry. Sign it with SignRefund and attach RefundWitness. It
// returns an error when fee leaves nothing to pay.
func (o *Output) RefundTx(id wire.OutPoint, pkScript []byte, fee btcutil.Amount) (*wire.MsgTx, error) {
	if fee < 0 || fee >= o.params.Capacity {
		return nil, fmt.Errorf("channel: refund fee %d sat of capacity %d sat",
			int64(fee), int64(o.params.Capacity))
	}
	tx := wire.NewMsgTx(TxVersion)
	// CLTV compares the script's expiry with the transaction lock time
	// and ignores it if the input is final, hence both settings.
	tx.LockTime = o.params.Expiry
	in := wire.NewTxIn(&id, nil, nil)
	in.Sequence = RefundSequence
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(int64(o.params.Capacity-fee), clone(pkScript)))
	return tx, nil
}

// SignRefund is the device's signature on refund input idx of tx under
// hashType. prevOuts must know every input of tx; sigHashes may be nil. It
// returns the witness signature, with the hashType byte appended unless it
// is SigHashDefault, or an error wrapping ErrNotParticipant when key is not
// the device key.
func (o *Output) SignRefund(tx *wire.MsgTx, idx int, prevOuts txscript.PrevOutputFetcher,
	sigHashes *txscript.TxSigHashes, key *btcec.PrivateKey, hashType txscript.SigHashType) ([]byte, error) {

	if !key.PubKey().IsEqual(o.params.DeviceKey) {
		return nil, fmt.Errorf("%w: not the device key", ErrNotParticipant)
	}
	return signLeaf(tx, idx, prevOuts, sigHashes, o.refundLeaf, key, hashType)
}

// RefundWitness assembles the witness that spends the channel through the
// refund leaf: <device sig> <refund script> <control block>.
func (o *Output) RefundWitness(deviceSig []byte) wire.TxWitness {
	return wire.TxWitness{
		clone(deviceSig),
		clone(o.refundLeaf.Script),
		clone(o.refundCB),
	}
}
