package channels

import (
	"context"
	"testing"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
)

// FillPaySlots takes every slot of the devices' own payments, as that
// many payments in progress would, and returns the function that frees
// them.
func FillPaySlots(c *Manager) (free func()) {
	for range cap(c.slots.ch) {
		c.slots.ch <- struct{}{}
	}
	return func() {
		for range cap(c.slots.ch) {
			<-c.slots.ch
		}
	}
}

// WaitPayWaiting returns once a payment of payer waits for a pay slot.
func WaitPayWaiting(t testing.TB, c *Manager, payer string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.slots.mu.Lock()
		w := c.slots.waiting[payer]
		c.slots.mu.Unlock()
		if w != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no payment of %s waits for a slot", payer)
		}
		time.Sleep(time.Millisecond)
	}
}

// LockChannel takes the lock of the cached channel funded by op, as a
// payment in its durable write holds it, and returns the function that
// gives it back.
func LockChannel(t testing.TB, c *Manager, op btcwire.OutPoint) (unlock func()) {
	t.Helper()
	e, err := c.entry(context.Background(), op)
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	return e.mu.Unlock
}

// TryShareChannel reports whether the charge lock of the cached channel
// funded by op can be taken as RecordCharges takes it (shared) right now,
// and whether as a close, hold or freeze takes it (exclusive, lock).
// Whatever it takes it gives back at once.
func TryShareChannel(t testing.TB, c *Manager, op btcwire.OutPoint) (shared, exclusive bool) {
	t.Helper()
	e, err := c.entry(context.Background(), op)
	if err != nil {
		t.Fatal(err)
	}
	if shared = e.chargeMu.TryRLock(); shared {
		e.chargeMu.RUnlock()
	}
	if exclusive = e.chargeMu.TryLock(); exclusive {
		e.chargeMu.Unlock()
	}
	return shared, exclusive
}
