package settlement

import (
	"bytes"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/channel"
)

// CoopHashType is the sighash type of every cooperative key-path signature
// in a batch: each participant commits to its own input and the output at
// the same index only, so one absent participant never invalidates the
// others' signatures.
const CoopHashType = channel.ClaimHashType

// channelAt returns the planned channel at input i, checking its mode.
func (t *PlannedTx) channelAt(i int, mode Mode) (*PlannedChannel, error) {
	if i < 0 || i >= len(t.Channels) {
		return nil, fmt.Errorf("%w: input %d of %d channels", ErrBadInput, i, len(t.Channels))
	}
	c := &t.Channels[i]
	if c.Mode != mode {
		return nil, fmt.Errorf("%w: input %d is settled by %s, not %s", ErrBadInput, i, c.Mode, mode)
	}
	return c, nil
}

// CoopSigHash returns the key-path sighash (CoopHashType) of cooperative
// input i, the message both the device and the hub sign with MuSig2
// (channel.KeySession). Under SINGLE|ANYONECANPAY the digest needs none of
// the transaction-wide midstate, so this costs one hash of the input and
// its output, not of the whole batch.
func (t *PlannedTx) CoopSigHash(i int) ([32]byte, error) {
	if _, err := t.channelAt(i, ModeCooperative); err != nil {
		return [32]byte{}, err
	}
	return channel.KeySpendSigHash(t.Tx, i, t.prevOuts, &txscript.TxSigHashes{}, CoopHashType)
}

// CoopTemplate returns the one-input, one-output transaction the device of
// cooperative input i signs: version 2, lock time 0, its funding input and
// its next channel output. Its CoopHashType sighash at index 0 equals the
// batch's at index i (the digest covers nothing else), so a device never
// needs the batch itself.
func (t *PlannedTx) CoopTemplate(i int) (*wire.MsgTx, error) {
	if _, err := t.channelAt(i, ModeCooperative); err != nil {
		return nil, err
	}
	tx := wire.NewMsgTx(t.Tx.Version)
	tx.LockTime = t.Tx.LockTime
	in := *t.Tx.TxIn[i]
	in.Witness = nil
	tx.AddTxIn(&in)
	out := *t.Tx.TxOut[i]
	tx.AddTxOut(&out)
	return tx, nil
}

// VerifyOwnOutput is the device's check before it co-signs input i of tx:
// the transaction has the version and lock time its signature commits to,
// input i spends its channel (funding) with the claim sequence, and output i
// pays exactly value to script, its next channel. It returns an error
// wrapping ErrWrongOutput otherwise.
func VerifyOwnOutput(tx *wire.MsgTx, i int, funding wire.OutPoint, value int64, script []byte) error {
	switch {
	case tx == nil || i < 0 || i >= len(tx.TxIn) || i >= len(tx.TxOut):
		return fmt.Errorf("%w: no input/output pair %d", ErrWrongOutput, i)
	case tx.Version != channel.TxVersion || tx.LockTime != channel.ClaimLockTime:
		return fmt.Errorf("%w: version %d lock time %d", ErrWrongOutput, tx.Version, tx.LockTime)
	case tx.TxIn[i].PreviousOutPoint != funding:
		return fmt.Errorf("%w: input %d spends %v, not %v", ErrWrongOutput, i, tx.TxIn[i].PreviousOutPoint, funding)
	case tx.TxIn[i].Sequence != channel.ClaimSequence:
		return fmt.Errorf("%w: input %d sequence %#x", ErrWrongOutput, i, tx.TxIn[i].Sequence)
	case tx.TxOut[i].Value != value:
		return fmt.Errorf("%w: output %d pays %d sat, want %d", ErrWrongOutput, i, tx.TxOut[i].Value, value)
	case !bytes.Equal(tx.TxOut[i].PkScript, script):
		return fmt.Errorf("%w: output %d pays another script", ErrWrongOutput, i)
	}
	return nil
}

// SetCoopSignature attaches the combined MuSig2 signature of cooperative
// input i, after checking it against the input's output key and sighash. It
// returns an error wrapping channel.ErrBadSignature when it does not verify.
func (t *PlannedTx) SetCoopSignature(i int, sig *schnorr.Signature) error {
	c, err := t.channelAt(i, ModeCooperative)
	if err != nil {
		return err
	}
	h, err := t.CoopSigHash(i)
	if err != nil {
		return err
	}
	if sig == nil || !sig.Verify(h[:], c.Output.OutputKey()) {
		return fmt.Errorf("%w: key path of input %d", channel.ErrBadSignature, i)
	}
	t.Tx.TxIn[i].Witness = channel.KeySpendWitness(sig, CoopHashType)
	return nil
}

// SignClaim completes claim input i with the hub's signature, made with
// hubKey under CoopHashType (so it, too, survives changes elsewhere in the
// batch), and the device's stored claim signature. It returns an error
// wrapping channel.ErrBadSignature when the device signature does not
// verify, or channel.ErrNotParticipant for a foreign hub key.
func (t *PlannedTx) SignClaim(i int, hubKey *btcec.PrivateKey) error {
	c, err := t.channelAt(i, ModeClaim)
	if err != nil {
		return err
	}
	devSig, err := c.Claim.Signature()
	if err != nil {
		return err
	}
	if err := c.Output.VerifyClaim(c.Claim.State, devSig); err != nil {
		return err
	}
	if !hubKey.PubKey().IsEqual(c.Output.Params().HubKey) {
		return fmt.Errorf("%w: not the hub key of input %d", channel.ErrNotParticipant, i)
	}
	hubSig, err := c.Output.SignClaimHub(t.Tx, i, t.prevOuts, &txscript.TxSigHashes{}, hubKey, CoopHashType)
	if err != nil {
		return err
	}
	t.Tx.TxIn[i].Witness = c.Output.ClaimWitness(devSig, hubSig)
	return nil
}

// Signed reports whether every input of the transaction has a witness.
func (t *PlannedTx) Signed() bool {
	for _, in := range t.Tx.TxIn {
		if len(in.Witness) == 0 {
			return false
		}
	}
	return true
}
