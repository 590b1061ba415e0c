package m2mclient

import (
	"sync"

	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// faultHook drops the session's connection at one chosen message boundary,
// for the disconnect trials (the way core-lightning's dev-disconnect
// works). It is set only by tests, through an option defined in a test
// file, so it is no part of the package's API. It counts the m2mhub
// messages of one direction, leaving out the resynchronisation a
// reconnect itself causes, and fires once.
type faultHook struct {
	mu     sync.Mutex
	send   bool // count sent messages (else received)
	k      int  // fire at the k-th counted message; 0 = disarmed
	before bool // drop the message itself (else pass it, then drop)
	n      int
	fired  bool
}

// arm sets the boundary: the k-th message sent (or received), dropped with
// the connection (before) or passed just before the connection drops.
func (f *faultHook) arm(send bool, k int, before bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.send, f.k, f.before, f.n, f.fired = send, k, before, 0, false
}

// hasFired reports whether the armed fault dropped a connection.
func (f *faultHook) hasFired() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// at counts msg in its direction and says whether to drop the connection
// before or after passing it.
func (f *faultHook) at(send bool, msg lnwire.Message) (dropBefore, dropAfter bool) {
	if f == nil || msg.MsgType() < lnwire.CustomTypeStart {
		return false, false
	}
	switch msg.(type) {
	case *wire.ChannelSync, *wire.ChannelState:
		return false, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.k == 0 || f.fired || f.send != send {
		return false, false
	}
	f.n++
	if f.n != f.k {
		return false, false
	}
	f.fired = true
	return f.before, !f.before
}
