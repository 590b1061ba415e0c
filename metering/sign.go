package metering

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
)

// Digest returns the 32 bytes a provider signs for e:
// SHA256(SHA256(SigTag) || SHA256(SigTag) || JCS(e without m2mhubsig)),
// the BIP-340 tagged hash.
func Digest(e *Event) [32]byte {
	tag := sha256.Sum256([]byte(SigTag))
	h := sha256.New()
	h.Write(tag[:])
	h.Write(tag[:])
	h.Write(e.Canonical())
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Sign sets e.Sig to key's BIP-340 signature over Digest(e). The nonce is
// derived deterministically, so the same key and event always give the same
// signature.
func Sign(e *Event, key *btcec.PrivateKey) error {
	d := Digest(e)
	sig, err := schnorr.Sign(key, d[:])
	if err != nil {
		return fmt.Errorf("metering: sign: %w", err)
	}
	e.Sig = hex.EncodeToString(sig.Serialize())
	return nil
}

// Verify checks e.Sig against the provider key pub (its x coordinate, as
// BIP-340 does). It returns an error wrapping ErrBadSignature.
func Verify(e *Event, pub *btcec.PublicKey) error {
	raw, err := hex.DecodeString(e.Sig)
	if err != nil || len(raw) != schnorr.SignatureSize {
		return fmt.Errorf("%w: m2mhubsig must be 64 bytes of hex", ErrBadSignature)
	}
	sig, err := schnorr.ParseSignature(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	d := Digest(e)
	if !sig.Verify(d[:], pub) {
		return fmt.Errorf("%w: does not verify under the provider's key", ErrBadSignature)
	}
	return nil
}

// MsgID returns the Nats-Msg-Id a provider sets on a message carrying evs:
// the event id for one event, else the hex SHA-256 of the concatenated ids.
// A retry of the same batch carries the same id, so JetStream's duplicate
// window drops it.
func MsgID(evs []Event) string {
	if len(evs) == 1 {
		return evs[0].ID
	}
	h := sha256.New()
	for i := range evs {
		h.Write([]byte(evs[i].ID))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// BatchSigTag is the BIP-340 tag of a batch signature's digest.
const BatchSigTag = "m2mhub/usage-batch/v1"

// HeaderBatchSig is the NATS header carrying a batch signature: 128 hex
// characters, BIP-340 by the provider key over BatchDigest of the message's
// events in message order.
const HeaderBatchSig = "M2M-Batch-Sig"

// BatchDigest returns the 32 bytes a provider signs for a whole batch:
// taggedHash(BatchSigTag, Digest(evs[0]) || Digest(evs[1]) || …), the
// events in the order they travel. One signature then covers every event:
// each per-event digest commits to its event's canonical form, so no event
// can be changed, dropped, added or moved without breaking it.
func BatchDigest(evs []Event) [32]byte {
	tag := sha256.Sum256([]byte(BatchSigTag))
	h := sha256.New()
	h.Write(tag[:])
	h.Write(tag[:])
	for i := range evs {
		d := Digest(&evs[i])
		h.Write(d[:])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// SignBatch returns key's BIP-340 batch signature over evs in hex, the
// value of the HeaderBatchSig header. The events' own m2mhubsig fields are
// not part of the digest, so they may be left empty.
func SignBatch(evs []Event, key *btcec.PrivateKey) (string, error) {
	d := BatchDigest(evs)
	sig, err := schnorr.Sign(key, d[:])
	if err != nil {
		return "", fmt.Errorf("metering: sign batch: %w", err)
	}
	return hex.EncodeToString(sig.Serialize()), nil
}

// VerifyBatch checks a batch signature (hex, as in HeaderBatchSig) over evs
// against the provider key pub. It returns an error wrapping
// ErrBadSignature. When it returns nil, every event of evs is
// authenticated and its m2mhubsig, if any, need not be checked.
func VerifyBatch(evs []Event, sigHex string, pub *btcec.PublicKey) error {
	raw, err := hex.DecodeString(sigHex)
	if err != nil || len(raw) != schnorr.SignatureSize {
		return fmt.Errorf("%w: %s must be 64 bytes of hex", ErrBadSignature, HeaderBatchSig)
	}
	sig, err := schnorr.ParseSignature(raw)
	if err != nil {
		return fmt.Errorf("%w: batch: %v", ErrBadSignature, err)
	}
	d := BatchDigest(evs)
	if !sig.Verify(d[:], pub) {
		return fmt.Errorf("%w: batch signature does not verify under the provider's key", ErrBadSignature)
	}
	return nil
}
