package channels

import (
	"context"
	"errors"
	"fmt"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// A metered charge can be paid against a hold: a session's final usage
// event names the hold its provider asked for at the start, the charge is
// recorded on the hold's channel, the payment request names the hold, the
// device's payment captures it, and the rest of the hold is released. The
// charge is covered by the device-signed hold, so it may exceed the
// channel's credit limit by up to what the hold has left.

// Hold returns a copy of the active hold id. It returns an error wrapping
// hub.ErrHoldRefused when there is no active hold id.
func (c *Manager) Hold(ctx context.Context, id [16]byte) (hub.Hold, error) {
	e, h, err := c.activeHold(ctx, id)
	if err != nil {
		return hub.Hold{}, asHoldRefusal(err)
	}
	defer e.unlock()
	return *h, nil
}

// RecordHeldCharge records one owed charge against the active hold id of
// its channel: the payer and the provider must be the hold's, and the
// amount must fit what the hold has left. It raises the channel's Owed as
// RecordCharges does, with the credit limit raised by the hold's remainder.
// A refusal wraps hub.ErrHoldRefused.
func (c *Manager) RecordHeldCharge(ctx context.Context, store hub.ChargeStore, ch hub.Charge, id [16]byte) (hub.ChargeResult, error) {
	e, h, err := c.activeHold(ctx, id)
	if err != nil {
		return hub.ChargeResult{}, asHoldRefusal(err)
	}
	defer e.unlock()
	switch {
	case ch.Status != hub.ChargeOwed:
		return hub.ChargeResult{}, fmt.Errorf("%w: a held charge must be owed, not %s", hub.ErrInvalid, ch.Status)
	case h.Provider != ch.Provider || h.DeviceID != ch.Payer:
		return hub.ChargeResult{}, asHoldRefusal(refuse(wire.ChanHoldUnknown, "hold %x is not between %s and %s", id[:], ch.Payer, ch.Provider))
	case ch.Channel != h.Channel:
		return hub.ChargeResult{}, asHoldRefusal(refuse(wire.ChanHoldUnknown, "hold %x is on channel %v", id[:], h.Channel))
	case ch.Amount > h.Remaining():
		return hub.ChargeResult{}, asHoldRefusal(refuse(wire.ChanHoldExceeded, "charge of %d msat, hold has %d msat left",
			uint64(ch.Amount), uint64(h.Remaining())))
	}
	res, err := store.RecordCharges(ctx, []hub.Charge{ch}, c.cfg.CreditLimit+h.Remaining())
	if err != nil {
		return hub.ChargeResult{}, err
	}
	if len(res) != 1 {
		return hub.ChargeResult{}, fmt.Errorf("channels: charge store returned %d results for 1 charge", len(res))
	}
	if r := res[0]; !r.Duplicate && r.Stored.Status == hub.ChargeOwed {
		e.rec.Owed += r.Stored.Amount
	}
	return res[0], nil
}

// asHoldRefusal turns the manager's refusal of a hold (a wire refusal)
// into an error wrapping the core's hub.ErrHoldRefused, so that callers
// outside the device protocol tell it from a store failure.
func asHoldRefusal(err error) error {
	var ce *wire.ChannelError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: %s", hub.ErrHoldRefused, ce.Message)
	}
	return err
}

// ReleaseHold ends the active hold id, keeping what was captured and
// freeing the rest; the device and the provider are told (HoldClosed). It
// is how charging ends a hold a session's charge was paid against. A hold
// no longer active is a *wire.ChannelError.
func (c *Manager) ReleaseHold(ctx context.Context, id [16]byte) (captured msat.Amount, err error) {
	if c.cfg.Relay != nil {
		// The payer's instance holds the hold's captures in flight:
		// the release runs there when that is another instance.
		if h, err := c.Hold(ctx, id); err == nil {
			if routed, err := c.forward(ctx, h.DeviceID, h.Provider, &wire.Release{HoldID: id}); routed {
				if err != nil {
					return 0, err
				}
				closed, err := c.store.Hold(ctx, id)
				if err != nil {
					return 0, err
				}
				return closed.Captured, nil
			}
		}
	}
	e, h, err := c.activeHold(ctx, id)
	if err != nil {
		return 0, err
	}
	defer e.unlock()
	captured = h.Captured
	return captured, c.closeHoldLocked(ctx, e, h, hub.HoldReleased, wire.HoldReleased)
}
