package httpapi

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits bound one HTTP listener of hubd (the admin API, the metrics) so
// that idle or slow clients cannot hold its descriptors: a connection cap,
// and timeouts that close what idles or dawdles.
type Limits struct {
	// MaxConns is how many connections are open at once; at the cap the
	// oldest idle keep-alive connection is closed to make room, and with
	// none idle new connections wait in the kernel's backlog.
	MaxConns int
	// ReadHeaderTimeout bounds a request's headers, and a new
	// connection's wait for its first request.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its answer.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle that long.
	IdleTimeout time.Duration
}

// maxHeaderBytes bounds a request's headers; admin requests carry a
// bearer token and little else.
const maxHeaderBytes = 64 << 10

// NewServer returns an HTTP server for h with lim's timeouts, and ln
// wrapped to hold at most lim.MaxConns connections. Serve the server on
// the listener it returns.
func NewServer(h http.Handler, ln net.Listener, lim Limits) (*http.Server, net.Listener, error) {
	if lim.MaxConns < 1 || lim.ReadHeaderTimeout <= 0 || lim.ReadTimeout <= 0 || lim.WriteTimeout <= 0 || lim.IdleTimeout <= 0 {
		return nil, nil, errors.New("httpapi: listener limits need a connection cap and every timeout")
	}
	l := &limitListener{
		Listener: ln, slots: make(chan struct{}, lim.MaxConns),
		done: make(chan struct{}), idled: make(chan struct{}, 1), idle: map[*limitConn]time.Time{},
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         l.track,
	}
	return srv, l, nil
}

// limitListener is a net.Listener that holds at most cap(slots)
// connections. Before each Accept it takes a slot; when none is free it
// closes the connection idle longest, so a flood of idle keep-alive
// connections cannot lock an operator out, and otherwise waits for one to
// close.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	idled     chan struct{} // a connection went idle: one may be evicted
	closeOnce sync.Once

	mu   sync.Mutex
	idle map[*limitConn]time.Time // since when each idle connection idles
}

// Accept waits for a slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	if !l.acquire() {
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

func (l *limitListener) acquire() bool {
	for {
		select {
		case l.slots <- struct{}{}:
			return true
		default:
		}
		l.evictIdle()
		select {
		case l.slots <- struct{}{}:
			return true
		case <-l.idled:
		case <-l.done:
			return false
		}
	}
}

// evictIdle closes the connection idle longest, if any idles.
func (l *limitListener) evictIdle() {
	l.mu.Lock()
	var oldest *limitConn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.Close()
	}
}

// track is the server's ConnState hook: it keeps the set of idle
// connections evictIdle picks from.
func (l *limitListener) track(c net.Conn, s http.ConnState) {
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s == http.StateIdle {
		l.idle[lc] = time.Now()
		select {
		case l.idled <- struct{}{}:
		default:
		}
		return
	}
	delete(l.idle, lc)
}

// Close stops Accept, including one waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back once, when closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.l.slots })
	return err
}
