package hub

import (
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
)

// ErrUnreadable marks a stored record that does not decode into a valid
// value (written by an older hub that let it through, or damaged). Reads
// of it return this error; listings leave it out and name it separately;
// an operator removes it (Registry.RemoveUnreadable).
var ErrUnreadable = errors.New("hub: stored record unreadable")

// Limits of a device record, checked at the admin edge and again by the
// stores before they write one.
const (
	MaxOwnerLen  = 200
	MaxKindLen   = 100
	MaxIDLen     = 64
	maxPayoutLen = 10_000 // consensus bound of a script
)

// Validate reports whether k is a point on the curve; the zero key is not.
func (k PubKey) Validate() error {
	if k == (PubKey{}) {
		return fmt.Errorf("%w: public key is required", ErrInvalid)
	}
	if _, err := btcec.ParsePubKey(k[:]); err != nil {
		return fmt.Errorf("%w: public key: %v", ErrInvalid, err)
	}
	return nil
}

// Validate reports whether d is a record the stores may hold: an id, valid
// keys, known roles and status, bounded text. It returns an error wrapping
// ErrInvalid.
func (d Device) Validate() error {
	if d.ID == "" || len(d.ID) > MaxIDLen {
		return fmt.Errorf("%w: device id must be 1 to %d bytes", ErrInvalid, MaxIDLen)
	}
	if err := d.Key.Validate(); err != nil {
		return fmt.Errorf("device %s: %w", d.ID, err)
	}
	for _, k := range d.RetiredKeys {
		if err := k.Validate(); err != nil {
			return fmt.Errorf("device %s: retired key: %w", d.ID, err)
		}
	}
	if len(d.Roles) == 0 {
		return fmt.Errorf("%w: device %s: at least one role is required", ErrInvalid, d.ID)
	}
	for _, role := range d.Roles {
		if _, err := ParseRole(string(role)); err != nil {
			return fmt.Errorf("device %s: %w", d.ID, err)
		}
	}
	switch d.Status {
	case StatusActive, StatusFrozen, StatusRevoked:
	default:
		return fmt.Errorf("%w: device %s: unknown status %q", ErrInvalid, d.ID, d.Status)
	}
	if len(d.Owner) > MaxOwnerLen || len(d.Kind) > MaxKindLen {
		return fmt.Errorf("%w: device %s: owner (%d bytes at most) or kind (%d) too long", ErrInvalid, d.ID, MaxOwnerLen, MaxKindLen)
	}
	if len(d.Payout) > maxPayoutLen {
		return fmt.Errorf("%w: device %s: payout script too long", ErrInvalid, d.ID)
	}
	return nil
}

// UnreadableRecord names a stored record that does not decode, and why.
type UnreadableRecord struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}
