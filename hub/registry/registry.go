package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/authmsg"
)

// SessionDropper closes a device's live session. session.Directory
// implements it; the registry calls it when a device is revoked or rotated so
// the change takes effect at once.
type SessionDropper interface {
	Drop(deviceID, code, reason string)
}

// ChannelFreezer stops new payments on a device's channels. The channel
// manager implements it; the registry calls it when a device is revoked, so
// the revoked device's channels are settled next period and pay no more.
type ChannelFreezer interface {
	Freeze(ctx context.Context, deviceID string) error
}

// Config configures a Registry.
type Config struct {
	Store hub.Store
	// OperatorKey verifies enrolment tokens. Without it, token enrolment is
	// refused.
	OperatorKey *btcec.PublicKey
	// Sessions closes a device's live session when it is revoked or its
	// key rotated (a session.Directory, or one that also cuts the
	// device's other access). Optional: without it nothing is closed.
	Sessions SessionDropper
	// Channels stops payments on a revoked or frozen device's channels
	// (the channel manager). Optional: without it channels keep running
	// until settled.
	Channels ChannelFreezer
	// Clock gives the time of changes and token expiry; the system
	// clock when nil.
	Clock  clock.Clock
	Logger *slog.Logger
}

// Registry holds the devices and providers known to the hub and writes every
// change to them into the audit log, atomically with the change itself.
type Registry struct {
	store    hub.Store
	operator *btcec.PublicKey
	clock    clock.Clock
	log      *slog.Logger
	dropper  SessionDropper
	freezer  ChannelFreezer
}

// New returns a registry over cfg.Store.
func New(cfg Config) (*Registry, error) {
	if cfg.Store == nil {
		return nil, errors.New("registry: no store")
	}
	r := &Registry{
		store: cfg.Store, operator: cfg.OperatorKey, clock: cfg.Clock, log: cfg.Logger,
		dropper: cfg.Sessions, freezer: cfg.Channels,
	}
	if r.clock == nil {
		r.clock = clock.NewDefaultClock()
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// maxApplyAttempts bounds retries when another writer (another hubd on the
// same Redis) appends to the audit log between our read and our write.
const maxApplyAttempts = 16

// apply builds a change against the current audit head and writes it,
// rebuilding it if the head moved in between.
func (r *Registry) apply(ctx context.Context, build func(head hub.AuditEntry) (hub.Change, error)) error {
	for range maxApplyAttempts {
		head, err := r.store.AuditHead(ctx)
		if err != nil {
			return fmt.Errorf("registry: read audit head: %w", err)
		}
		ch, err := build(head)
		if err != nil {
			return err
		}
		err = r.store.Apply(ctx, ch)
		if errors.Is(err, hub.ErrAuditConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("gave up after %d attempts: %w", maxApplyAttempts, hub.ErrAuditConflict)
}

// EnrolRequest names what an operator registers.
type EnrolRequest struct {
	Key   hub.PubKey
	Roles []hub.Role
	Owner string
	Kind  string
}

func (q EnrolRequest) validate() error {
	if err := q.Key.Validate(); err != nil {
		return err
	}
	if len(q.Roles) == 0 {
		return fmt.Errorf("%w: at least one role is required", hub.ErrInvalid)
	}
	for _, role := range q.Roles {
		if _, err := hub.ParseRole(string(role)); err != nil {
			return err
		}
	}
	if len(q.Owner) > hub.MaxOwnerLen || len(q.Kind) > hub.MaxKindLen {
		return fmt.Errorf("%w: owner or kind too long", hub.ErrInvalid)
	}
	return nil
}

// Enrol registers a new device. actor names who asked ("operator",
// "token:<id>"). It returns ErrAlreadyExists if the key is known.
func (r *Registry) Enrol(ctx context.Context, q EnrolRequest, actor string) (hub.Device, error) {
	return r.enrol(ctx, q, actor, "")
}

func (r *Registry) enrol(ctx context.Context, q EnrolRequest, actor, tokenID string) (hub.Device, error) {
	if err := q.validate(); err != nil {
		return hub.Device{}, err
	}
	if _, err := r.store.DeviceByKey(ctx, q.Key); err == nil {
		return hub.Device{}, fmt.Errorf("%w: key %s is registered", hub.ErrAlreadyExists, q.Key)
	} else if !errors.Is(err, hub.ErrNotFound) {
		return hub.Device{}, err
	}
	now := r.clock.Now().UTC()
	d := hub.Device{
		ID: hub.DeviceID(q.Key), Key: q.Key, Roles: q.Roles, Owner: q.Owner, Kind: q.Kind,
		Status: hub.StatusActive, EnrolledAt: now, UpdatedAt: now,
	}
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		e, err := hub.NextAuditEntry(head, now, hub.AuditEnrol, d.ID, actor, map[string]any{
			"pubkey": d.Key, "roles": d.Roles, "owner": d.Owner, "kind": d.Kind,
		})
		return hub.Change{Devices: []hub.Device{d}, Audit: e, SpendToken: tokenID}, err
	})
	if err != nil {
		return hub.Device{}, fmt.Errorf("enrol %s: %w", d.ID, err)
	}
	r.log.Info("device enrolled", "id", d.ID, "roles", d.Roles, "actor", actor)
	return d, nil
}

// Revoke marks a device revoked and drops its live session. Revocation is
// final; revoking a revoked device is a no-op that returns it unchanged.
func (r *Registry) Revoke(ctx context.Context, id, actor, reason string) (hub.Device, error) {
	var out hub.Device
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		d, err := r.store.Device(ctx, id)
		if err != nil {
			return hub.Change{}, err
		}
		if d.Status == hub.StatusRevoked {
			out = d
			return hub.Change{}, errNoChange
		}
		d.Status, d.UpdatedAt = hub.StatusRevoked, r.clock.Now().UTC()
		out = d
		e, err := hub.NextAuditEntry(head, d.UpdatedAt, hub.AuditRevoke, id, actor, map[string]string{"reason": reason})
		return hub.Change{Devices: []hub.Device{d}, Audit: e}, err
	})
	if errors.Is(err, errNoChange) {
		return out, nil
	}
	if err != nil {
		return hub.Device{}, fmt.Errorf("revoke %s: %w", id, err)
	}
	if r.dropper != nil {
		r.dropper.Drop(id, "revoked", "device revoked by operator")
	}
	if r.freezer != nil {
		// The revocation is durable already; a failed freeze is logged
		// and retried by the operator, never undoes it.
		if err := r.freezer.Freeze(ctx, id); err != nil {
			r.log.Error("freeze channels of revoked device", "id", id, "err", err)
		}
	}
	r.log.Info("device revoked", "id", id, "actor", actor)
	return out, nil
}

// errNoChange stops apply without writing when the change is already in place.
var errNoChange = errors.New("registry: no change")

// Rotate moves a device to newKey. sig is the old key's BIP-340 signature
// over authmsg.RotationDigest(id, newKey). The old key is retired: it stays
// indexed so a connection with it is refused as rotated-out.
func (r *Registry) Rotate(ctx context.Context, id string, newKey hub.PubKey, sig []byte, actor string) (hub.Device, error) {
	var out hub.Device
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		d, err := r.store.Device(ctx, id)
		if err != nil {
			return hub.Change{}, err
		}
		if d.Status == hub.StatusRevoked {
			return hub.Change{}, hub.ErrRevoked
		}
		old, err := btcec.ParsePubKey(d.Key[:])
		if err != nil {
			return hub.Change{}, fmt.Errorf("registry: stored key of %s: %w", id, err)
		}
		if err := authmsg.VerifyRotation(old, id, newKey[:], sig); err != nil {
			return hub.Change{}, fmt.Errorf("%w: %v", hub.ErrBadSignature, err)
		}
		if other, err := r.store.DeviceByKey(ctx, newKey); err == nil {
			return hub.Change{}, fmt.Errorf("%w: key already belongs to %s", hub.ErrAlreadyExists, other.ID)
		} else if !errors.Is(err, hub.ErrNotFound) {
			return hub.Change{}, err
		}
		prev := d.Key
		d.RetiredKeys = append(d.RetiredKeys, prev)
		d.Key, d.UpdatedAt = newKey, r.clock.Now().UTC()
		out = d
		e, err := hub.NextAuditEntry(head, d.UpdatedAt, hub.AuditRotate, id, actor, map[string]any{
			"old_pubkey": prev, "new_pubkey": newKey,
		})
		return hub.Change{Devices: []hub.Device{d}, Audit: e}, err
	})
	if err != nil {
		return hub.Device{}, fmt.Errorf("rotate %s: %w", id, err)
	}
	if r.dropper != nil {
		r.dropper.Drop(id, "rotated-out", "device key rotated")
	}
	r.log.Info("device key rotated", "id", id, "actor", actor)
	return out, nil
}

// Authenticate returns the device whose current key is key. It returns an
// error wrapping ErrUnknownKey, ErrRevoked or ErrRotatedOut when the key may
// not hold a session.
func (r *Registry) Authenticate(ctx context.Context, key hub.PubKey) (hub.Device, error) {
	d, err := r.store.DeviceByKey(ctx, key)
	if errors.Is(err, hub.ErrNotFound) {
		return hub.Device{}, fmt.Errorf("%w: %s", hub.ErrUnknownKey, key)
	}
	if err != nil {
		return hub.Device{}, err
	}
	if err := d.Authorize(key); err != nil {
		return hub.Device{}, fmt.Errorf("device %s: %w", d.ID, err)
	}
	return d, nil
}

// EnrolWithToken registers key from an operator-signed enrolment token
// (zero-touch provisioning). A token is single-use, expires, and may be bound
// to one key.
func (r *Registry) EnrolWithToken(ctx context.Context, key hub.PubKey, raw []byte) (hub.Device, error) {
	if r.operator == nil {
		return hub.Device{}, fmt.Errorf("%w: token enrolment is not configured", hub.ErrBadSignature)
	}
	tok, err := authmsg.ParseToken(r.operator, raw)
	if err != nil {
		return hub.Device{}, fmt.Errorf("%w: %v", hub.ErrBadSignature, err)
	}
	if !r.clock.Now().Before(tok.Expires) {
		return hub.Device{}, hub.ErrTokenExpired
	}
	if tok.DeviceKey != "" && tok.DeviceKey != key.String() {
		return hub.Device{}, hub.ErrTokenKeyDiffer
	}
	q := EnrolRequest{Key: key, Owner: tok.Owner, Kind: tok.Kind}
	for _, s := range tok.Roles {
		role, err := hub.ParseRole(s)
		if err != nil {
			return hub.Device{}, err
		}
		q.Roles = append(q.Roles, role)
	}
	return r.enrol(ctx, q, "token:"+tok.ID, tok.ID)
}

// Device returns one device by id.
func (r *Registry) Device(ctx context.Context, id string) (hub.Device, error) {
	return r.store.Device(ctx, id)
}

// Devices lists every device.
func (r *Registry) Devices(ctx context.Context) ([]hub.Device, error) {
	return r.store.Devices(ctx)
}

// RecordAdmin appends an admin change (a setting altered, a credential
// issued) to the audit log.
func (r *Registry) RecordAdmin(ctx context.Context, subject, actor string, detail any) (hub.AuditEntry, error) {
	var out hub.AuditEntry
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		e, err := hub.NextAuditEntry(head, r.clock.Now(), hub.AuditAdmin, subject, actor, detail)
		out = e
		return hub.Change{Audit: e}, err
	})
	return out, err
}

// Audit returns up to limit audit entries from seq from on.
func (r *Registry) Audit(ctx context.Context, from uint64, limit int) ([]hub.AuditEntry, error) {
	return r.store.AuditRange(ctx, from, limit)
}
