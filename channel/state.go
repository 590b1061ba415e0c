package channel

import (
	"encoding/binary"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// State is one cumulative payment state of a channel: after Seq updates the
// device has paid Paid in total. Only the latest state matters; the device's
// claim signature for it lets the hub take floor(Paid/1000) sat on chain.
type State struct {
	// ChannelID is the funding outpoint of the channel output the state
	// spends.
	ChannelID wire.OutPoint

	// Seq counts updates: the channel opens at 0 and every accepted update
	// adds exactly 1.
	Seq uint64

	// Paid is the cumulative amount paid to the hub.
	Paid msat.Amount
}

// Initial returns the state of a freshly funded channel: nothing paid yet.
func Initial(id wire.OutPoint) State {
	return State{ChannelID: id}
}

// PaidSat is what the device's claim signature for s moves to the hub on
// chain: Paid rounded down to whole satoshis. Rounding down means the hub,
// never the device, carries the sub-satoshi remainder.
func (s State) PaidSat() btcutil.Amount {
	return s.Paid.ToSatoshis()
}

// Credit is the part of Paid that no signature backs yet: Paid − 1000 ×
// PaidSat, always below 1000 msat. It is the most service the hub can have
// given on credit in this channel, because the hub only acknowledges a state
// together with a valid claim signature for it.
func (s State) Credit() msat.Amount {
	return s.Paid - msat.FromSatoshis(s.PaidSat())
}

// CheckUpdate decides whether next may replace cur as the channel's latest
// state. It is the whole of invariant I4: next must name the same channel,
// carry sequence number cur.Seq+1, pay no less than cur, and pay at most
// MaxPaid. It returns an error wrapping ErrWrongChannel, ErrStaleState (a
// replayed, reordered or old update: next.Seq <= cur.Seq), ErrSeqGap,
// ErrPaidDecreased or ErrOverCapacity; the first rule broken wins, in that
// order.
//
// Requiring exactly +1, rather than any larger number, means a lost update
// is noticed at once instead of silently skipped, and it gives the device
// and hub one unambiguous number to resynchronise on after a reconnect.
func (p Params) CheckUpdate(cur, next State) error {
	switch {
	case next.ChannelID != cur.ChannelID:
		return fmt.Errorf("%w: state for %v, channel is %v",
			ErrWrongChannel, next.ChannelID, cur.ChannelID)
	case next.Seq <= cur.Seq:
		return fmt.Errorf("%w: seq %d, current %d", ErrStaleState, next.Seq, cur.Seq)
	case next.Seq != cur.Seq+1:
		return fmt.Errorf("%w: seq %d, want %d", ErrSeqGap, next.Seq, cur.Seq+1)
	case next.Paid < cur.Paid:
		return fmt.Errorf("%w: paid %d msat, current %d msat",
			ErrPaidDecreased, uint64(next.Paid), uint64(cur.Paid))
	case next.Paid > p.MaxPaid():
		return fmt.Errorf("%w: paid %d msat, max %d msat",
			ErrOverCapacity, uint64(next.Paid), uint64(p.MaxPaid()))
	}
	return nil
}

// StateSize is the length of a State's binary encoding.
const StateSize = chainhash.HashSize + 4 + 8 + 8

// AppendBinary appends the StateSize-byte encoding of s to b: the funding
// txid in its internal byte order, then the output index, Seq and Paid as
// big-endian integers.
func (s State) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, s.ChannelID.Hash[:]...)
	b = binary.BigEndian.AppendUint32(b, s.ChannelID.Index)
	b = binary.BigEndian.AppendUint64(b, s.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Paid))
	return b, nil
}

// MarshalBinary returns the encoding described at AppendBinary.
func (s State) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, StateSize))
}

// UnmarshalBinary decodes a state written by MarshalBinary. It returns an
// error wrapping ErrBadEncoding unless b is exactly StateSize bytes.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) != StateSize {
		return fmt.Errorf("%w: state is %d bytes, want %d", ErrBadEncoding, len(b), StateSize)
	}
	copy(s.ChannelID.Hash[:], b[:chainhash.HashSize])
	b = b[chainhash.HashSize:]
	s.ChannelID.Index = binary.BigEndian.Uint32(b)
	s.Seq = binary.BigEndian.Uint64(b[4:])
	s.Paid = msat.Amount(binary.BigEndian.Uint64(b[12:]))
	return nil
}

// Claim is a state together with the device's claim signature for it: what
// the hub must hold durably before acknowledging a payment (invariant I2).
type Claim struct {
	State

	// DeviceSig is the device's 64-byte BIP340 signature over the claim
	// sighash of State (see Output.ClaimSigHash), without the sighash
	// type byte, which is always ClaimHashType.
	DeviceSig [64]byte
}

// NewClaim pairs s with the device's claim signature for it.
func NewClaim(s State, deviceSig *schnorr.Signature) Claim {
	c := Claim{State: s}
	copy(c.DeviceSig[:], deviceSig.Serialize())
	return c
}

// Signature parses DeviceSig. It returns an error wrapping ErrBadSignature
// when the bytes are not a well-formed BIP340 signature.
func (c Claim) Signature() (*schnorr.Signature, error) {
	sig, err := schnorr.ParseSignature(c.DeviceSig[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return sig, nil
}

// ClaimSize is the length of a Claim's binary encoding.
const ClaimSize = StateSize + 64

// AppendBinary appends the ClaimSize-byte encoding of c to b: the state's
// encoding followed by the signature.
func (c Claim) AppendBinary(b []byte) ([]byte, error) {
	b, err := c.State.AppendBinary(b)
	if err != nil {
		return nil, err
	}
	return append(b, c.DeviceSig[:]...), nil
}

// MarshalBinary returns the encoding described at AppendBinary.
func (c Claim) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(make([]byte, 0, ClaimSize))
}

// UnmarshalBinary decodes a claim written by MarshalBinary. It returns an
// error wrapping ErrBadEncoding unless b is exactly ClaimSize bytes. It does
// not check the signature; Output.VerifyClaim does.
func (c *Claim) UnmarshalBinary(b []byte) error {
	if len(b) != ClaimSize {
		return fmt.Errorf("%w: claim is %d bytes, want %d", ErrBadEncoding, len(b), ClaimSize)
	}
	if err := c.State.UnmarshalBinary(b[:StateSize]); err != nil {
		return err
	}
	copy(c.DeviceSig[:], b[StateSize:])
	return nil
}
