// Package m2mclient is the device side of m2mhub: it connects to a hub over
// BOLT 8 with the device's identity key, keeps the connection alive and
// reconnects on its own, and carries the custom messages later layers
// (channels, payments, receipts) exchange with the hub.
//
// The package links no server-side code: no NATS server, no Redis client,
// no bbolt, nothing from the hub (deps_test.go enforces it), so it stays
// small enough for embedded devices.
package m2mclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/keychain"

	"github.com/m2mhub/m2mhub/internal/msgfault"
	"github.com/m2mhub/m2mhub/internal/noiseconn"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Client errors. Callers test them with errors.Is.
var (
	ErrNotConnected = errors.New("m2mclient: not connected")
	ErrClosed       = errors.New("m2mclient: session closed")
	// ErrHubKeyMismatch is wrapped in Dial's error, beside the
	// context's, when every attempt up to the deadline (at least three)
	// ended with the hub closing the noise handshake unanswered: its
	// first act is encrypted to the pinned hub key, and a hub with
	// another key cannot read it. Check the key against the hub's
	// (hubctl info prints it as pubkey).
	ErrHubKeyMismatch = errors.New("m2mclient: the hub closed the handshake: the pinned hub key is probably not this hub's")
)

// Codes a hub sends when it refuses or closes a session (docs/protocol.md has
// the full table). The first four are permanent: the session stops
// reconnecting and Err returns a *RefusedError carrying one of them.
const (
	CodeUnknownKey      = string(wire.CodeUnknownKey)
	CodeRevoked         = string(wire.CodeRevoked)
	CodeRotatedOut      = string(wire.CodeRotatedOut)
	CodeEnrolRefused    = string(wire.CodeEnrolRefused)
	CodeTooManySessions = string(wire.CodeTooManySessions)
	CodeTooManyFromIP   = string(wire.CodeTooManyFromIP)
	CodeReplaced        = string(wire.CodeReplaced)
	CodeMessageTooLarge = string(wire.CodeMessageTooLarge)
	CodeProtocol        = string(wire.CodeProtocol)
	CodeShuttingDown    = string(wire.CodeShuttingDown)
	CodeTooSlow         = string(wire.CodeTooSlow)
	CodeTimeout         = string(wire.CodeTimeout)
	CodeInternal        = string(wire.CodeInternal)
)

// RefusedError is a hub's refusal or close notice: the wire.Error it sent,
// split into its code and human message. Test for it with errors.As.
type RefusedError struct {
	Code    string
	Message string
}

// Error describes the refusal.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("m2mclient: hub refused: %s: %s", e.Code, e.Message)
}

// Permanent reports whether retrying is pointless until an operator acts.
func (e *RefusedError) Permanent() bool { return wire.Code(e.Code).Permanent() }

// Defaults for the options.
const (
	DefaultDialTimeout  = 10 * time.Second
	DefaultPingInterval = 30 * time.Second
	DefaultBackoffMin   = 500 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	// messageBuffer is how many custom messages wait for the caller
	// before the read loop blocks.
	messageBuffer = 64
)

type options struct {
	token        []byte
	log          *slog.Logger
	backoffMin   time.Duration
	backoffMax   time.Duration
	pingInterval time.Duration
	dialTimeout  time.Duration
	fault        *msgfault.Point // tests only
}

// Option adjusts Dial.
type Option func(*options)

// WithEnrolToken makes the device present an operator-signed enrolment token
// on every connection. The hub enrols the key from it the first time and
// ignores it once the key is registered.
func WithEnrolToken(token []byte) Option {
	return func(o *options) { o.token = append([]byte(nil), token...) }
}

// WithLogger sets the logger. The default discards nothing: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithBackoff bounds the wait between connection attempts: it starts at min,
// doubles per failure up to max, and is jittered down by up to half so a
// fleet that lost the hub together does not come back in lockstep.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithPingInterval sets how often the client pings the hub. A hub that has
// not answered a ping by the next one is taken as gone and the connection
// is replaced.
func WithPingInterval(d time.Duration) Option {
	return func(o *options) { o.pingInterval = d }
}

// WithDialTimeout bounds one connection attempt: TCP connect, the noise
// handshake and the Init exchange.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) { o.dialTimeout = d }
}

// Session is a device's connection to its hub, kept up across network
// failures until Close or a permanent refusal.
type Session struct {
	addr  string   // as given to Dial
	addrs []string // the hub's instances, from addr
	// cur is the index in addrs tried first by the next attempt; only
	// the connecting goroutine (Dial's, then run's) uses it.
	cur       int
	hubKey    *btcec.PublicKey
	deviceKey *btcec.PrivateKey
	opt       options
	log       *slog.Logger

	msgs chan wire.Message

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	wmu sync.Mutex // serialises writes: a noise conn is not safe for concurrent writers

	mu   sync.Mutex
	conn *noiseconn.Conn // nil while disconnected
	// connAddr is the address conn was dialled at.
	connAddr string
	err      error // permanent failure, set once
	// life is conn's connection: its end is seen by the calls waiting
	// for an answer on it (see lost).
	life *connLife
	// queued counts the messages put on msgs.
	queued atomic.Uint64

	// router is the session's shared reader of Messages, made on first
	// use, so a Device and a Provider of one session share it without
	// the caller wiring one.
	routerOnce sync.Once
	router     *Router

	// hooks run each time a connection comes up (see onConnect).
	hookMu   sync.RWMutex
	hooks    map[int]func()
	nextHook int
}

// onConnect registers f to run, on the session's goroutine, each time a
// connection to the hub is up and before any message is read from it; f
// must not block. The Device uses it to ask for its channels' state after
// a reconnect. Once the returned remove has returned, f never runs again.
func (s *Session) onConnect(f func()) (remove func()) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	if s.hooks == nil {
		s.hooks = make(map[int]func())
	}
	id := s.nextHook
	s.nextHook++
	s.hooks[id] = f
	return func() {
		s.hookMu.Lock()
		delete(s.hooks, id)
		s.hookMu.Unlock()
	}
}

// Router returns the session's shared Router, starting it on first use. A
// Device and a Provider created on this session without a Router of their
// own both use it, so a prosumer pays and is paid over one connection. Close
// stops it.
func (s *Session) Router() *Router {
	s.routerOnce.Do(func() { s.router = NewRouter(s, s.log) })
	return s.router
}

// Dial connects to the hub at addr, whose identity key is pinned as hubKey,
// proving deviceKey in the BOLT 8 handshake. It returns once the hub has
// answered the device's Init. Transient failures (network, a hub at its
// limits) are retried with backoff until ctx is done; a permanent refusal is
// returned at once as a *RefusedError. After Dial returns, the Session
// reconnects by itself until Close.
//
// A hub run as several instances (docs/scaling.md) is dialled with all of
// them, comma-separated ("10.0.0.1:9736,10.0.0.2:9736"), or with a host
// name that resolves to several addresses: an attempt tries each in turn,
// and backs off only once all have failed. When a connection is lost the
// next attempt starts at the following instance, so a device whose
// instance died is on another one after one failed dial; its Device
// resyncs the channel state there (ChannelSync) as after any reconnect.
func Dial(ctx context.Context, addr string, hubKey *btcec.PublicKey, deviceKey *btcec.PrivateKey, opts ...Option) (*Session, error) {
	if hubKey == nil || deviceKey == nil {
		return nil, errors.New("m2mclient: hub key and device key are required")
	}
	o := options{
		log:          slog.Default(),
		backoffMin:   DefaultBackoffMin,
		backoffMax:   DefaultBackoffMax,
		pingInterval: DefaultPingInterval,
		dialTimeout:  DefaultDialTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.backoffMin <= 0 || o.backoffMax < o.backoffMin || o.pingInterval <= 0 || o.dialTimeout <= 0 {
		return nil, errors.New("m2mclient: durations must be positive and backoff min <= max")
	}
	addrs := splitAddrs(addr)
	if len(addrs) == 0 {
		return nil, errors.New("m2mclient: no hub address")
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		addr:      addr,
		addrs:     addrs,
		hubKey:    hubKey,
		deviceKey: deviceKey,
		opt:       o,
		log:       o.log.With("hub", addr),
		msgs:      make(chan wire.Message, messageBuffer),
		ctx:       sctx,
		cancel:    cancel,
	}
	c, err := s.connectRetry(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("m2mclient: dial %s: %w", addr, err)
	}
	// Connected must hold as soon as Dial returns.
	s.mu.Lock()
	s.conn, s.life, s.connAddr = c, &connLife{done: make(chan struct{})}, s.addrs[s.cur]
	s.mu.Unlock()
	s.wg.Add(1)
	go s.run(c)
	return s, nil
}

// splitAddrs splits Dial's comma-separated addresses, dropping empty ones.
func splitAddrs(addr string) []string {
	var out []string
	for a := range strings.SplitSeq(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// HubAddr is the address (one of those given to Dial) of the instance the
// session is connected to, or "" while it is reconnecting.
func (s *Session) HubAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return ""
	}
	return s.connAddr
}

// Messages delivers the custom messages (type >= 32768) the hub sends. The
// caller must keep reading: while the buffer is full the session stops
// reading the connection, and the hub drops it for not answering pings. The
// channel is closed when the session ends.
func (s *Session) Messages() <-chan wire.Message { return s.msgs }

// Connected reports whether a connection to the hub is up right now.
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// Err returns why the session stopped for good: a *RefusedError with a
// permanent code or "replaced", or nil while it is still running or was closed by Close.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Send writes msg to the hub. It fails with ErrNotConnected while the session
// is reconnecting (the caller decides whether to wait and retry), ErrClosed
// after Close, and the session's permanent error once it has stopped. The
// write is bounded by ctx's deadline or, without one, the dial timeout.
func (s *Session) Send(ctx context.Context, msg wire.Message) error {
	s.mu.Lock()
	c, perm := s.conn, s.err
	s.mu.Unlock()
	switch {
	case perm != nil:
		return perm
	case s.ctx.Err() != nil:
		return ErrClosed
	case c == nil:
		return ErrNotConnected
	}
	return s.write(ctx, c, msg)
}

func (s *Session) write(ctx context.Context, c *noiseconn.Conn, msg wire.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline := time.Now().Add(s.opt.dialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	before, after := s.opt.fault.At(true, msg)
	if before {
		_ = c.Close()
		return errFault
	}
	_ = c.SetWriteDeadline(deadline)
	err := wire.WriteMessage(c, msg)
	if after {
		_ = c.Close()
	}
	return err
}

// connLife is one connection's life: done is closed when it ends, and
// queued is then the count of messages put on the session's msgs up to
// its end.
type connLife struct {
	done   chan struct{}
	queued uint64
}

// lost returns the current connection's life (one already ended while
// disconnected). The hub answers a request on the connection it came by,
// so a call waiting for an answer stops at the loss instead of waiting out
// its timeout.
func (s *Session) lost() *connLife {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.life == nil {
		l := &connLife{done: make(chan struct{}), queued: s.queued.Load()}
		close(l.done)
		return l
	}
	return s.life
}

// errFault is the connection loss a test's fault hook caused.
var errFault = errors.New("m2mclient: connection dropped by the fault hook")

// Close ends the session: it closes the connection, stops reconnecting and
// waits for the session's goroutines.
func (s *Session) Close() error {
	s.cancel()
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		_ = c.SetDeadline(time.Now())
	}
	s.wg.Wait()
	// Started (or not) for good: a Router asked for after Close is never
	// started, since routerOnce is spent here.
	s.routerOnce.Do(func() {})
	if s.router != nil {
		_ = s.router.Close()
	}
	return nil
}

// run owns the connection: it serves one, and when it ends reconnects with
// backoff, until Close or a permanent refusal.
func (s *Session) run(c *noiseconn.Conn) {
	defer s.wg.Done()
	defer close(s.msgs)
	for {
		err := s.serve(c)
		if s.stopFor(err) || s.ctx.Err() != nil {
			return
		}
		s.log.Info("disconnected from hub, reconnecting", "err", err)
		// The instance that dropped the connection may be dead: start
		// at the next one (with one address, the same one).
		s.cur = (s.cur + 1) % len(s.addrs)
		c, err = s.connectRetry(s.ctx)
		if err != nil {
			s.stopFor(err)
			return
		}
		s.mu.Lock()
		s.connAddr = s.addrs[s.cur]
		s.mu.Unlock()
		s.log.Info("reconnected to hub", "addr", s.addrs[s.cur])
	}
}

// stopFor records err as the session's end if it is a permanent refusal, or
// "replaced": this Session holds one connection at a time, so a replacement
// means another process uses the same key, and reconnecting would only make
// the two evict each other forever.
func (s *Session) stopFor(err error) bool {
	var re *RefusedError
	if !errors.As(err, &re) || !(re.Permanent() || re.Code == CodeReplaced) {
		return false
	}
	s.mu.Lock()
	s.err = re
	s.mu.Unlock()
	s.log.Warn("hub refused this device, not reconnecting", "code", re.Code, "message", re.Message)
	return true
}

// serve runs one live connection until it fails or the session closes. The
// reader runs in its own goroutine; this one sends pings and watches the
// answers.
func (s *Session) serve(c *noiseconn.Conn) error {
	s.mu.Lock()
	if s.conn != c || s.life == nil {
		s.life = &connLife{done: make(chan struct{})}
	}
	s.conn = c
	s.mu.Unlock()
	s.hookMu.RLock()
	for _, f := range s.hooks {
		f()
	}
	s.hookMu.RUnlock()
	defer func() {
		s.mu.Lock()
		s.conn = nil
		// The read loop has returned: nothing more is queued from
		// this connection.
		s.life.queued = s.queued.Load()
		close(s.life.done)
		s.mu.Unlock()
		_ = c.Close()
	}()

	pongs := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- s.readLoop(c, pongs) }()

	t := time.NewTicker(s.opt.pingInterval)
	defer t.Stop()
	answered := true
	for {
		select {
		case err := <-readErr:
			return err
		case <-s.ctx.Done():
			_ = c.SetDeadline(time.Now())
			<-readErr
			return ErrClosed
		case <-pongs:
			answered = true
		case <-t.C:
			if !answered {
				_ = c.SetDeadline(time.Now())
				<-readErr
				return errors.New("m2mclient: hub did not answer ping")
			}
			answered = false
			if err := s.write(s.ctx, c, wire.NewPing(0)); err != nil {
				_ = c.SetDeadline(time.Now())
				<-readErr
				return err
			}
		}
	}
}

func (s *Session) readLoop(c *noiseconn.Conn, pongs chan<- struct{}) error {
	for {
		msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *wire.Ping:
			if err := s.write(s.ctx, c, wire.NewPong(make([]byte, m.NumPongBytes))); err != nil {
				return err
			}
		case *wire.Pong:
			select {
			case pongs <- struct{}{}:
			default:
			}
		case *wire.Error:
			ce := wire.ParseError(m)
			return &RefusedError{Code: string(ce.Code), Message: ce.Message}
		case *wire.Warning:
			s.log.Warn("hub warning", "data", string(m.Data))
		default:
			// Custom messages reach the caller whether wire.DecodeMessage
			// returned one of m2mhub's own types (*wire.Pay …) or an
			// *wire.Custom it does not know.
			if msg.MsgType() < wire.CustomTypeStart {
				s.log.Debug("ignoring hub message", "type", msg.MsgType())
				continue
			}
			before, after := s.opt.fault.At(false, msg)
			if before {
				return errFault
			}
			select {
			case s.msgs <- msg:
				s.queued.Add(1)
			case <-s.ctx.Done():
				return ErrClosed
			}
			if after {
				return errFault
			}
		}
	}
}

// connectRetry connects, retrying transient failures with jittered
// exponential backoff until ctx is done.
func (s *Session) connectRetry(ctx context.Context) (*noiseconn.Conn, error) {
	wait := s.opt.backoffMin
	closedHandshakes := 0
	for start := s.cur; ; {
		c, err := s.connect(ctx, s.addrs[s.cur])
		if err == nil {
			return c, nil
		}
		var re *RefusedError
		if errors.As(err, &re) && re.Permanent() {
			return nil, err
		}
		// A hub that closes every handshake before answering cannot
		// read them: the pinned key is not its. A hub shedding
		// handshakes under a flood does the same now and then, so this
		// only names the likely cause when the attempts run out; it
		// never stops the retries.
		// An attempt cut short by ctx's end says nothing about the
		// hub, so it leaves the count as it was.
		switch {
		case closedHandshake(err):
			closedHandshakes++
		case !cutShort(ctx, err):
			closedHandshakes = 0
		}

		// Try the other instances at once; back off once every one
		// has failed.
		s.cur = (s.cur + 1) % len(s.addrs)
		if s.cur != start && ctx.Err() == nil {
			s.log.Debug("connect failed, trying the next instance", "err", err, "next", s.addrs[s.cur])
			continue
		}
		s.log.Debug("connect failed", "err", err, "retry_in", wait)
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			if closedHandshakes >= handshakeClosesForMismatch {
				return nil, fmt.Errorf("%w: %w (pinned %x; the last %d handshakes were closed unanswered, the last with: %w)",
					ctx.Err(), ErrHubKeyMismatch, s.hubKey.SerializeCompressed(), closedHandshakes, err)
			}
			return nil, fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(wait*2, s.opt.backoffMax)
	}
}

// cutShort reports whether an attempt's err came from ctx ending: ctx is
// done, or the attempt timed out at ctx's deadline, which the socket's
// deadline can reach a moment before ctx's own timer marks ctx done.
func cutShort(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d)
}

// handshakeClosesForMismatch is how many handshakes in a row the hub must
// have closed unanswered for Dial's deadline error to name
// ErrHubKeyMismatch.
const handshakeClosesForMismatch = 3

// closedHandshake reports whether err is the hub closing the connection
// during the noise handshake (after TCP connected): EOF or a reset, not
// a dial failure.
func closedHandshake(err error) bool {
	if _, ok := errors.AsType[*handshakeError](err); !ok {
		return false
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// handshakeError is a failure of the TCP dial or the noise handshake.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "noise handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// connect makes one attempt at addr: TCP, noise handshake, optional Enrol,
// Init exchange. A host name that resolves to several addresses is tried
// at each in turn, until one answers.
func (s *Session) connect(ctx context.Context, addr string) (*noiseconn.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	for i, ip := range ips {
		c, err := s.connectTCP(ctx, net.JoinHostPort(ip, port))
		if err == nil || i == len(ips)-1 {
			return c, err
		}
		var re *RefusedError
		if errors.As(err, &re) && re.Permanent() {
			return nil, err
		}
	}
	return nil, fmt.Errorf("m2mclient: %s resolves to no address", host)
}

// connectTCP is connect at one resolved address.
func (s *Session) connectTCP(ctx context.Context, addr string) (*noiseconn.Conn, error) {
	deadline := time.Now().Add(s.opt.dialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dialer := net.Dialer{Deadline: deadline}
	tcp, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &handshakeError{err}
	}
	c, err := noiseconn.Dial(tcp, &keychain.PrivKeyECDH{PrivKey: s.deviceKey}, s.hubKey, deadline)
	if err != nil {
		return nil, &handshakeError{err}
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	c, err = s.hello(c)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// hello sends Enrol (with a token) and Init, and reads the hub's answer.
func (s *Session) hello(c *noiseconn.Conn) (*noiseconn.Conn, error) {
	if s.opt.token != nil {
		enrol := &wire.Enrol{Token: s.opt.token}
		dropBefore, dropAfter := s.opt.fault.At(true, enrol)
		if dropBefore {
			return c, errFault
		}
		if err := wire.WriteMessage(c, enrol); err != nil {
			return c, err
		}
		if dropAfter {
			return c, errFault
		}
	}
	if err := wire.WriteMessage(c, wire.NewInit()); err != nil {
		return c, err
	}
	msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
	if err != nil {
		return c, err
	}
	switch m := msg.(type) {
	case *wire.Init:
		return c, wire.CheckInit(m)
	case *wire.Error:
		ce := wire.ParseError(m)
		return c, &RefusedError{Code: string(ce.Code), Message: ce.Message}
	}
	return c, fmt.Errorf("%w: hub answered init with %v", wire.ErrProtocol, msg.MsgType())
}
