package m2mclient

import "sync"

// opLock serialises the operations on one channel (devChannel.op), with a
// fast lane: a payment answering the hub's payment request (a metered
// charge, a hold capture) goes before the device's own operations waiting
// for the channel. The provider waits for that payment's receipt, and the
// device's own payments, queued one behind another by a busy application,
// would otherwise hold it up for as long as they keep coming. Its zero
// value is unlocked.
type opLock struct {
	mu      sync.Mutex
	cond    sync.Cond
	held    bool
	urgent  int // fast-lane operations waiting
	waiting int // other operations waiting
}

// Lock waits for the channel behind every fast-lane operation waiting.
func (l *opLock) Lock() { l.lock(false) }

// LockFirst waits for the channel ahead of the operations Lock waits for.
func (l *opLock) LockFirst() { l.lock(true) }

func (l *opLock) lock(first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond.L == nil {
		l.cond.L = &l.mu
	}
	if first {
		l.urgent++
		for l.held {
			l.cond.Wait()
		}
		l.urgent--
	} else {
		l.waiting++
		for l.held || l.urgent > 0 {
			l.cond.Wait()
		}
		l.waiting--
	}
	l.held = true
}

// Unlock gives the channel to the next operation.
func (l *opLock) Unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		panic("m2mclient: unlock of an unlocked channel")
	}
	l.held = false
	l.cond.Broadcast()
}
