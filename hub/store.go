package hub

import "context"

// Change is one atomic write to the store: the devices to put (insert or
// replace, keyed by ID) together with the audit entry that records why.
// Either all of it becomes durable or none of it does.
type Change struct {
	Devices []Device
	Audit   AuditEntry
	// SpendToken, if set, names an enrolment token id that must not have
	// been spent before; the change marks it spent.
	SpendToken string
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

	// Devices returns every device, ordered by id.
	Devices(ctx context.Context) ([]Device, error)

	// AuditHead returns the newest audit entry, or the zero entry when the
	// log is empty.
	AuditHead(ctx context.Context) (AuditEntry, error)

	// AuditRange returns up to limit entries with Seq >= from, in order.
	AuditRange(ctx context.Context, from uint64, limit int) ([]AuditEntry, error)

	// Close releases the store's resources.
	Close() error
}
