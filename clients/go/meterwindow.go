package m2mclient

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultMeterWindowTTL is how long an event counts in a Meter's window
// (MeterConfig.Window) without an answer.
const DefaultMeterWindowTTL = time.Minute

// window bounds the events a Meter has published that the hub has not
// answered yet (by a receipt or an unpaid notice): the provider's share of
// back-pressure, so a provider publishing faster than its payers are
// charged waits for its receipts instead of piling events up in front of
// the hub. An event no answer comes for (dead-lettered, its payer
// offline, its notice missed) stops counting after ttl.
type window struct {
	size int
	ttl  time.Duration

	mu  sync.Mutex
	out map[string]time.Time // event id → when it was let through
	// wake is closed, and replaced, whenever events leave the window.
	wake chan struct{}
}

func newWindow(size int, ttl time.Duration) *window {
	return &window{size: size, ttl: ttl, out: map[string]time.Time{}, wake: make(chan struct{})}
}

// acquire waits until ids fit in the window and counts them in: they fit
// when the window holds size or fewer events with them, or holds none (a
// batch larger than the window goes alone). It returns ctx's error, or
// ErrMeterClosed once closed is.
func (w *window) acquire(ctx context.Context, closed <-chan struct{}, ids []string) error {
	for {
		now := time.Now()
		w.mu.Lock()
		oldest := w.expireLocked(now)
		if len(w.out) == 0 || len(w.out)+len(ids) <= w.size {
			for _, id := range ids {
				w.out[id] = now
			}
			w.mu.Unlock()
			return nil
		}
		wake := w.wake
		w.mu.Unlock()
		timer := time.NewTimer(oldest.Add(w.ttl).Sub(now))
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("m2mclient: waiting for receipts (%d events unanswered): %w", w.len(), ctx.Err())
		case <-closed:
			timer.Stop()
			return ErrMeterClosed
		}
		timer.Stop()
	}
}

// expireLocked drops the events counted in longer than ttl ago and
// returns when the oldest left was counted in.
func (w *window) expireLocked(now time.Time) time.Time {
	oldest := now
	dropped := false
	for id, at := range w.out {
		if now.Sub(at) >= w.ttl {
			delete(w.out, id)
			dropped = true
		} else if at.Before(oldest) {
			oldest = at
		}
	}
	if dropped {
		w.wakeLocked()
	}
	return oldest
}

// release drops ids from the window (answered, or never published).
func (w *window) release(ids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.out)
	for _, id := range ids {
		delete(w.out, id)
	}
	if len(w.out) < n {
		w.wakeLocked()
	}
}

func (w *window) wakeLocked() {
	close(w.wake)
	w.wake = make(chan struct{})
}

func (w *window) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.out)
}
