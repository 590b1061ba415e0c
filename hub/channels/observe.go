package channels

import (
	"errors"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// PayObserver sees the outcome of every payment a session sends, so an
// adapter (hub/metrics) can count and time them. Its methods run on the
// session's goroutine once the answer is decided and must not block.
type PayObserver interface {
	// PaymentAccepted is called once a payment is durable and its
	// acknowledgement built; d is the time Pay took.
	PaymentAccepted(amount msat.Amount, d time.Duration)
	// PaymentRefused is called with the refusal's wire code, "internal"
	// for a failure that is not a refusal.
	PaymentRefused(code string)
}

// observePay reports one payment's outcome to the configured observer.
// start comes from the wall clock, not the injected one: this measures
// how long the hub worked, which a test clock would report as zero.
func (c *Manager) observePay(m *wire.Pay, start time.Time, err error) {
	o := c.cfg.PayObserver
	if o == nil {
		return
	}
	if err == nil {
		o.PaymentAccepted(m.Amount, time.Since(start))
		return
	}
	var ce *wire.ChannelError
	if errors.As(err, &ce) {
		o.PaymentRefused(string(ce.Code))
		return
	}
	o.PaymentRefused(string(wire.ChanInternal))
}
