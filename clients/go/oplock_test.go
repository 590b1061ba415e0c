package m2mclient

import (
	"testing"
	"time"
)

// TestOpLockFirst: while an operation the hub asked for waits for the
// channel, the device's own operations wait behind it even when the
// channel is free at that moment; LockFirst takes a channel others wait
// for; once no asked operation waits, the own one goes.
func TestOpLockFirst(t *testing.T) {
	var l opLock
	l.mu.Lock()
	l.urgent = 1 // an asked operation has queued and not yet run
	l.mu.Unlock()
	ownHas := make(chan struct{})
	go func() {
		l.Lock()
		close(ownHas)
		l.Unlock()
	}()
	waitOp(t, &l, func() bool { return l.waiting == 1 && !l.held })

	// The asked operation runs (the channel is free), then gives it back.
	l.mu.Lock()
	l.urgent = 0
	l.mu.Unlock()
	l.LockFirst()
	select {
	case <-ownHas:
		t.Fatal("the own operation ran while the asked one held the channel")
	default:
	}
	l.Unlock()
	select {
	case <-ownHas:
	case <-time.After(5 * time.Second):
		t.Fatal("the own operation never got the channel")
	}
}

// waitOp waits until cond, read under l's own mutex, holds.
func waitOp(t *testing.T, l *opLock, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		ok := cond()
		l.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the own operation is not waiting behind the asked one")
		}
		time.Sleep(time.Millisecond)
	}
}
