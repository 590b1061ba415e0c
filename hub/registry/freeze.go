package registry

import (
	"context"
	"errors"
	"fmt"
	"github.com/m2mhub/m2mhub/hub"
)

// Audit kinds written by the metering and contract layers.
const (
	// AuditContractPublish records a tariff contract published under its
	// hash.
	AuditContractPublish = "contract.publish"
)

// Freeze marks an active device frozen: it may still connect, be settled
// and refunded, but it is charged for nothing new and paid for nothing new.
// Security rules call it (actor "system", reason naming the rule); an
// operator may too. The status change and its audit entry (kind
// AuditFreeze, detail {"reason": reason}) are written atomically; then the
// device's channels are frozen through the ChannelFreezer. Freezing a frozen
// or revoked device is a no-op that returns it unchanged. It returns an
// error wrapping ErrNotFound for an unknown id.
func (r *Registry) Freeze(ctx context.Context, id, actor, reason string) (hub.Device, error) {
	var out hub.Device
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		d, err := r.store.Device(ctx, id)
		if err != nil {
			return hub.Change{}, err
		}
		if d.Status != hub.StatusActive {
			out = d
			return hub.Change{}, errNoChange
		}
		d.Status, d.UpdatedAt = hub.StatusFrozen, r.clock.Now().UTC()
		out = d
		e, err := hub.NextAuditEntry(head, d.UpdatedAt, hub.AuditFreeze, id, actor, map[string]string{"reason": reason})
		return hub.Change{Devices: []hub.Device{d}, Audit: e}, err
	})
	if errors.Is(err, errNoChange) {
		return out, nil
	}
	if err != nil {
		return hub.Device{}, fmt.Errorf("freeze %s: %w", id, err)
	}
	if r.freezer != nil {
		// The freeze is durable already; a failed channel freeze is
		// logged, never undoes it (charging checks the device status
		// itself, so nothing new is charged either way).
		if err := r.freezer.Freeze(ctx, id); err != nil {
			r.log.Error("freeze channels of frozen device", "id", id, "err", err)
		}
	}
	r.log.Warn("device frozen", "id", id, "actor", actor, "reason", reason)
	return out, nil
}

// RecordEvent appends an entry of the given kind (such as
// AuditContractPublish) about subject to the audit log, for changes that
// touch no device record.
func (r *Registry) RecordEvent(ctx context.Context, kind, subject, actor string, detail any) (hub.AuditEntry, error) {
	var out hub.AuditEntry
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		e, err := hub.NextAuditEntry(head, r.clock.Now(), kind, subject, actor, detail)
		out = e
		return hub.Change{Audit: e}, err
	})
	if err != nil {
		return hub.AuditEntry{}, fmt.Errorf("audit %s %s: %w", kind, subject, err)
	}
	return out, nil
}
