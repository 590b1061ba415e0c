// Package msgfault drops a connection at one chosen message boundary, for
// the disconnect trials of the client and the hub (the way core-lightning's
// dev-disconnect works). Only tests arm one: the product carries a nil
// *Point, which never fires.
package msgfault

import (
	"sync"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// Point counts the m2mhub messages of one direction of one connection's
// owner, leaving out the resynchronisation (ChannelSync, ChannelState) a
// reconnect itself causes, and fires once at the armed boundary. A nil
// *Point is disarmed. It is safe for concurrent use.
type Point struct {
	mu     sync.Mutex
	send   bool // count sent messages (else received)
	k      int  // fire at the k-th counted message; 0 = disarmed
	before bool // drop the message itself (else pass it, then drop)
	n      int
	fired  bool
}

// Arm sets the boundary: the k-th message sent (send) or received, dropped
// with the connection (before) or passed just before the connection drops.
// It resets the count; k = 0 disarms.
func (p *Point) Arm(send bool, k int, before bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.send, p.k, p.before, p.n, p.fired = send, k, before, 0, false
}

// Fired reports whether the armed boundary was reached.
func (p *Point) Fired() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired
}

// At counts msg, sent (send) or received, and says whether to drop the
// connection instead of passing it (dropBefore) or right after passing it
// (dropAfter).
func (p *Point) At(send bool, msg wire.Message) (dropBefore, dropAfter bool) {
	if p == nil || msg.MsgType() < wire.CustomTypeStart {
		return false, false
	}
	switch msg.(type) {
	case *wire.ChannelSync, *wire.ChannelState:
		return false, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.k == 0 || p.fired || p.send != send {
		return false, false
	}
	p.n++
	if p.n != p.k {
		return false, false
	}
	p.fired = true
	return p.before, !p.before
}
