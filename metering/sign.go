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

// MsgID returns the Nats-Msg-Id of a usage message that provider
// publishes with body and the M2M-Batch-Sig header value batchSig (empty
// when the message has none):
//
//	<provider>/hex(SHA256(batchSig || 0x0A || body))
//
// JetStream de-duplicates on this header across the whole usage stream,
// so the id is scoped to its provider and commits to the exact bytes
// published, signatures included. A retry of the same message carries the
// same id, so the stream's duplicate window drops it; nobody without the
// provider's key can compute the id of a message before the provider
// publishes it (it covers the provider's signatures), so no other
// provider can occupy it and have the provider's message answered as a
// duplicate. The intake refuses a message whose header is not this value.
// A newline cannot occur in a header value, so the input is unambiguous.
func MsgID(provider string, body []byte, batchSig string) string {
	h := sha256.New()
	h.Write([]byte(batchSig))
	h.Write([]byte{'\n'})
	h.Write(body)
	return provider + "/" + hex.EncodeToString(h.Sum(nil))
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
