package channels

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// refuse builds the ChannelError the hub answers a refused request with.
// Handlers return it as their error; HandleMessage sends it and keeps the
// session open.
func refuse(code wire.ChanCode, format string, args ...any) *wire.ChannelError {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > wire.MaxErrorMessageSize {
		msg = msg[:wire.MaxErrorMessageSize]
	}
	return &wire.ChannelError{Code: code, Message: msg}
}

// HandleMessage handles the channel messages of one session. A refused
// request is answered with a ChannelError and never closes the session:
// only the transport's own failures do. Malformed channel messages and
// unknown even message types are refused with "malformed"; unknown odd
// types are ignored, as BOLT 1 asks.
func (c *Manager) HandleMessage(ctx context.Context, s *session.Session, msg wire.Message) error {
	if raw, ok := msg.(*wire.Custom); ok {
		decoded, err := decodeCustom(raw)
		if err != nil {
			c.answer(ctx, s, refuse(wire.ChanMalformed, "malformed message %d: %v", uint16(raw.Type), err))
			return nil
		}
		msg = decoded
	}
	if err := c.dispatch(ctx, s, msg); err != nil {
		c.answer(ctx, s, err)
	}
	return nil
}

// decodeCustom turns a raw custom message into its m2mhub type, or fails
// for a malformed one or an unknown even type.
func decodeCustom(raw *wire.Custom) (wire.Message, error) {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(raw.Data)), uint16(raw.Type))
	m, err := wire.DecodeMessage(append(b, raw.Data...))
	if err != nil {
		return nil, err
	}
	if c, ok := m.(*wire.Custom); ok {
		if c.Type%2 == 1 {
			return c, nil
		}
		return nil, fmt.Errorf("unknown message type %d", uint16(c.Type))
	}
	return m, nil
}

// answer sends a handler's error to the session: a refusal as it is, any
// other error as "internal" (naming the request when withIDs saw it) with
// the details kept in the log.
func (c *Manager) answer(ctx context.Context, s *session.Session, err error) {
	var ce *wire.ChannelError
	var f *failed
	switch {
	case errors.As(err, &f):
		ce, err = f.refusal, f.cause
	case errors.As(err, &ce):
		err = nil // a refusal: nothing to log
	default:
		ce = &wire.ChannelError{Code: wire.ChanInternal, Message: "internal error"}
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		c.log.Error("channel request failed", "device", s.DeviceID(), "err", err)
	}
	if err := s.Send(ctx, ce); err != nil {
		c.log.Debug("refusal not delivered", "device", s.DeviceID(), "err", err)
	}
}

// dispatch routes one decoded message. Every path fills the refusal's ids
// so the peer can match it to its request.
func (c *Manager) dispatch(ctx context.Context, s *session.Session, msg wire.Message) error {
	switch m := msg.(type) {
	case *wire.OpenChannel:
		err := c.open(ctx, s, m)
		return withIDs(err, func(ce *wire.ChannelError) { ce.ReqID = &m.ReqID })
	case *wire.ChannelFunded:
		err := c.funded(ctx, s, m)
		return withIDs(err, func(ce *wire.ChannelError) { ce.PendingID = &m.PendingID })
	case *wire.Pay:
		start := time.Now()
		release, err := c.admit(ctx, s.DeviceID(), m)
		if err != nil {
			return err
		}
		ack, err := c.Pay(ctx, s.DeviceID(), m)
		release()
		c.observePay(m, start, err)
		if staleRefusal(err) {
			// The device is behind (or ahead of) the state the hub
			// holds: show it that state first, so it can resume.
			c.sendState(ctx, s, m.ChanID)
		}
		if err != nil {
			return withIDs(err, func(ce *wire.ChannelError) {
				ce.ChanID, ce.Seq, ce.ReqID, ce.HoldID = &m.ChanID, &m.Seq, m.ReqID, m.HoldID
			})
		}
		if err := s.Send(ctx, ack); err != nil {
			c.log.Debug("pay ack not delivered", "device", s.DeviceID(), "err", err)
		}
		c.send(ctx, m.Payee, &wire.ReceiptNotice{Receipt: ack.Receipt})
		return nil
	case *wire.ChannelSync:
		st, err := c.channelState(ctx, s, m.ChanID)
		if err != nil {
			return withIDs(err, func(ce *wire.ChannelError) { ce.ChanID = &m.ChanID })
		}
		if err := s.Send(ctx, st); err != nil {
			c.log.Debug("channel state not delivered", "device", s.DeviceID(), "err", err)
		}
		return nil
	case *wire.HoldRequest:
		c.holdRequest(ctx, s.DeviceID(), m, true)
		return nil
	case *wire.HoldAuthorize:
		err := c.holdAuthorize(ctx, s, m)
		return withIDs(err, func(ce *wire.ChannelError) { ce.HoldID, ce.ChanID = &m.HoldID, &m.ChanID })
	case *wire.Capture:
		err := c.capture(ctx, s.DeviceID(), m, true)
		return withIDs(err, func(ce *wire.ChannelError) { ce.HoldID = &m.HoldID })
	case *wire.Release:
		err := c.release(ctx, s.DeviceID(), m, true)
		return withIDs(err, func(ce *wire.ChannelError) { ce.HoldID = &m.HoldID })
	case *wire.ChannelError:
		c.deviceError(ctx, s, m)
		return nil
	case *wire.CloseRequest:
		err := c.closeRequest(ctx, s, m)
		return withIDs(err, func(ce *wire.ChannelError) { ce.ChanID = &m.ChanID })
	case *wire.CloseSign:
		err := c.closeSign(ctx, s, m)
		return withIDs(err, func(ce *wire.ChannelError) { ce.ChanID = &m.ChanID })
	case *wire.Custom:
		// An unknown odd type: optional to understand.
		c.log.Debug("ignoring unknown odd message", "device", s.DeviceID(), "type", uint16(m.Type))
		return nil
	}
	return refuse(wire.ChanMalformed, "message type %d is not accepted from a device", uint16(msg.MsgType()))
}

// failed is a handler's failure that is not a refusal: the device gets
// refusal ("internal", naming its request), the log gets cause.
type failed struct {
	cause   error
	refusal *wire.ChannelError
}

func (f *failed) Error() string { return f.cause.Error() }
func (f *failed) Unwrap() error { return f.cause }

// withIDs lets set name the request in a refusal, and in the "internal"
// answer to any other failure, so the device can match either to the
// request it waits on.
func withIDs(err error, set func(*wire.ChannelError)) error {
	if err == nil {
		return nil
	}
	var ce *wire.ChannelError
	if !errors.As(err, &ce) {
		ce = &wire.ChannelError{Code: wire.ChanInternal, Message: "internal error"}
		err = &failed{cause: err, refusal: ce}
	}
	set(ce)
	return err
}

// updateCode maps a channel.CheckUpdate error to its wire code.
func updateCode(err error) wire.ChanCode {
	switch {
	case errors.Is(err, channel.ErrStaleState):
		return wire.ChanStaleState
	case errors.Is(err, channel.ErrSeqGap):
		return wire.ChanSeqGap
	case errors.Is(err, channel.ErrOverCapacity):
		return wire.ChanOverCapacity
	}
	return wire.ChanBadAmount
}

// statusCode is the refusal for a payment or hold on a channel that is not
// ready.
func statusCode(st hub.ChannelStatus) wire.ChanCode {
	switch st {
	case hub.ChannelFrozen:
		return wire.ChanFrozen
	case hub.ChannelClosing, hub.ChannelClosed:
		return wire.ChanClosed
	}
	return wire.ChanNotReady
}
