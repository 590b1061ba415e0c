package channels

import (
	"cmp"
	"context"
	"errors"
	"slices"

	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// channelState returns the latest state the hub holds for the session's
// channel op, with the device's own claim signature over it
// (docs/protocol.md, "Resynchronisation"). A device that restarted from an
// older copy of its store adopts it after checking that signature with its
// own key, so it needs to trust the hub for nothing: the hub can only show
// it what it signed. A refusal is a *wire.ChannelError.
func (c *Manager) channelState(ctx context.Context, s *session.Session, op btcwire.OutPoint) (*wire.ChannelState, error) {
	e, err := c.ownedEntry(ctx, s, op)
	if err != nil {
		return nil, err
	}
	defer e.unlock()
	// Another hubd on the same store may have moved the channel since
	// this one cached it (the device paid there).
	c.refresh(ctx, e)
	m := &wire.ChannelState{ChanID: op, Seq: e.rec.Seq, Paid: e.rec.Paid}
	if e.rec.Seq > 0 {
		sig := e.rec.DeviceSig
		m.Sig = &sig
	}
	for _, h := range e.holds {
		m.Holds = append(m.Holds, wire.HoldState{
			ID: h.ID, Max: h.Max, Captured: h.Captured, Expires: uint64(h.Expires.Unix()),
			Provider: h.Provider, Sig: h.DeviceSig,
		})
	}
	slices.SortFunc(m.Holds, func(a, b wire.HoldState) int { return cmp.Compare(a.Expires, b.Expires) })
	if len(m.Holds) > wire.MaxSyncHolds {
		m.Holds = m.Holds[:wire.MaxSyncHolds]
	}
	return m, nil
}

// sendState sends the session's device the latest state of channel op, as
// the hub does before refusing a Pay that does not follow it. Failures are
// only logged: the refusal that follows is the answer that matters.
func (c *Manager) sendState(ctx context.Context, s *session.Session, op btcwire.OutPoint) {
	m, err := c.channelState(ctx, s, op)
	if err != nil {
		c.log.Debug("no channel state to send", "device", s.DeviceID(), "chan", op, "err", err)
		return
	}
	if err := s.Send(ctx, m); err != nil {
		c.log.Debug("channel state not delivered", "device", s.DeviceID(), "err", err)
	}
}

// staleRefusal reports whether err refuses a Pay because its seq does not
// follow the hub's state, the refusals the hub precedes with ChannelState.
func staleRefusal(err error) bool {
	var ce *wire.ChannelError
	return errors.As(err, &ce) && (ce.Code == wire.ChanStaleState || ce.Code == wire.ChanSeqGap)
}
