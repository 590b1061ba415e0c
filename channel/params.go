package channel

import (
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

const (
	// Reserve is the part of the capacity a state can never pay. It keeps
	// the next channel output at or above the P2TR dust limit (330 sat at
	// the default 3 sat/vB dust relay fee), so the output that
	// SIGHASH_SINGLE needs at the claim's index always exists and relays.
	Reserve btcutil.Amount = 330

	// TxVersion is the version of every claim transaction. Taproot
	// signatures commit to it even under SIGHASH_ANYONECANPAY, so all
	// claims, and the batches that combine them, must share it.
	TxVersion int32 = 2

	// ClaimLockTime is the lock time of every claim transaction, committed
	// to by every claim signature like TxVersion. Zero means a claim is
	// valid at any height, before and after the expiry.
	ClaimLockTime uint32 = 0

	// ClaimSequence is the nSequence of every claim input, committed to by
	// the device signature. It signals replaceability and, with bit 31
	// set, disables BIP68 relative lock times.
	ClaimSequence uint32 = wire.MaxTxInSequenceNum - 2

	// RefundSequence is the nSequence of a refund input. It must not be
	// final, or OP_CHECKLOCKTIMEVERIFY fails.
	RefundSequence uint32 = wire.MaxTxInSequenceNum - 2
)

// Params are the agreed, immutable terms of one channel output. Everything on
// chain is derived from them.
type Params struct {
	// DeviceKey is the paying device's identity key.
	DeviceKey *btcec.PublicKey

	// HubKey is the hub's channel key.
	HubKey *btcec.PublicKey

	// Capacity is the value of the channel output.
	Capacity btcutil.Amount

	// Expiry is the absolute block height from which the device may take
	// everything back alone: a refund transaction with lock time Expiry
	// can be mined in any block above Expiry.
	Expiry uint32
}

// Validate reports whether p can be turned into an output. It returns an
// error wrapping ErrInvalidParams.
func (p Params) Validate() error {
	switch {
	case p.DeviceKey == nil || p.HubKey == nil:
		return fmt.Errorf("%w: missing key", ErrInvalidParams)
	case p.DeviceKey.IsEqual(p.HubKey):
		// With one key the claim leaf would need a single signer, and
		// the hub's consent would mean nothing.
		return fmt.Errorf("%w: device and hub keys are equal", ErrInvalidParams)
	case p.Capacity <= Reserve || p.Capacity > btcutil.MaxSatoshi:
		return fmt.Errorf("%w: capacity %d sat not in (%d, %d]",
			ErrInvalidParams, int64(p.Capacity), int64(Reserve), int64(btcutil.MaxSatoshi))
	case p.Expiry == 0 || p.Expiry >= txscript.LockTimeThreshold:
		return fmt.Errorf("%w: expiry %d is not a block height", ErrInvalidParams, p.Expiry)
	}
	return nil
}

// MaxPaid is the most a state of this channel can pay: the capacity less the
// reserve, in millisatoshi.
func (p Params) MaxPaid() msat.Amount {
	return msat.FromSatoshis(p.Capacity - Reserve)
}

// Output is a channel output derived from Params: its keys, scripts, tap tree
// and control blocks. It is immutable and safe for concurrent use; derive it
// once per channel, because key aggregation and tweaking are the expensive
// part.
type Output struct {
	params Params

	internalKey *btcec.PublicKey
	outputKey   *btcec.PublicKey
	pkScript    []byte
	rootHash    []byte

	claimLeaf  txscript.TapLeaf
	refundLeaf txscript.TapLeaf
	claimCB    []byte
	refundCB   []byte

	// musigKeys are the two signers of the key path; MuSig2 calls sort
	// them (BIP327 KeySort), so their order here does not matter.
	musigKeys []*btcec.PublicKey

	// device is the device key lifted once for VerifyClaim.
	device xOnlyKey
}

// NewOutput derives the channel output for p. It returns an error wrapping
// ErrInvalidParams when p does not validate.
func NewOutput(p Params) (*Output, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}

	// Key path: the untweaked MuSig2 aggregate of both keys, sorted so
	// that neither side has to agree on an order.
	keys := []*btcec.PublicKey{p.DeviceKey, p.HubKey}
	agg, _, _, err := musig2.AggregateKeys(keys, true)
	if err != nil {
		return nil, fmt.Errorf("channel: aggregate keys: %w", err)
	}

	claimScript, err := ClaimScript(p.HubKey, p.DeviceKey)
	if err != nil {
		return nil, err
	}
	refundScript, err := RefundScript(p.DeviceKey, p.Expiry)
	if err != nil {
		return nil, err
	}
	claimLeaf := txscript.NewBaseTapLeaf(claimScript)
	refundLeaf := txscript.NewBaseTapLeaf(refundScript)
	tree := txscript.AssembleTaprootScriptTree(claimLeaf, refundLeaf)
	root := tree.RootNode.TapHash()

	outputKey := txscript.ComputeTaprootOutputKey(agg.PreTweakedKey, root[:])
	pkScript, err := txscript.PayToTaprootScript(outputKey)
	if err != nil {
		return nil, fmt.Errorf("channel: pk script: %w", err)
	}

	controlBlock := func(leaf txscript.TapLeaf) ([]byte, error) {
		proof := tree.LeafMerkleProofs[tree.LeafProofIndex[leaf.TapHash()]]
		cb := proof.ToControlBlock(agg.PreTweakedKey)
		return cb.ToBytes()
	}
	claimCB, err := controlBlock(claimLeaf)
	if err != nil {
		return nil, fmt.Errorf("channel: claim control block: %w", err)
	}
	refundCB, err := controlBlock(refundLeaf)
	if err != nil {
		return nil, fmt.Errorf("channel: refund control block: %w", err)
	}

	return &Output{
		params:      p,
		internalKey: agg.PreTweakedKey,
		outputKey:   outputKey,
		pkScript:    pkScript,
		rootHash:    root[:],
		claimLeaf:   claimLeaf,
		refundLeaf:  refundLeaf,
		claimCB:     claimCB,
		refundCB:    refundCB,
		musigKeys:   keys,
		device:      liftKey(p.DeviceKey),
	}, nil
}

// ClaimScript returns the claim leaf script:
//
//	<hub x-only key> OP_CHECKSIGVERIFY <device x-only key> OP_CHECKSIG
//
// Its witness is therefore <device sig> <hub sig>, hub's on top.
func ClaimScript(hub, device *btcec.PublicKey) ([]byte, error) {
	s, err := txscript.NewScriptBuilder().
		AddData(schnorr.SerializePubKey(hub)).
		AddOp(txscript.OP_CHECKSIGVERIFY).
		AddData(schnorr.SerializePubKey(device)).
		AddOp(txscript.OP_CHECKSIG).
		Script()
	if err != nil {
		return nil, fmt.Errorf("channel: claim script: %w", err)
	}
	return s, nil
}

// RefundScript returns the refund leaf script:
//
//	<expiry> OP_CHECKLOCKTIMEVERIFY OP_DROP <device x-only key> OP_CHECKSIG
//
// with expiry as a minimal script number.
func RefundScript(device *btcec.PublicKey, expiry uint32) ([]byte, error) {
	s, err := txscript.NewScriptBuilder().
		AddInt64(int64(expiry)).
		AddOp(txscript.OP_CHECKLOCKTIMEVERIFY).
		AddOp(txscript.OP_DROP).
		AddData(schnorr.SerializePubKey(device)).
		AddOp(txscript.OP_CHECKSIG).
		Script()
	if err != nil {
		return nil, fmt.Errorf("channel: refund script: %w", err)
	}
	return s, nil
}

// Params returns the parameters o was derived from.
func (o *Output) Params() Params { return o.params }

// InternalKey returns the taproot internal key: the untweaked MuSig2
// aggregate of the device and hub keys.
func (o *Output) InternalKey() *btcec.PublicKey { return o.internalKey }

// OutputKey returns the tweaked taproot output key committed to by PkScript.
func (o *Output) OutputKey() *btcec.PublicKey { return o.outputKey }

// ScriptRoot returns the tap tree's merkle root, the taproot tweak input.
func (o *Output) ScriptRoot() []byte { return clone(o.rootHash) }

// PkScript returns the output script: OP_1 <32-byte output key>.
func (o *Output) PkScript() []byte { return clone(o.pkScript) }

// Address returns the channel's bech32m address on net; any wallet can fund
// the channel by paying Capacity to it.
func (o *Output) Address(net *chaincfg.Params) (*btcutil.AddressTaproot, error) {
	addr, err := btcutil.NewAddressTaproot(schnorr.SerializePubKey(o.outputKey), net)
	if err != nil {
		return nil, fmt.Errorf("channel: address: %w", err)
	}
	return addr, nil
}

// TxOut returns the funding output: Capacity paid to PkScript.
func (o *Output) TxOut() *wire.TxOut {
	return wire.NewTxOut(int64(o.params.Capacity), clone(o.pkScript))
}

// ClaimLeaf returns the claim tap leaf.
func (o *Output) ClaimLeaf() txscript.TapLeaf { return o.claimLeaf }

// RefundLeaf returns the refund tap leaf.
func (o *Output) RefundLeaf() txscript.TapLeaf { return o.refundLeaf }

// ClaimControlBlock returns the serialized control block that proves the
// claim leaf is in the output's tap tree.
func (o *Output) ClaimControlBlock() []byte { return clone(o.claimCB) }

// RefundControlBlock returns the serialized control block that proves the
// refund leaf is in the output's tap tree.
func (o *Output) RefundControlBlock() []byte { return clone(o.refundCB) }

// Next returns the device's next channel output after a claim of paid: the
// same keys and expiry, hence the same scripts and PkScript, with capacity
// Capacity − floor(paid/1000) sat. Keeping the expiry means a claim never
// locks the device's change longer than the device first agreed to;
// extending a channel takes a cooperative (key path) spend. It returns an
// error wrapping ErrOverCapacity when paid exceeds MaxPaid.
func (o *Output) Next(paid msat.Amount) (*Output, error) {
	if paid > o.params.MaxPaid() {
		return nil, fmt.Errorf("%w: paid %d msat, max %d msat",
			ErrOverCapacity, uint64(paid), uint64(o.params.MaxPaid()))
	}
	next := *o
	next.params.Capacity = o.params.Capacity - paid.ToSatoshis()
	return &next, nil
}

// participant reports whether key is the channel's device or hub key.
func (o *Output) participant(key *btcec.PublicKey) bool {
	return key.IsEqual(o.params.DeviceKey) || key.IsEqual(o.params.HubKey)
}

// clone copies b so callers cannot mutate an Output's cached bytes.
func clone(b []byte) []byte { return append([]byte(nil), b...) }
