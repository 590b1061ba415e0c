package regtest

import (
	"io"
	"net"
	"sync"
	"time"
)

// rpcProxy is the Supervisor's stable RPC address: a loopback TCP relay to
// the RPC port of the btcd running now. TLS passes through untouched (the
// certificate names 127.0.0.1, where the relay listens too). While no node
// is ready, which includes the replay of the chain after a restart, it
// closes every connection at once, so clients see the chain as unavailable
// rather than as a chain at height 0 that is still being rebuilt.
type rpcProxy struct {
	ln net.Listener

	mu     sync.Mutex
	target string // "" while no node is ready
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// dialTimeout bounds connecting to btcd, which is on the same host.
const dialTimeout = 2 * time.Second

func newRPCProxy() (*rpcProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &rpcProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// addr returns the relay's address, "127.0.0.1:port".
func (p *rpcProxy) addr() string { return p.ln.Addr().String() }

// setTarget points new connections at host, or refuses them when host is "".
// Connections already relayed to an old target end with it.
func (p *rpcProxy) setTarget(host string) {
	p.mu.Lock()
	p.target = host
	p.mu.Unlock()
}

// track adds c to the open connections, or reports false once closed.
func (p *rpcProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *rpcProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *rpcProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.relay(c)
	}
}

// relay copies between the client c and btcd until either side closes.
func (p *rpcProxy) relay(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target == "" {
		return
	}
	up, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		// The request is complete: let btcd see the end of it.
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(c, up)
	// btcd closed (it answers every call with Connection: close) or
	// died: end the client's side too, which ends the other copy.
	c.Close()
	up.Close()
	<-done
}

// close stops accepting, ends every relayed connection and waits for the
// relay's goroutines.
func (p *rpcProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
