package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Session is one authenticated device connection. It runs two goroutines:
// the read loop (the connection's own goroutine) and a writer that owns the
// socket's write side, the send queue and the keepalive timers.
type Session struct {
	srv    *Server
	conn   Conn
	device hub.Device
	key    hub.PubKey
	ip     string

	queue chan wire.Message
	pong  chan struct{}
	// heard is when the last message from the device was read (the
	// clock's unix nanoseconds): the keepalive pings only after
	// PingInterval of quiet.
	heard atomic.Int64

	warnings int // BOLT 1 warnings received; read loop only

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	final *wire.Error // sent by the writer before the socket closes
	why   string      // close reason for the log
}

func newSession(srv *Server, c Conn, dev hub.Device, key hub.PubKey, ip string) *Session {
	ctx, cancel := context.WithCancel(srv.ctx)
	s := &Session{
		srv:    srv,
		conn:   c,
		device: dev,
		key:    key,
		ip:     ip,
		queue:  make(chan wire.Message, srv.cfg.SendQueue),
		pong:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	s.heard.Store(srv.cfg.Clock.Now().UnixNano()) // its Init, just read
	return s
}

// DeviceID returns the registry id of the session's device.
func (s *Session) DeviceID() string { return s.device.ID }

// Key returns the key the device proved in the handshake.
func (s *Session) Key() hub.PubKey { return s.key }

// Device returns the registry record the session was authenticated with.
func (s *Session) Device() hub.Device { return s.device }

// RemoteAddr returns the device's network address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Done is closed when the session starts closing.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Send queues msg for the device without blocking. It returns an error
// wrapping ErrSessionClosed once the session is closing, and ErrSendQueueFull
// when the device has fallen SendQueue messages behind: the session is then
// dropped with "too-slow", because a device that cannot keep up must not
// hold memory or stall whoever sends to it.
func (s *Session) Send(ctx context.Context, msg wire.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.ctx.Err() != nil {
		return ErrSessionClosed
	}
	select {
	case s.queue <- msg:
		return nil
	default:
		s.closeWith(wire.CodeTooSlow, "send queue overflowed")
		return fmt.Errorf("%w: device %s", ErrSendQueueFull, s.device.ID)
	}
}

// closeWith starts closing the session and makes the writer send code and
// msg as its last message. Only the first call's code is sent.
func (s *Session) closeWith(code wire.Code, msg string) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	if code != "" {
		s.final = wire.NewError(code, msg)
	}
	s.why = string(code)
	s.cancel()
	s.mu.Unlock()
	// Wake the read loop now and bound a write stuck on a full socket;
	// the writer re-arms its own deadline for the final Error.
	now := time.Now()
	_ = s.conn.SetReadDeadline(now)
	_ = s.conn.SetWriteDeadline(now.Add(closeGrace))
}

func (s *Session) reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.why == "" {
		return "connection lost"
	}
	return s.why
}

// run is the read loop. It returns once both goroutines are done and the
// socket is closed.
func (s *Session) run() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop()
	}()
	s.readLoop()
	s.cancel()
	<-writerDone
	// The session stops counting as live now, not after the linger below.
	s.srv.unregister(s)
	// None of its messages is being handled any more (the read loop
	// handles them one at a time and has returned): the handler may end
	// what was waiting for this session's answer.
	if e, ok := s.srv.cfg.Handler.(Ender); ok {
		e.SessionEnded(s)
	}
	s.mu.Lock()
	sentFinal := s.final != nil
	s.mu.Unlock()
	if sentFinal {
		s.srv.lingerClose(s.conn)
		return
	}
	_ = s.conn.Close()
}

func (s *Session) readLoop() {
	for s.ctx.Err() == nil {
		msg, err := wire.ReadMessage(s.conn, s.srv.cfg.MaxMessageSize)
		// A custom message whose payload does not decode goes to the
		// handler as it came, so it can answer with a precise channel
		// error and the session survives.
		var malformed *wire.MalformedError
		if errors.As(err, &malformed) {
			msg, err = malformed.Raw, nil
		}
		if err != nil {
			if code := readErrCode(s.ctx, err); code != "" && code != wire.CodeTimeout {
				s.closeWith(code, refusalText(code))
			}
			return
		}
		s.heard.Store(s.srv.cfg.Clock.Now().UnixNano())
		dropBefore, dropAfter := s.fault(false, msg)
		if dropBefore {
			s.closeWith("", "")
			return
		}
		if err := s.dispatch(msg); err != nil {
			code := wire.CodeInternal
			var ce *wire.CodeError
			switch {
			case errors.As(err, &ce):
				code = ce.Code
			case errors.Is(err, wire.ErrProtocol):
				code = wire.CodeProtocol
			}
			s.srv.log.Info("session error", "device", s.device.ID, "err", err)
			s.closeWith(code, refusalText(code))
			return
		}
		if dropAfter {
			s.closeWith("", "")
			return
		}
	}
}

// fault asks the test's fault hook, if any, about msg.
func (s *Session) fault(send bool, msg wire.Message) (dropBefore, dropAfter bool) {
	if s.srv.cfg.Fault == nil {
		return false, false
	}
	return s.srv.cfg.Fault(s.device.ID, send, msg)
}

// dispatch handles one message from an authenticated device.
func (s *Session) dispatch(msg wire.Message) error {
	switch m := msg.(type) {
	case *wire.Ping:
		if m.NumPongBytes > MaxPongBytes {
			return fmt.Errorf("%w: ping asks for %d pong bytes, limit %d", wire.ErrProtocol, m.NumPongBytes, MaxPongBytes)
		}
		return s.Send(s.ctx, wire.NewPong(make([]byte, m.NumPongBytes)))
	case *wire.Pong:
		select {
		case s.pong <- struct{}{}:
		default:
		}
		return nil
	case *wire.Error:
		s.srv.log.Info("device sent error", "device", s.device.ID, "data", wire.ParseError(m).Error())
		s.closeWith("", "")
		return nil
	case *wire.Warning:
		// Logged, never fatal (protocol.md §1.3). Past the first few,
		// only at debug level, so a device cannot flood the log.
		s.warnings++
		level := slog.LevelInfo
		if s.warnings > maxLoggedWarnings {
			level = slog.LevelDebug
		}
		s.srv.log.Log(s.ctx, level, "device sent warning", "device", s.device.ID, "n", s.warnings, "data", warningText(m))
		return nil
	}
	// Custom messages reach the handler whether wire.DecodeMessage returned
	// one of m2mhub's own types (*wire.Pay …) or an *wire.Custom it does
	// not know; the handler answers unknown types.
	if msg.MsgType() >= wire.CustomTypeStart {
		if s.srv.cfg.Handler == nil {
			s.srv.log.Debug("custom message without handler", "device", s.device.ID, "type", uint16(msg.MsgType()))
			return nil
		}
		return s.srv.cfg.Handler.HandleMessage(s.ctx, s, msg)
	}
	return fmt.Errorf("%w: unexpected %v after init", wire.ErrProtocol, msg.MsgType())
}

// maxLoggedWarnings is how many warnings of one session are logged at info
// level; later ones go to debug.
const maxLoggedWarnings = 10

// warningText is a warning's data for the log: at most 256 bytes, valid
// UTF-8.
func warningText(w *wire.Warning) string {
	d := w.Data
	if len(d) > 256 {
		d = d[:256]
	}
	return strings.ToValidUTF8(string(d), "?")
}

// writeLoop owns the socket's write side: queued messages, keepalive pings
// and, on close, the final Error. The hub pings after PingInterval of quiet
// (nothing read from the device), as BOLT 1 peers use ping for idle links;
// a device that talks is never pinged. Once it has pinged, only a Pong
// within PongTimeout keeps the session.
func (s *Session) writeLoop() {
	clk := s.srv.cfg.Clock
	interval := s.srv.cfg.PingInterval
	nextPing := clk.TickAfter(interval)
	var pongDue <-chan time.Time
	for {
		select {
		case <-s.ctx.Done():
			s.mu.Lock()
			final := s.final
			s.mu.Unlock()
			if final != nil {
				_ = s.conn.SetWriteDeadline(time.Now().Add(closeGrace))
				_ = wire.WriteMessage(s.conn, final)
			}
			return
		case m := <-s.queue:
			if !s.write(m) {
				return
			}
		case <-nextPing:
			if quiet := clk.Now().Sub(time.Unix(0, s.heard.Load())); quiet < interval {
				// The device spoke since the timer was set: wait
				// for a full interval after its last message.
				nextPing = clk.TickAfter(interval - quiet)
				continue
			}
			if !s.write(wire.NewPing(0)) {
				return
			}
			nextPing, pongDue = nil, clk.TickAfter(s.srv.cfg.PongTimeout)
		case <-s.pong:
			if pongDue != nil {
				nextPing, pongDue = clk.TickAfter(interval), nil
			}
		case <-pongDue:
			s.srv.log.Info("keepalive timeout", "device", s.device.ID)
			s.closeWith(wire.CodeTimeout, "no pong within the timeout")
		}
	}
}

// write sends one message; on failure it closes the session and reports
// false.
func (s *Session) write(m wire.Message) bool {
	dropBefore, dropAfter := s.fault(true, m)
	if dropBefore {
		s.closeWith("", "")
		return false
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout))
	if err := wire.WriteMessage(s.conn, m); err != nil {
		if s.ctx.Err() == nil {
			s.srv.log.Info("write failed", "device", s.device.ID, "err", err)
		}
		s.closeWith("", "")
		return false
	}
	if dropAfter {
		s.closeWith("", "")
		return false
	}
	return true
}
