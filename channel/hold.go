package channel

import (
	"encoding/binary"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// holdTag is the BIP-340 tag of a hold authorisation digest.
const holdTag = "m2mhub/hold/v1"

// HoldDigest is what a device signs to authorise a hold:
// tagged_hash("m2mhub/hold/v1", holdID (16) || funding txid (32, internal
// order) || vout (u32 BE) || len(provider) (u32 BE) || provider || max msat
// (u64 BE) || expires unix s (u64 BE)). Every field has a fixed width or a
// length prefix, so no two distinct holds share an encoding.
//
// The signature is evidence of consent, not an on-chain claim: it moves no
// money, and the hub still needs a signed state for every capture.
func HoldDigest(holdID [16]byte, chanID wire.OutPoint, provider string, max msat.Amount, expires uint64) [32]byte {
	b := make([]byte, 0, 16+chainhash.HashSize+4+4+len(provider)+8+8)
	b = append(b, holdID[:]...)
	b = append(b, chanID.Hash[:]...)
	b = binary.BigEndian.AppendUint32(b, chanID.Index)
	b = binary.BigEndian.AppendUint32(b, uint32(len(provider)))
	b = append(b, provider...)
	b = binary.BigEndian.AppendUint64(b, uint64(max))
	b = binary.BigEndian.AppendUint64(b, expires)
	return *chainhash.TaggedHash([]byte(holdTag), b)
}

// SignHold returns the device's BIP-340 signature over HoldDigest.
func SignHold(devicePriv *btcec.PrivateKey, holdID [16]byte, chanID wire.OutPoint, provider string, max msat.Amount, expires uint64) ([64]byte, error) {
	d := HoldDigest(holdID, chanID, provider, max, expires)
	sig, err := schnorr.Sign(devicePriv, d[:])
	if err != nil {
		return [64]byte{}, err
	}
	return [64]byte(sig.Serialize()), nil
}

// VerifyHold checks a hold signature made by SignHold. It returns an error
// wrapping ErrBadSignature unless sig is the device key's signature over
// exactly these fields.
func VerifyHold(devicePub *btcec.PublicKey, holdID [16]byte, chanID wire.OutPoint, provider string, max msat.Amount, expires uint64, sig [64]byte) error {
	if devicePub == nil {
		return fmt.Errorf("%w: no device key", ErrBadSignature)
	}
	s, err := schnorr.ParseSignature(sig[:])
	if err != nil {
		return fmt.Errorf("%w: hold: %v", ErrBadSignature, err)
	}
	d := HoldDigest(holdID, chanID, provider, max, expires)
	if !s.Verify(d[:], devicePub) {
		return fmt.Errorf("%w: hold %x", ErrBadSignature, holdID)
	}
	return nil
}
