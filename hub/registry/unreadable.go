package registry

import (
	"context"
	"errors"
	"fmt"
	"github.com/m2mhub/m2mhub/hub"
)

// UnreadableDevices lists the device records the store holds but cannot
// read; Devices leaves them out.
func (r *Registry) UnreadableDevices(ctx context.Context) ([]hub.UnreadableRecord, error) {
	return r.store.UnreadableDevices(ctx)
}

// RemoveUnreadable deletes device id's record and every key index entry
// that names it, with an audit entry (kind AuditAdmin, detail action
// "device-removed") in the same write. It refuses a device that reads
// back (error wrapping ErrInvalid: revoke it instead; its channels and
// books stay whole) and returns an error wrapping ErrNotFound for an
// unknown id. It is the operator's way out of a record an older hub let
// through.
func (r *Registry) RemoveUnreadable(ctx context.Context, id, actor, reason string) error {
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		_, err := r.store.Device(ctx, id)
		switch {
		case err == nil:
			return hub.Change{}, fmt.Errorf("%w: device %s is readable: revoke it instead", hub.ErrInvalid, id)
		case !errors.Is(err, hub.ErrUnreadable):
			return hub.Change{}, err
		}
		e, err := hub.NextAuditEntry(head, r.clock.Now().UTC(), hub.AuditAdmin, id, actor, map[string]string{
			"action": "device-removed", "reason": reason, "error": err.Error(),
		})
		return hub.Change{Remove: []string{id}, Audit: e}, err
	})
	if err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	r.log.Warn("unreadable device record removed", "id", id, "actor", actor, "reason", reason)
	return nil
}
