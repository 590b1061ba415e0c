package charging

import (
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
)

// Observer sees what charging does with each usage event, so an
// adapter (hub/metrics) can count events by contract kind and outcome. Its
// methods are called from charging's own goroutines and must not block.
type Observer interface {
	// EventCharged is called for every event recorded now, with its
	// contract's kind, the charge's status and amount.
	EventCharged(kind contracts.Kind, status hub.ChargeStatus, amount msat.Amount)
	// EventDuplicate is called for every event recorded before.
	EventDuplicate()
	// EventRejected is called with the Reject… reason of every event
	// charging refused.
	EventRejected(reason string)
	// EventsUnpaid is called when n events are reported unpaid to their
	// provider, with the Unpaid… reason.
	EventsUnpaid(reason string, n int)
	// ReceiptPublished is called for every group of owed charges whose
	// receipt was published, with how long it waited at each step.
	ReceiptPublished(w ChargeWaits)
}

// ChargeWaits is how long a group of owed charges, paid by one payment
// request, waited at each step from its first charge owed to its receipt
// published: where a provider's metered income waits.
type ChargeWaits struct {
	// Request is from the first charge owed to the request sent: the
	// flush interval, a request of the same payer and provider still
	// answered first, a request slot, the store's record of the request.
	Request time.Duration
	// Answer is from the request sent to the payer's payment heard: the
	// payer's own payment in flight before it, the hub's commit.
	Answer time.Duration
	// Receipt is from the payment heard to its receipt published.
	Receipt time.Duration
}

// observeTold reports the waits of groups whose receipts were published
// now. A group the scan settled from a stored payment has no times and
// is not reported.
func (c *Service) observeTold(gs []*payGroup) {
	if c.cfg.Observer == nil {
		return
	}
	now := c.clock.Now()
	for _, g := range gs {
		if g.owed.IsZero() || g.sent.IsZero() || g.answered.IsZero() {
			continue
		}
		c.cfg.Observer.ReceiptPublished(ChargeWaits{
			Request: g.sent.Sub(g.owed), Answer: g.answered.Sub(g.sent), Receipt: now.Sub(g.answered),
		})
	}
}

// observeRejected reports the rejected events of a batch that charging
// finished (a batch that failed is retried and reported then).
func (c *Service) observeRejected(out []Outcome) {
	if c.cfg.Observer == nil {
		return
	}
	for _, o := range out {
		if o.Rejected != "" {
			c.cfg.Observer.EventRejected(o.Rejected)
		}
	}
}
