package channels

import (
	"context"
	"sync"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// DefaultPaySlots is how many of the devices' own payments the hub works
// on at once. It is enough to keep both the signature checks and the
// store's group commit busy; beyond it a payment waits for a slot instead
// of adding to the queue in front of every other payment.
const DefaultPaySlots = 64

// admit waits for a slot for payment m of payer and returns the function
// that gives it back. A payment answering one of the hub's own charge
// requests skips the wait: metered charges are the providers' income, and
// without a way past the devices' own payments they would queue behind
// them for as long as a fleet pays flat out (the devices are the source
// that overloads, so they are the ones held back). It fails only when ctx
// ends while waiting.
func (c *Manager) admit(ctx context.Context, payer string, m *wire.Pay) (func(), error) {
	if id, _ := c.chargeRequest(payer, m); id != 0 {
		return func() {}, nil
	}
	return c.slots.take(ctx, payer)
}

// paySlots admits payments: ch holds one token per ordinary payment being
// worked on.
//
// A device pays one payment at a time on a channel, and its session's
// messages are handled in order: while its own payment waits here for a
// slot, the payment answering a charge request sent meanwhile cannot even
// be read. So each charge request sent to a payer grants it one pass: an
// own payment of that payer waiting (or arriving) takes the pass instead
// of a slot, and the charge payment behind it follows at once. A pass not
// used is withdrawn when its request ends, so a device that never answers
// its charges gets no more than one pass per request outstanding.
type paySlots struct {
	ch chan struct{}

	mu      sync.Mutex
	passes  map[string]int         // payer → passes granted, not yet used
	waiting map[string]*slotWaiter // payer → its own payments waiting for a slot
}

// slotWaiter is closed when a pass is granted to the payer its payments
// wait for.
type slotWaiter struct {
	wake chan struct{}
	n    int // payments waiting on wake
}

// take waits for a slot, or for a pass of payer, and returns the function
// that gives a slot back (nothing, for a pass).
func (s *paySlots) take(ctx context.Context, payer string) (func(), error) {
	for {
		s.mu.Lock()
		if s.passes[payer] > 0 {
			s.spend(payer)
			s.mu.Unlock()
			return func() {}, nil
		}
		if s.waiting == nil {
			s.waiting = make(map[string]*slotWaiter)
		}
		w := s.waiting[payer]
		if w == nil {
			w = &slotWaiter{wake: make(chan struct{})}
			s.waiting[payer] = w
		}
		w.n++
		s.mu.Unlock()

		select {
		case s.ch <- struct{}{}:
			s.leave(payer, w)
			return func() { <-s.ch }, nil
		case <-w.wake:
			s.leave(payer, w) // a pass was granted: take it, if still there
		case <-ctx.Done():
			s.leave(payer, w)
			return nil, ctx.Err()
		}
	}
}

// leave takes one payment off w.
func (s *paySlots) leave(payer string, w *slotWaiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.n--
	if w.n == 0 && s.waiting[payer] == w {
		delete(s.waiting, payer)
	}
}

// grant gives payer one pass and wakes its payments waiting for a slot.
func (s *paySlots) grant(payer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passes == nil {
		s.passes = make(map[string]int)
	}
	s.passes[payer]++
	if w := s.waiting[payer]; w != nil {
		close(w.wake)
		delete(s.waiting, payer)
	}
}

// withdraw takes back one unused pass of payer, if it has one: the charge
// request that granted it has ended.
func (s *paySlots) withdraw(payer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passes[payer] > 0 {
		s.spend(payer)
	}
}

// spend uses one pass of payer; s.mu is held.
func (s *paySlots) spend(payer string) {
	if s.passes[payer]--; s.passes[payer] == 0 {
		delete(s.passes, payer)
	}
}
