package session

import (
	"context"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// Router is a Handler that hands each device message to the subsystem that
// owns it, as lnd's peer readHandler does: by message type, and a
// ChannelError (the one message every subsystem is answered with) by its
// code. A message no route names goes to Default; so does an undecoded
// custom message, which Default answers as unknown or malformed.
type Router struct {
	// ByType routes messages by their wire type (wire.MsgSettleSign …).
	ByType map[wire.MessageType]Handler
	// ErrorsByCode routes a device's ChannelError by its code
	// (wire.ChanSettleRefused …).
	ErrorsByCode map[wire.ChanCode]Handler
	// Default takes every other message: the channel manager.
	Default Handler
}

var (
	_ Handler = (*Router)(nil)
	_ Ender   = (*Router)(nil)
)

// Ender is a Handler that hears when a session has ended: after its read
// loop returned, so none of the session's messages is being handled any
// more, and after it left the directory.
type Ender interface {
	SessionEnded(s *Session)
}

// SessionEnded tells Default, when it is an Ender, that s ended.
func (r *Router) SessionEnded(s *Session) {
	if e, ok := r.Default.(Ender); ok {
		e.SessionEnded(s)
	}
}

// HandleMessage passes msg to the handler its route names, or to Default.
func (r *Router) HandleMessage(ctx context.Context, s *Session, msg wire.Message) error {
	return r.route(msg).HandleMessage(ctx, s, msg)
}

func (r *Router) route(msg wire.Message) Handler {
	if ce, ok := msg.(*wire.ChannelError); ok {
		if h := r.ErrorsByCode[ce.Code]; h != nil {
			return h
		}
		return r.Default
	}
	if _, raw := msg.(*wire.Custom); !raw {
		if h := r.ByType[msg.MsgType()]; h != nil {
			return h
		}
	}
	return r.Default
}
