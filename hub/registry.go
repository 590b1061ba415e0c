// Package hub is the m2mhub service: the registry of devices and providers,
// the hash-chained audit log, the BOLT 8 session server and the wiring of the
// payment flow. Persistence sits behind the small interfaces declared here;
// the implementations live in sub-packages (boltstore, redisstore).
package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
)

// Registry errors. Callers test them with errors.Is.
var (
	ErrNotFound       = errors.New("hub: not found")
	ErrAlreadyExists  = errors.New("hub: already exists")
	ErrRevoked        = errors.New("hub: device revoked")
	ErrRotatedOut     = errors.New("hub: key rotated out")
	ErrUnknownKey     = errors.New("hub: unknown key")
	ErrBadSignature   = errors.New("hub: bad signature")
	ErrInvalid        = errors.New("hub: invalid request")
	ErrAuditConflict  = errors.New("hub: audit log head moved")
	ErrTokenExpired   = errors.New("hub: enrolment token expired")
	ErrTokenUsed      = errors.New("hub: enrolment token already used")
	ErrTokenKeyDiffer = errors.New("hub: enrolment token names another key")
)

// PubKey is a compressed secp256k1 public key.
type PubKey [33]byte

// ParsePubKey decodes a 66-character hex compressed public key and checks that
// it is a point on the curve.
func ParsePubKey(s string) (PubKey, error) {
	var k PubKey
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%w: public key must be 33 bytes of hex", ErrInvalid)
	}
	if _, err := btcec.ParsePubKey(b); err != nil {
		return k, fmt.Errorf("%w: public key: %v", ErrInvalid, err)
	}
	copy(k[:], b)
	return k, nil
}

// PubKeyOf returns the compressed form of pub.
func PubKeyOf(pub *btcec.PublicKey) PubKey {
	var k PubKey
	copy(k[:], pub.SerializeCompressed())
	return k
}

// String returns the key in hex.
func (k PubKey) String() string { return hex.EncodeToString(k[:]) }

// MarshalText encodes the key as hex, so JSON carries it as a string.
func (k PubKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a hex key.
func (k *PubKey) UnmarshalText(b []byte) error {
	p, err := ParsePubKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// Role is what a registered party may do. A device may hold several roles.
type Role string

// Roles known to the hub.
const (
	RolePayer    Role = "payer"
	RoleProvider Role = "provider"
)

// ParseRole checks s names a known role.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RolePayer, RoleProvider:
		return r, nil
	}
	return "", fmt.Errorf("%w: unknown role %q (want payer or provider)", ErrInvalid, s)
}

// Status is a device's standing in the registry.
type Status string

// Statuses. A revoked device never comes back; a frozen one may be thawed by
// an operator (used by security rules in later layers).
const (
	StatusActive  Status = "active"
	StatusFrozen  Status = "frozen"
	StatusRevoked Status = "revoked"
)

// Device is a registered party: a payer device, a service provider, or both.
type Device struct {
	ID     string `json:"id"`
	Key    PubKey `json:"pubkey"`
	Roles  []Role `json:"roles"`
	Owner  string `json:"owner,omitempty"`
	Kind   string `json:"kind,omitempty"`
	Status Status `json:"status"`
	// RetiredKeys are keys this device rotated away from, oldest first. They
	// stay indexed so a connection with one gets a precise refusal.
	RetiredKeys []PubKey  `json:"retired_keys,omitempty"`
	EnrolledAt  time.Time `json:"enrolled_at"`
	UpdatedAt   time.Time `json:"updated_at"`

	// Payout is the pkScript the settlement pays this party's earnings
	// to when they are not settled into a channel of its own (see
	// Registry.SetPayout); empty carries them.
	Payout []byte `json:"payout_script,omitempty"`
}

// HasRole reports whether d holds role r.
func (d Device) HasRole(r Role) bool {
	for _, have := range d.Roles {
		if have == r {
			return true
		}
	}
	return false
}

// DeviceID derives the stable identifier of a device from the key it was
// enrolled with. It does not change when the key rotates.
func DeviceID(enrolKey PubKey) string {
	sum := sha256.Sum256(enrolKey[:])
	return "dev-" + hex.EncodeToString(sum[:8])
}

// Authorize checks that key may open a session: it must be the current key of
// an active or frozen device. A frozen device may connect (it can still be
// settled and refunded) but later layers refuse it new payments.
func (d Device) Authorize(key PubKey) error {
	if d.Key != key {
		return ErrRotatedOut
	}
	if d.Status == StatusRevoked {
		return ErrRevoked
	}
	return nil
}
