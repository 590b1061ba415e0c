package hub

import (
	"context"
	"fmt"
)

// Change is one atomic write to the store: the devices to put (insert or
// replace, keyed by ID) together with the audit entry that records why.
// Either all of it becomes durable or none of it does.
type Change struct {
	Devices []Device
	Audit   AuditEntry
	// SpendToken, if set, names an enrolment token id that must not have
	// been spent before; the change marks it spent.
	SpendToken string
	// Remove names device ids whose records, and every key index entry
	// naming them, are deleted (an unreadable record the operator
	// removes; see registry.Registry.RemoveUnreadable).
	Remove []string
}

// Validate refuses a change no store should write: an audit entry whose
// hash does not cover its contents would break the chain for every later
// verifier, and a removal must name its device. Errors wrap ErrInvalid.
func (ch Change) Validate() error {
	if ch.Audit.ComputeHash() != ch.Audit.Hash {
		return fmt.Errorf("%w: audit entry %d does not match its hash", ErrInvalid, ch.Audit.Seq)
	}
	for _, id := range ch.Remove {
		if id == "" {
			return fmt.Errorf("%w: removal without id", ErrInvalid)
		}
	}
	return nil
}

// Store persists the registry and the audit log. Implementations must make a
// successful Apply durable (fsynced) before returning, and must index every
// device under its current key and each of its retired keys.
type Store interface {
	// Apply writes ch atomically. It returns ErrAuditConflict when
	// ch.Audit.Seq is not the head's Seq+1 or ch.Audit.Prev is not the
	// head's hash (another writer appended first; rebuild and retry),
	// ErrTokenUsed when ch.SpendToken was spent before, and
	// ErrAlreadyExists when a device's key is already indexed to another
	// device id.
	Apply(ctx context.Context, ch Change) error

	// Device returns the device with the given id, or ErrNotFound.
	Device(ctx context.Context, id string) (Device, error)

	// DeviceByKey returns the device whose current or retired key is key,
	// or ErrNotFound.
	DeviceByKey(ctx context.Context, key PubKey) (Device, error)

	// Device and DeviceByKey return an error wrapping ErrUnreadable for
	// a stored record that does not decode (record.DecodeDevice in hub/internal/record); Apply never
	// writes one (it encodes with record.EncodeDevice, which refuses with
	// ErrInvalid a device that would not read back).

	// Devices returns every readable device, ordered by id. A record
	// that does not decode is left out and logged, so one bad record
	// never hides the others; UnreadableDevices names it.
	Devices(ctx context.Context) ([]Device, error)

	// UnreadableDevices returns the device records that do not decode,
	// ordered by id.
	UnreadableDevices(ctx context.Context) ([]UnreadableRecord, error)

	// AuditHead returns the newest audit entry, or the zero entry when the
	// log is empty.
	AuditHead(ctx context.Context) (AuditEntry, error)

	// AuditRange returns up to limit entries with Seq >= from, in order.
	AuditRange(ctx context.Context, from uint64, limit int) ([]AuditEntry, error)

	// Close releases the store's resources.
	Close() error
}
