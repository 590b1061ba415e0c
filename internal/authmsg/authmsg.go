// Package authmsg defines the signed statements that the hub, hubctl and
// devices exchange outside the session protocol: key rotations (the old key
// signs the new one) and operator-signed enrolment tokens for zero-touch
// provisioning. It holds only encodings and BIP-340 Schnorr signatures, so
// the device library can use it without linking anything of the hub.
package authmsg

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
)

// Errors returned when a statement does not verify.
var (
	ErrBadSignature = errors.New("authmsg: bad signature")
	ErrMalformed    = errors.New("authmsg: malformed statement")
)

// MaxTokenSize bounds an encoded enrolment token; larger input is refused
// before it is parsed.
const MaxTokenSize = 4096

// taggedHash is BIP-340's tagged hash, so a signature made for one kind of
// statement can never be replayed as another.
func taggedHash(tag string, parts ...[]byte) [32]byte {
	t := sha256.Sum256([]byte(tag))
	h := sha256.New()
	h.Write(t[:])
	h.Write(t[:])
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// RotationDigest is what a device's old key signs to hand its identity to
// newKey (33-byte compressed).
func RotationDigest(deviceID string, newKey []byte) [32]byte {
	return taggedHash("m2mhub/rotate/v1", []byte(deviceID), []byte{0}, newKey)
}

// SignRotation signs the rotation of deviceID to newKey with the old key.
func SignRotation(oldKey *btcec.PrivateKey, deviceID string, newKey *btcec.PublicKey) ([]byte, error) {
	d := RotationDigest(deviceID, newKey.SerializeCompressed())
	sig, err := schnorr.Sign(oldKey, d[:])
	if err != nil {
		return nil, fmt.Errorf("authmsg: sign rotation: %w", err)
	}
	return sig.Serialize(), nil
}

// VerifyRotation checks sig by oldKey over the rotation of deviceID to newKey.
func VerifyRotation(oldKey *btcec.PublicKey, deviceID string, newKey []byte, sig []byte) error {
	d := RotationDigest(deviceID, newKey)
	return verify(oldKey, d, sig)
}

func verify(key *btcec.PublicKey, digest [32]byte, sig []byte) error {
	s, err := schnorr.ParseSignature(sig)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if !s.Verify(digest[:], key) {
		return ErrBadSignature
	}
	return nil
}

// Token is an operator-signed enrolment token. A device presents it on its
// first connection and is registered with the roles, owner and kind it names.
// DeviceKey, when set, binds the token to one device key (factory
// provisioning); when empty, any key may use it, once.
type Token struct {
	ID        string    `json:"id"`
	DeviceKey string    `json:"device_key,omitempty"`
	Roles     []string  `json:"roles"`
	Owner     string    `json:"owner,omitempty"`
	Kind      string    `json:"kind,omitempty"`
	Expires   time.Time `json:"expires"`
	Sig       string    `json:"sig,omitempty"`
}

func (t Token) digest() ([32]byte, error) {
	t.Sig = ""
	b, err := json.Marshal(t)
	if err != nil {
		return [32]byte{}, err
	}
	return taggedHash("m2mhub/enrol-token/v1", b), nil
}

// SignToken seals t with the operator key and returns its encoding, the
// bytes a device presents.
func SignToken(operator *btcec.PrivateKey, t Token) ([]byte, error) {
	// Normalise the time so the verifier's re-encoding is byte-identical.
	t.Expires = t.Expires.UTC().Truncate(time.Second)
	d, err := t.digest()
	if err != nil {
		return nil, fmt.Errorf("authmsg: token: %w", err)
	}
	sig, err := schnorr.Sign(operator, d[:])
	if err != nil {
		return nil, fmt.Errorf("authmsg: sign token: %w", err)
	}
	t.Sig = hex.EncodeToString(sig.Serialize())
	return json.Marshal(t)
}

// ParseToken decodes a token and checks the operator's signature on it. It
// does not check expiry or binding: that is the registry's decision.
func ParseToken(operator *btcec.PublicKey, raw []byte) (Token, error) {
	var t Token
	if len(raw) > MaxTokenSize {
		return t, fmt.Errorf("%w: token larger than %d bytes", ErrMalformed, MaxTokenSize)
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return t, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if t.ID == "" {
		return t, fmt.Errorf("%w: token has no id", ErrMalformed)
	}
	sig, err := hex.DecodeString(t.Sig)
	if err != nil {
		return t, fmt.Errorf("%w: signature is not hex", ErrMalformed)
	}
	d, err := t.digest()
	if err != nil {
		return t, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := verify(operator, d, sig); err != nil {
		return t, err
	}
	return t, nil
}
