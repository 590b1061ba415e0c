package charging

import (
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
