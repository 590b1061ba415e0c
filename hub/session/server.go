package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Session server errors. Callers test them with errors.Is.
var (
	ErrServerClosed  = errors.New("session: server closed")
	ErrSessionClosed = errors.New("session: session closed")
	ErrSendQueueFull = errors.New("session: send queue full")
)

// Authenticator decides whether a key proven by the BOLT 8 handshake may hold a session.
type Authenticator interface {
	// Authenticate returns the device whose current key is key. It returns an error
	// wrapping ErrUnknownKey, ErrRevoked or ErrRotatedOut when the key may not connect.
	Authenticate(ctx context.Context, key hub.PubKey) (hub.Device, error)
	// EnrolWithToken registers key from an operator-signed enrolment token
	// (zero-touch provisioning) and returns the new device.
	EnrolWithToken(ctx context.Context, key hub.PubKey, token []byte) (hub.Device, error)
}

// Handler receives the custom messages (type >= 32768) of authenticated
// sessions. Calls for one session are sequential, from that session's read
// loop: a slow handler delays only its own session, and the hub's keepalive
// drops the session if the handler stalls it past PongTimeout. A non-nil
// error closes the session; a *wire.CodeError return picks the code sent to
// the device, anything else is sent as "internal".
type Handler interface {
	HandleMessage(ctx context.Context, s *Session, msg wire.Message) error
}

// Defaults for Config. They bound what one hub process spends on
// devices; DESIGN.md §8 sizes a hub for 10,000 connected devices.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxSessions      = 10000
	// DefaultMaxSessionsPerIP is high because one public address often
	// stands for many devices (a depot's gateway, carrier-grade NAT on a
	// cellular network) and the loopback load test runs 1,000 devices
	// from one address. It is no defence against unauthenticated floods:
	// only registered keys get sessions, and connections still in their
	// handshake are bounded per source by the transport
	// (p2plisten.Config.MaxHandshakesPerSource).
	DefaultMaxSessionsPerIP = 1000
	DefaultMaxMessageSize   = wire.MaxMessageSize
	DefaultSendQueue        = 64
	DefaultPingInterval     = 30 * time.Second
	DefaultPongTimeout      = 15 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	// MaxPongBytes is the most pong padding a device may ask for in a
	// Ping. BOLT 1 allows 65531; answering that to every tiny Ping would
	// let a device turn the hub into a bandwidth amplifier.
	MaxPongBytes = 256
	// closeGrace bounds how long a closing session may spend delivering
	// its final Error before the socket is closed.
	closeGrace = time.Second
)

// Config configures a Server. Zero limits take the defaults above.
//
// A connection is "in handshake" from TCP accept until its device is
// authenticated: the noise acts, which the Listener runs (internal/p2plisten
// with brontide's noise machine, under its own limits on connections in
// handshake), then the first message (Init, or Enrol then Init) and the
// registry's decision, within HandshakeTimeout.
type Config struct {
	// Listener hands over the connections whose noise handshake is done.
	// Required; the server owns it from New on and closes it in Close
	// (and when New fails).
	Listener Listener
	// Auth decides which proven keys may hold a session. Required.
	Auth Authenticator
	// Handler receives custom messages after authentication. Optional:
	// without one, custom messages are logged and dropped.
	Handler Handler
	// Directory is where the server lists its live sessions, for the
	// subsystems that message devices by id. Optional: without one the
	// server keeps a directory of its own.
	Directory *Directory
	// Logger receives connection events. Defaults to slog.Default().
	Logger *slog.Logger
	// Clock drives the keepalive timers. Defaults to the wall clock.
	Clock clock.Clock

	// HandshakeTimeout bounds the time from the end of the noise
	// handshake to a decided authentication.
	HandshakeTimeout time.Duration
	// MaxSessions bounds connections that finished the noise handshake,
	// authenticated or not yet.
	MaxSessions int
	// MaxSessionsPerIP bounds the same per remote IP address.
	MaxSessionsPerIP int
	// MaxMessageSize bounds one incoming message (type included);
	// at most wire.MaxMessageSize (65535).
	MaxMessageSize int
	// SendQueue is the per-session outgoing queue length. A device that
	// reads too slowly to keep it from overflowing is dropped with
	// "too-slow"; the hub never blocks on it.
	SendQueue int
	// PingInterval is how long the hub waits after a Pong (or after
	// authentication) before it sends the next Ping.
	PingInterval time.Duration
	// PongTimeout is how long a device has to answer a Ping.
	PongTimeout time.Duration
	// WriteTimeout bounds one write to a device's socket.
	WriteTimeout time.Duration

	// Fault, set only by tests, is asked about every message a session
	// sends (send) or reads: it may drop the connection instead of
	// passing the message (dropBefore) or right after (dropAfter), for the
	// disconnect trials. Nil in the product.
	Fault func(deviceID string, send bool, msg wire.Message) (dropBefore, dropAfter bool)
}

func (c *Config) setDefaults() error {
	if c.Directory == nil {
		c.Directory = NewDirectory()
	}
	if c.Listener == nil {
		return fmt.Errorf("%w: server: no listener", hub.ErrInvalid)
	}
	if c.Auth == nil {
		return fmt.Errorf("%w: server: no authenticator", hub.ErrInvalid)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.NewDefaultClock()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.PongTimeout, DefaultPongTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&c.MaxSessions, DefaultMaxSessions)
	defInt(&c.MaxSessionsPerIP, DefaultMaxSessionsPerIP)
	defInt(&c.MaxMessageSize, DefaultMaxMessageSize)
	defInt(&c.SendQueue, DefaultSendQueue)
	if c.MaxMessageSize > wire.MaxMessageSize {
		return fmt.Errorf("%w: server: MaxMessageSize %d exceeds %d", hub.ErrInvalid, c.MaxMessageSize, wire.MaxMessageSize)
	}
	return nil
}

// Server accepts BOLT 8 connections from devices, authenticates the proven
// key, and keeps one live Session per device.
type Server struct {
	cfg Config
	log *slog.Logger
	ln  Listener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	conns    int               // noise-authenticated connections, sessions included
	perIP    map[string]int    // conns by remote IP
	pending  map[Conn]struct{} // conns not yet authenticated
	sessions *Directory        // live session by device id
}

// New starts serving the connections cfg.Listener accepts. The server runs
// until Close.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close()
		}
		return nil, err
	}
	ln := cfg.Listener
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		ln:       ln,
		ctx:      ctx,
		cancel:   cancel,
		perIP:    make(map[string]int),
		pending:  make(map[Conn]struct{}),
		sessions: cfg.Directory,
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Sessions returns the number of live, authenticated sessions.
func (s *Server) Sessions() int { return s.sessions.Len() }

// Session returns the live session of a device, if any.
func (s *Server) Session(deviceID string) (*Session, bool) { return s.sessions.Session(deviceID) }

// Drop closes the live session of deviceID, as Directory.Drop does.
func (s *Server) Drop(deviceID string, code, reason string) { s.sessions.Drop(deviceID, code, reason) }

// Close stops accepting, tells every device "shutting-down", ends every
// handshake in progress, and waits for every goroutine the server started.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	// Under s.mu, so no session registers unseen (register checks closed
	// and lists the session under it too).
	sessions := s.sessions.all()
	for c := range s.pending {
		// Wake the pre-auth read; the conn goroutine then closes it.
		_ = c.SetDeadline(time.Now())
	}
	s.mu.Unlock()

	// The listener closes before any session hears of the shutdown, so
	// a device that reconnects at once is refused at the socket instead
	// of landing on a hub that is going away (it then backs off and
	// finds the next one).
	err := s.ln.Close()

	// Sessions are told before s.cancel: their contexts derive from
	// s.ctx, and closeWith does nothing on a session whose context is
	// already done, so after s.cancel it would neither queue the final
	// Error nor wake the read loop, and Close would wait for the
	// device's next message (its keepalive, up to a ping interval away).
	for _, sess := range sessions {
		sess.closeWith(wire.CodeShuttingDown, "hub shutting down")
	}
	s.cancel()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			// Only Close ends Accept; failed handshakes stay inside
			// the listener.
			return
		}
		ip := remoteIP(conn.RemoteAddr())
		code, ok := s.admit(conn, ip)
		s.wg.Add(1)
		if !ok {
			go s.refuse(conn, ip, code)
			continue
		}
		go s.serveConn(conn, ip)
	}
}

// admit counts a new connection against the limits. When it returns false
// the connection is not counted and must be refused with code.
func (s *Server) admit(c Conn, ip string) (wire.Code, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return wire.CodeShuttingDown, false
	case s.conns >= s.cfg.MaxSessions:
		return wire.CodeTooManySessions, false
	case s.perIP[ip] >= s.cfg.MaxSessionsPerIP:
		return wire.CodeTooManyFromIP, false
	}
	s.conns++
	s.perIP[ip]++
	s.pending[c] = struct{}{}
	return "", true
}

func (s *Server) release(c Conn, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, c)
	s.conns--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// refuse tells a connection over the limits why and closes it.
func (s *Server) refuse(c Conn, ip string, code wire.Code) {
	defer s.wg.Done()
	s.log.Warn("connection refused", "ip", ip, "key", hub.PubKeyOf(c.RemotePub()), "code", code)
	s.writeFinal(c, code, refusalText(code))
	s.lingerClose(c)
}

// writeFinal sends one Error on a connection that has no session writer.
func (s *Server) writeFinal(c Conn, code wire.Code, msg string) {
	_ = c.SetWriteDeadline(time.Now().Add(closeGrace))
	_ = wire.WriteMessage(c, wire.NewError(code, msg))
}

// lingerClose closes c after reading, for at most closeGrace, whatever the
// device still sends until it closes its side. Closing a socket with unread
// input makes the kernel send a TCP reset, and a reset can discard the
// Error the device has not read yet; draining first lets the Error arrive.
func (s *Server) lingerClose(c Conn) {
	_ = c.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		if _, err := wire.ReadMessage(c, s.cfg.MaxMessageSize); err != nil {
			break
		}
	}
	_ = c.Close()
}

// serveConn runs one connection from the end of the noise handshake to its
// close: authentication, then the session's read loop.
func (s *Server) serveConn(c Conn, ip string) {
	defer s.wg.Done()
	defer s.release(c, ip)
	key := hub.PubKeyOf(c.RemotePub())
	log := s.log.With("ip", ip, "key", key)

	dev, code, err := s.authenticate(c, key)
	if err != nil {
		log.Info("session refused", "code", code, "err", err)
		if code == "" {
			_ = c.Close()
			return
		}
		s.writeFinal(c, code, refusalText(code))
		s.lingerClose(c)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	// Authenticated: the connection now counts as a session, no longer
	// against its source's handshake slots.
	c.EndHandshake()

	sess := newSession(s, c, dev, key, ip)
	// The Init reply is queued before the session becomes visible, so it
	// is always the first message the device reads.
	sess.queue <- wire.NewInit()
	if !s.register(sess) {
		_ = c.Close()
		return
	}
	log.Info("session open", "device", dev.ID)
	sess.run()
	log.Info("session closed", "device", dev.ID, "reason", sess.reason())
}

// authenticate reads the device's first messages within HandshakeTimeout and
// asks the Authenticator. On failure it returns the code to send ("" to send
// nothing) and the cause for the log.
func (s *Server) authenticate(c Conn, key hub.PubKey) (hub.Device, wire.Code, error) {
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	_ = c.SetReadDeadline(deadline)
	// Close wakes pending connections by moving their deadline to now; if
	// it did so before the line above, that deadline was just overwritten.
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return hub.Device{}, wire.CodeShuttingDown, ErrServerClosed
	}
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()

	var token []byte
	msg, err := s.readPreInit(c, key)
	if err == nil {
		if e, ok := msg.(*wire.Enrol); ok {
			token = e.Token
			msg, err = s.readPreInit(c, key)
		}
	}
	if err != nil {
		return hub.Device{}, readErrCode(s.ctx, err), err
	}
	init, ok := msg.(*wire.Init)
	if !ok {
		return hub.Device{}, wire.CodeProtocol, fmt.Errorf("%w: first message %v, want init", wire.ErrProtocol, msg.MsgType())
	}
	if err := wire.CheckInit(init); err != nil {
		return hub.Device{}, wire.CodeProtocol, err
	}

	// A token from an already registered key is ignored, so a device
	// may keep presenting the token it was provisioned with.
	dev, err := s.cfg.Auth.Authenticate(ctx, key)
	if token != nil && errors.Is(err, hub.ErrUnknownKey) {
		dev, err = s.cfg.Auth.EnrolWithToken(ctx, key, token)
		if err != nil {
			return hub.Device{}, authErrCode(s.ctx, err, wire.CodeEnrolRefused), err
		}
	}
	if err != nil {
		return hub.Device{}, authErrCode(s.ctx, err, wire.CodeInternal), err
	}
	if err := dev.Authorize(key); err != nil {
		// The authenticator returned a device this key may not use;
		// trust the registry's own rule over the adapter.
		return hub.Device{}, authErrCode(s.ctx, err, wire.CodeInternal), err
	}
	return dev, "", nil
}

// readPreInit reads the next message before authentication, skipping
// BOLT 1 warnings: a warning is logged, never fatal (protocol.md §1.3),
// also before Init. HandshakeTimeout's read deadline bounds how many.
func (s *Server) readPreInit(c Conn, key hub.PubKey) (wire.Message, error) {
	for {
		msg, err := wire.ReadMessage(c, s.cfg.MaxMessageSize)
		if err != nil {
			return nil, err
		}
		w, ok := msg.(*wire.Warning)
		if !ok {
			return msg, nil
		}
		s.log.Debug("warning before init", "key", key, "data", warningText(w))
	}
}

// authErrCode is the one table mapping registry errors to wire codes. Details
// stay in the hub's log; the device learns only the code.
func authErrCode(srvCtx context.Context, err error, fallback wire.Code) wire.Code {
	switch {
	case srvCtx.Err() != nil:
		return wire.CodeShuttingDown
	case errors.Is(err, hub.ErrRevoked):
		return wire.CodeRevoked
	case errors.Is(err, hub.ErrRotatedOut):
		return wire.CodeRotatedOut
	case errors.Is(err, hub.ErrUnknownKey):
		return wire.CodeUnknownKey
	case errors.Is(err, context.DeadlineExceeded):
		return wire.CodeTimeout
	}
	return fallback
}

// readErrCode maps a failed read to the code worth sending: none when the
// peer is gone, a precise one when it broke the rules or was too slow.
func readErrCode(srvCtx context.Context, err error) wire.Code {
	var ne net.Error
	switch {
	case srvCtx.Err() != nil:
		return wire.CodeShuttingDown
	case errors.Is(err, wire.ErrMessageTooLarge):
		return wire.CodeMessageTooLarge
	case errors.Is(err, wire.ErrProtocol):
		return wire.CodeProtocol
	case errors.As(err, &ne) && ne.Timeout():
		return wire.CodeTimeout
	}
	return ""
}

func refusalText(code wire.Code) string {
	switch code {
	case wire.CodeUnknownKey:
		return "this key is not registered"
	case wire.CodeRevoked:
		return "this device has been revoked"
	case wire.CodeRotatedOut:
		return "this key was replaced by a newer key"
	case wire.CodeEnrolRefused:
		return "enrolment token refused"
	case wire.CodeTooManySessions:
		return "hub at its session limit, retry later"
	case wire.CodeTooManyFromIP:
		return "too many connections from this address, retry later"
	case wire.CodeMessageTooLarge:
		return "message exceeds the size limit"
	case wire.CodeProtocol:
		return "protocol violation"
	case wire.CodeShuttingDown:
		return "hub shutting down"
	case wire.CodeTimeout:
		return "no init within the handshake timeout"
	}
	return "internal error"
}

// register makes sess the device's live session, replacing an older one.
func (s *Server) register(sess *Session) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	old := s.sessions.put(sess)
	delete(s.pending, sess.conn)
	s.mu.Unlock()
	if old != nil {
		old.closeWith(wire.CodeReplaced, "a newer session for this device connected")
	}
	return true
}

func (s *Server) unregister(sess *Session) {
	s.sessions.remove(sess)
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
