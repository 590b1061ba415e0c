// Package p2plisten accepts devices' TCP connections and runs the BOLT 8
// responder handshake on them, with bounds that lnd's brontide.Listener does
// not have: a cap on the connections in handshake in total and per source
// address, a short deadline per noise act, connections over a source's cap
// closed at once instead of queued, and fair admission when the total is
// full, so one flooding host cannot lock every other device out.
//
// The handshake steps follow lnd's brontide/listener.go (MIT licence,
// Lightning Labs), which the hub used unmodified before; the noise machine
// itself is brontide's (NewBrontideMachine, RecvActOne, GenActTwo,
// RecvActThree), so the cryptography is lnd's, not a copy.
package p2plisten

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"

	"github.com/m2mhub/m2mhub/internal/noiseconn"
)

// ErrClosed is returned by Accept once the listener is closed.
var ErrClosed = errors.New("p2plisten: listener closed")

// Defaults for Config.
const (
	// DefaultMaxHandshakes bounds the connections between TCP accept and
	// the end of their handshake, which is also their file descriptors.
	DefaultMaxHandshakes = 512
	// DefaultMaxHandshakesPerSource bounds the same per source address
	// (an IPv4 /32 or an IPv6 /64).
	DefaultMaxHandshakesPerSource = 8
	// DefaultActTimeout bounds each noise act the hub waits for (one and
	// three) and the write of act two. A device sends act one right after
	// connecting and act three one round trip after act two, so 3 s
	// leaves room for a slow link and one TCP retransmission; lnd's
	// listener allows 5 s.
	DefaultActTimeout = 3 * time.Second
)

// Config configures a Listener. Zero values take the defaults above.
type Config struct {
	// Addr is the TCP listen address, e.g. ":9735" or "127.0.0.1:0".
	Addr string
	// Key is the responder's static key.
	Key keychain.SingleKeyECDH
	// MaxHandshakes bounds the connections in handshake at once: from TCP
	// accept until the caller ends the handshake (Conn.EndHandshake) or
	// closes the connection. It is the listener's file descriptor budget.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds the same per source: an IPv4 address,
	// or an IPv6 /64 (one host's usual allocation). A connection beyond
	// it is closed as soon as it is accepted.
	MaxHandshakesPerSource int
	// ActTimeout bounds each noise act.
	ActTimeout time.Duration
	// Logger receives refused and failed handshakes at debug level.
	Logger *slog.Logger
}

// Listener accepts TCP connections, runs the noise handshake on each in its
// own goroutine, and hands the ones that complete it to Accept.
//
// Admission, per accepted TCP connection: if its source already holds
// MaxHandshakesPerSource slots, it is closed at once. If all MaxHandshakes
// slots are held, the oldest connection of the source holding the most
// slots is closed to make room, provided that source holds more than the
// newcomer's; otherwise the newcomer is closed. So a source never takes a
// slot from one holding fewer: a flood from a few sources cannot push out a
// device from another, and legitimate handshakes, which finish in a round
// trip or two, are not the oldest.
type Listener struct {
	cfg Config
	log *slog.Logger
	tcp *net.TCPListener

	conns chan *Conn
	quit  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	seq      uint64
	total    int
	bySource map[string][]*slot // slots held, oldest first
}

// slot is one connection's place in the handshake budget.
type slot struct {
	src  string
	seq  uint64   // admission order, for "oldest"
	conn net.Conn // closed when the slot is taken away
	done bool     // released; further releases do nothing
}

// Listen starts listening on cfg.Addr. The listener runs until Close.
func Listen(cfg Config) (*Listener, error) {
	if cfg.Key == nil {
		return nil, errors.New("p2plisten: no static key")
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.MaxHandshakesPerSource <= 0 {
		cfg.MaxHandshakesPerSource = DefaultMaxHandshakesPerSource
	}
	if cfg.ActTimeout <= 0 {
		cfg.ActTimeout = DefaultActTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("p2plisten: %w", err)
	}
	tcp, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("p2plisten: %w", err)
	}
	l := &Listener{
		cfg:      cfg,
		log:      cfg.Logger,
		tcp:      tcp,
		conns:    make(chan *Conn),
		quit:     make(chan struct{}),
		bySource: make(map[string][]*slot),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr returns the address the listener listens on.
func (l *Listener) Addr() net.Addr { return l.tcp.Addr() }

// Handshakes returns the number of connections holding a handshake slot.
func (l *Listener) Handshakes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Accept returns the next connection that completed the noise handshake. It
// still holds its handshake slot: the caller ends it with EndHandshake once
// it has authenticated the device, or by closing the connection. Accept
// returns ErrClosed once the listener is closed.
func (l *Listener) Accept() (*Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.quit:
		return nil, ErrClosed
	}
}

// Close stops accepting, ends every handshake in progress, and waits for the
// listener's goroutines. Connections already returned by Accept belong to
// the caller, but those still holding a slot have their deadlines moved to
// now, so a read waiting for the device's first message fails at once.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.quit)
	now := time.Now()
	for _, slots := range l.bySource {
		for _, sl := range slots {
			_ = sl.conn.SetDeadline(now)
		}
	}
	l.mu.Unlock()
	err := l.tcp.Close()
	l.wg.Wait()
	return err
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.tcp.Accept()
		if err != nil {
			select {
			case <-l.quit:
				return
			default:
			}
			// Out of file descriptors, most likely: wait a little, as
			// net/http's Server does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("p2p accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.quit:
				return
			}
			continue
		}
		backoff = 0
		sl, evicted, ok := l.admit(c)
		if evicted != nil {
			closeNow(evicted)
		}
		if !ok {
			l.log.Debug("p2p connection refused: handshake slots full", "remote", c.RemoteAddr())
			closeNow(c)
			continue
		}
		l.wg.Add(1)
		go l.handshake(c, sl)
	}
}

// admit takes a handshake slot for c, or reports false. When the budget is
// full it may take one from the source holding the most; the connection
// holding it is returned to be closed.
func (l *Listener) admit(c net.Conn) (*slot, net.Conn, bool) {
	src := SourceOf(c.RemoteAddr())
	l.mu.Lock()
	defer l.mu.Unlock()
	held := len(l.bySource[src])
	if l.closed || held >= l.cfg.MaxHandshakesPerSource {
		return nil, nil, false
	}
	var evicted net.Conn
	if l.total >= l.cfg.MaxHandshakes {
		victim := l.largestLocked()
		if victim == nil || len(l.bySource[victim.src]) <= held {
			return nil, nil, false
		}
		l.releaseLocked(victim)
		evicted = victim.conn
	}
	l.seq++
	sl := &slot{src: src, seq: l.seq, conn: c}
	l.bySource[src] = append(l.bySource[src], sl)
	l.total++
	return sl, evicted, true
}

// largestLocked returns the oldest slot of the source holding the most
// (the oldest such source on a tie).
func (l *Listener) largestLocked() *slot {
	var best *slot
	for _, slots := range l.bySource {
		head := slots[0]
		if best == nil || len(slots) > len(l.bySource[best.src]) ||
			len(slots) == len(l.bySource[best.src]) && head.seq < best.seq {
			best = head
		}
	}
	return best
}

func (l *Listener) release(sl *slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(sl)
}

func (l *Listener) releaseLocked(sl *slot) {
	if sl.done {
		return
	}
	sl.done = true
	l.total--
	slots := l.bySource[sl.src]
	for i, s := range slots {
		if s == sl {
			slots = append(slots[:i], slots[i+1:]...)
			break
		}
	}
	if len(slots) == 0 {
		delete(l.bySource, sl.src)
		return
	}
	l.bySource[sl.src] = slots
}

// handshake runs the responder's side of the noise acts on c and hands the
// result to Accept. The slot stays held by the returned Conn.
func (l *Listener) handshake(c net.Conn, sl *slot) {
	defer l.wg.Done()
	conn, err := l.respond(c, sl)
	if err != nil {
		l.log.Debug("p2p handshake failed", "remote", c.RemoteAddr(), "err", err)
		l.release(sl)
		closeNow(c)
		return
	}
	select {
	case l.conns <- conn:
	case <-l.quit:
		_ = conn.Close()
	}
}

// respond runs acts one to three, each within ActTimeout, as lnd's
// brontide.Listener.doHandshake does.
func (l *Listener) respond(c net.Conn, sl *slot) (*Conn, error) {
	noise := brontide.NewBrontideMachine(false, l.cfg.Key, nil)
	var actOne [brontide.ActOneSize]byte
	if err := l.arm(c.SetReadDeadline); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, actOne[:]); err != nil {
		return nil, fmt.Errorf("act one: %w", err)
	}
	if err := noise.RecvActOne(actOne); err != nil {
		return nil, err
	}
	actTwo, err := noise.GenActTwo()
	if err != nil {
		return nil, err
	}
	if err := l.arm(c.SetWriteDeadline); err != nil {
		return nil, err
	}
	if _, err := c.Write(actTwo[:]); err != nil {
		return nil, fmt.Errorf("act two: %w", err)
	}
	var actThree [brontide.ActThreeSize]byte
	if err := l.arm(c.SetReadDeadline); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, actThree[:]); err != nil {
		return nil, fmt.Errorf("act three: %w", err)
	}
	remote, err := remoteStatic(noise, actThree)
	if err != nil {
		return nil, err
	}
	if err := noise.RecvActThree(actThree); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return &Conn{Conn: noiseconn.New(c, noise), remote: remote, l: l, slot: sl}, nil
}

// arm sets one act's deadline. It reports ErrClosed if the listener is
// closing: Close moves every slot's deadline to now after it closes quit,
// so a deadline set here before that check cannot outlive Close.
func (l *Listener) arm(set func(time.Time) error) error {
	_ = set(time.Now().Add(l.cfg.ActTimeout))
	select {
	case <-l.quit:
		return ErrClosed
	default:
		return nil
	}
}

// remoteStatic returns the initiator's static key that act three carries.
// brontide.Machine learns it in RecvActThree but keeps it unexported (only
// its own Conn reads it), so it is decrypted here the same way on a copy of
// the machine's state, which RecvActThree then authenticates: act three's
// final tag verifies only if the initiator holds this key. The copy shares
// nothing mutable with the original (the AEAD is stateless; the nonce and
// the handshake digest are values).
func remoteStatic(noise *brontide.Machine, actThree [brontide.ActThreeSize]byte) (*btcec.PublicKey, error) {
	if actThree[0] != brontide.HandshakeVersion {
		return nil, fmt.Errorf("act three: invalid handshake version %d", actThree[0])
	}
	probe := *noise
	pub, err := probe.DecryptAndHash(actThree[1 : 1+33+16])
	if err != nil {
		return nil, fmt.Errorf("act three: %w", err)
	}
	return btcec.ParsePubKey(pub)
}

// closeNow closes c with a reset rather than a FIN, so a refused
// connection leaves no TIME_WAIT state behind on the hub.
func closeNow(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// SourceOf returns the admission source of a remote address: the IPv4
// address, or the IPv6 /64 prefix.
func SourceOf(a net.Addr) string {
	var ip net.IP
	switch ta := a.(type) {
	case *net.TCPAddr:
		ip = ta.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	if len(ip) == net.IPv6len {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return a.String()
}
