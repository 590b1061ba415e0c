package channel

import (
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// ClaimHashType is the sighash type of every device claim signature. SINGLE
// commits to the output at the input's own index (the device's next channel
// output) and ANYONECANPAY to this input alone, so claims of many channels
// combine into one transaction without any device re-signing.
const ClaimHashType = txscript.SigHashSingle | txscript.SigHashAnyOneCanPay

// ClaimTxIn returns the input that spends the channel with funding outpoint
// id through the claim leaf, with the sequence claim signatures commit to.
func ClaimTxIn(id wire.OutPoint) *wire.TxIn {
	in := wire.NewTxIn(&id, nil, nil)
	in.Sequence = ClaimSequence
	return in
}

// NextTxOut returns the output that must sit at the claim input's index: the
// device's next channel output (see Next), worth Capacity − floor(paid/1000)
// sat. It returns an error wrapping ErrOverCapacity when paid exceeds
// MaxPaid.
func (o *Output) NextTxOut(paid msat.Amount) (*wire.TxOut, error) {
	if paid > o.params.MaxPaid() {
		return nil, fmt.Errorf("%w: paid %d msat, max %d msat",
			ErrOverCapacity, uint64(paid), uint64(o.params.MaxPaid()))
	}
	value := o.params.Capacity - paid.ToSatoshis()
	return wire.NewTxOut(int64(value), clone(o.pkScript)), nil
}

// ClaimTemplate returns the smallest transaction a claim signature for s can
// be checked against: version TxVersion, lock time ClaimLockTime, the claim
// input and the next channel output. Because the signature commits to
// nothing else, it stays valid at any index i of any transaction with the
// same version and lock time whose output i is that same output.
func (o *Output) ClaimTemplate(s State) (*wire.MsgTx, error) {
	out, err := o.NextTxOut(s.Paid)
	if err != nil {
		return nil, err
	}
	tx := wire.NewMsgTx(TxVersion)
	tx.LockTime = ClaimLockTime
	tx.AddTxIn(ClaimTxIn(s.ChannelID))
	tx.AddTxOut(out)
	return tx, nil
}

// ClaimSigHash returns the BIP341 script-path signature hash, for the claim
// leaf under ClaimHashType, of the claim of s. It commits to the version and
// lock time, the funding outpoint with its amount (Capacity) and script, the
// input sequence, the next channel output and the claim leaf. It returns an
// error wrapping ErrOverCapacity when s pays more than MaxPaid.
func (o *Output) ClaimSigHash(s State) ([32]byte, error) {
	tx, err := o.ClaimTemplate(s)
	if err != nil {
		return [32]byte{}, err
	}
	// Under ANYONECANPAY|SINGLE the digest uses none of the transaction-wide
	// midstate hashes, so an empty TxSigHashes is enough and saves hashing
	// on the per-payment path.
	fetcher := txscript.NewCannedPrevOutputFetcher(o.pkScript, int64(o.params.Capacity))
	h, err := txscript.CalcTapscriptSignaturehash(
		&txscript.TxSigHashes{}, ClaimHashType, tx, 0, fetcher, o.claimLeaf,
	)
	if err != nil {
		return [32]byte{}, fmt.Errorf("channel: claim sighash: %w", err)
	}
	var out [32]byte
	copy(out[:], h)
	return out, nil
}

// SignClaim is the device's side of a payment: it signs the claim of s with
// the device key. It returns an error wrapping ErrNotParticipant when key is
// not the channel's device key, or ErrOverCapacity.
func (o *Output) SignClaim(key *btcec.PrivateKey, s State) (*schnorr.Signature, error) {
	h, err := o.ClaimSigHash(s)
	if err != nil {
		return nil, err
	}
	// btcec's Sign checks its own signature unless told FastSign, which
	// matters on a device (a fault while signing must not let a bad
	// signature out); it does so through the key's x-only bytes, parsed
	// again. The check here is the same one against the device key lifted
	// once, and it also tells whether key is the device key, which
	// otherwise costs a public key derivation per payment.
	sig, err := schnorr.Sign(key, h[:], schnorr.FastSign())
	if err != nil {
		return nil, fmt.Errorf("channel: sign claim: %w", err)
	}
	if !o.device.verify(&h, (*[64]byte)(sig.Serialize())) {
		if !key.PubKey().IsEqual(o.params.DeviceKey) {
			return nil, fmt.Errorf("%w: not the device key", ErrNotParticipant)
		}
		return nil, fmt.Errorf("%w: claim signature of %v seq %d fails its own check", ErrBadSignature, s.ChannelID, s.Seq)
	}
	return sig, nil
}

// VerifyClaim is the hub's per-payment check: it recomputes the claim
// sighash of s and verifies sig against the device key, one Schnorr
// verification (against the device key lifted once, in NewOutput) and no
// script execution. A nil error means the hub holds an
// on-chain claim of s.PaidSat(). It returns an error wrapping
// ErrBadSignature, or ErrOverCapacity.
func (o *Output) VerifyClaim(s State, sig *schnorr.Signature) error {
	h, err := o.ClaimSigHash(s)
	if err != nil {
		return err
	}
	if sig == nil || !o.device.verify(&h, (*[64]byte)(sig.Serialize())) {
		return fmt.Errorf("%w: claim of %v seq %d", ErrBadSignature, s.ChannelID, s.Seq)
	}
	return nil
}

// AppendClaim adds the claim of s to tx as input i and its next channel
// output as output i, and returns i. tx must have TxVersion and
// ClaimLockTime and as many inputs as outputs, so that every claim input
// lines up with its own output: put claims first and any other outputs
// (payouts, the hub's revenue, OP_RETURN) after them. It returns an error
// wrapping ErrMisaligned or ErrOverCapacity.
func AppendClaim(tx *wire.MsgTx, o *Output, s State) (int, error) {
	switch {
	case tx.Version != TxVersion || tx.LockTime != ClaimLockTime:
		return 0, fmt.Errorf("%w: tx version %d lock time %d, claims need %d and %d",
			ErrMisaligned, tx.Version, tx.LockTime, TxVersion, ClaimLockTime)
	case len(tx.TxIn) != len(tx.TxOut):
		return 0, fmt.Errorf("%w: %d inputs, %d outputs",
			ErrMisaligned, len(tx.TxIn), len(tx.TxOut))
	}
	out, err := o.NextTxOut(s.Paid)
	if err != nil {
		return 0, err
	}
	tx.AddTxIn(ClaimTxIn(s.ChannelID))
	tx.AddTxOut(out)
	return len(tx.TxIn) - 1, nil
}

// SignClaimHub is the hub's own signature on claim input idx of the final
// transaction tx, under hashType (txscript.SigHashDefault commits to the
// whole batch and saves a byte). prevOuts must know every input of tx;
// sigHashes may be nil, in which case it is computed from prevOuts (pass it
// in when signing many inputs of one transaction). It returns the witness
// signature, with the hashType byte appended unless it is SigHashDefault, or
// an error wrapping ErrNotParticipant when key is not the hub key.
func (o *Output) SignClaimHub(tx *wire.MsgTx, idx int, prevOuts txscript.PrevOutputFetcher,
	sigHashes *txscript.TxSigHashes, key *btcec.PrivateKey, hashType txscript.SigHashType) ([]byte, error) {

	if !key.PubKey().IsEqual(o.params.HubKey) {
		return nil, fmt.Errorf("%w: not the hub key", ErrNotParticipant)
	}
	return signLeaf(tx, idx, prevOuts, sigHashes, o.claimLeaf, key, hashType)
}

// ClaimWitness assembles the witness that spends the channel through the
// claim leaf: <device sig ‖ ClaimHashType> <hub sig> <claim script>
// <control block>.
func (o *Output) ClaimWitness(deviceSig *schnorr.Signature, hubSig []byte) wire.TxWitness {
	return wire.TxWitness{
		append(deviceSig.Serialize(), byte(ClaimHashType)),
		clone(hubSig),
		clone(o.claimLeaf.Script),
		clone(o.claimCB),
	}
}

// signLeaf makes a script-path signature of input idx for leaf.
func signLeaf(tx *wire.MsgTx, idx int, prevOuts txscript.PrevOutputFetcher,
	sigHashes *txscript.TxSigHashes, leaf txscript.TapLeaf, key *btcec.PrivateKey,
	hashType txscript.SigHashType) ([]byte, error) {

	if idx < 0 || idx >= len(tx.TxIn) {
		return nil, fmt.Errorf("channel: input %d of %d", idx, len(tx.TxIn))
	}
	if sigHashes == nil {
		sigHashes = txscript.NewTxSigHashes(tx, prevOuts)
	}
	h, err := txscript.CalcTapscriptSignaturehash(sigHashes, hashType, tx, idx, prevOuts, leaf)
	if err != nil {
		return nil, fmt.Errorf("channel: sighash: %w", err)
	}
	sig, err := schnorr.Sign(key, h)
	if err != nil {
		return nil, fmt.Errorf("channel: sign: %w", err)
	}
	if hashType == txscript.SigHashDefault {
		return sig.Serialize(), nil
	}
	return append(sig.Serialize(), byte(hashType)), nil
}
