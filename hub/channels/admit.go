package channels

import (
	"context"

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
	select {
	case c.slots.ch <- struct{}{}:
		return func() { <-c.slots.ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// paySlots admits payments: ch holds one token per ordinary payment being
// worked on.
type paySlots struct {
	ch chan struct{}
}
