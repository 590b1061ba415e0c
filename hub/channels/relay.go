package channels

import (
	"context"
	"errors"
	"fmt"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Relay reaches devices whose session lives on another instance of a hub
// run as several hubd on one store (docs/scaling.md). hub/natsroute
// implements it over NATS; a single hubd has none. The manager uses it
// only for a device with no session here.
type Relay interface {
	// Notify delivers msg, best effort, to deviceID's session on
	// whichever other instance holds it. It must not block: the manager
	// calls it with a channel's lock held. It reports whether the notice
	// was handed on (not whether a session got it).
	Notify(ctx context.Context, deviceID string, msg wire.Message) bool
	// Forward hands a provider's hold message (*wire.HoldRequest,
	// *wire.Capture or *wire.Release) to the instance holding payer's
	// session, whose manager runs it with Forwarded, and returns that
	// manager's answer: nil, its refusal (a *wire.ChannelError), an error
	// wrapping ErrDeviceOffline when no instance holds the session, or a
	// transport error.
	Forward(ctx context.Context, payer, provider string, msg wire.Message) error
}

// Forwarded runs a provider's hold message that another instance
// forwarded here because the payer's session is here (Relay.Forward). It
// is handled as if provider had sent it on a session of its own here,
// and never forwarded again: a payer that left meanwhile is treated as
// offline. It returns the refusal, a *wire.ChannelError, or another error.
func (c *Manager) Forwarded(ctx context.Context, provider string, msg wire.Message) error {
	switch m := msg.(type) {
	case *wire.HoldRequest:
		c.holdRequest(ctx, provider, m, false)
		return nil
	case *wire.Capture:
		if err := c.resyncHold(ctx, m.HoldID); err != nil {
			return err
		}
		return c.capture(ctx, provider, m, false)
	case *wire.Release:
		if err := c.resyncHold(ctx, m.HoldID); err != nil {
			return err
		}
		return c.release(ctx, provider, m, false)
	}
	return refuse(wire.ChanMalformed, "message type %d is not forwarded", uint16(msg.MsgType()))
}

// online reports whether deviceID has a session on this instance.
func (c *Manager) online(deviceID string) bool {
	_, ok := c.cfg.Sessions.Session(deviceID)
	return ok
}

// forward hands a provider's message to the instance holding payer's
// session when that is another one. It reports whether it did, and the
// answer; false means the message is served here (no relay, the payer is
// here, or no instance holds it).
func (c *Manager) forward(ctx context.Context, payer, provider string, m wire.Message) (bool, error) {
	if c.cfg.Relay == nil || c.online(payer) {
		return false, nil
	}
	err := c.cfg.Relay.Forward(ctx, payer, provider, m)
	if errors.Is(err, ErrDeviceOffline) {
		return false, nil
	}
	var ce *wire.ChannelError
	if err != nil && !errors.As(err, &ce) {
		return true, fmt.Errorf("forward to the payer's instance: %w", err)
	}
	return true, err
}

// forwardHold is forward for a message about the active hold id, whose
// payer the hold names. A hold unknown here is served here (and refused).
func (c *Manager) forwardHold(ctx context.Context, id [16]byte, provider string, m wire.Message) (bool, error) {
	if c.cfg.Relay == nil {
		return false, nil
	}
	e, h, err := c.activeHold(ctx, id)
	if err != nil {
		return false, nil
	}
	payer := h.DeviceID
	e.unlock()
	return c.forward(ctx, payer, provider, m)
}

// resyncHold reloads the channel of hold id from the store before a
// forwarded message about it runs here: the instance that forwarded it
// may have recorded charges or captures against it. An unknown hold is
// left to the handler to refuse.
func (c *Manager) resyncHold(ctx context.Context, id [16]byte) error {
	h, err := c.store.Hold(ctx, id)
	if errors.Is(err, hub.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.Resync(ctx, h.Channel)
}
