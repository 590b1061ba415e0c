package charging

import (
	"context"
	"strings"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/msat"
)

// Income sums a provider's charges recorded in [From, To).
type Income struct {
	Provider string    `json:"provider"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	// Events counts the charges, holds included.
	Events int `json:"events"`
	// Earned is what paid charges bring the provider (amount − fee);
	// Fees is the hub's part of them.
	Earned msat.Amount `json:"earned_msat"`
	Fees   msat.Amount `json:"fees_msat"`
	// Owed is the provider's part of charges the payer has not paid yet;
	// Held the amounts held for conditional releases still open; Unpaid
	// the charges nobody will pay (no channel, credit limit).
	Owed   msat.Amount `json:"owed_msat"`
	Held   msat.Amount `json:"held_msat"`
	Unpaid msat.Amount `json:"unpaid_msat"`
	// Withheld is what conditional releases kept back from their holds
	// under their contracts (a shipment out of range refunded): not
	// unpaid, since nobody owes it.
	Withheld msat.Amount `json:"withheld_msat"`
}

// IncomeOf sums charges by status. It is pure, so the admin API and tests
// share it.
func IncomeOf(provider string, from, to time.Time, cs []hub.Charge) Income {
	in := Income{Provider: provider, From: from, To: to, Events: len(cs)}
	for _, c := range cs {
		in.Withheld += c.Withheld
		switch c.Status {
		case hub.ChargePaid:
			in.Earned += c.Amount - c.Fee
			in.Fees += c.Fee
		case hub.ChargeOwed:
			in.Owed += c.Amount - c.Fee
		case hub.ChargeHeld:
			in.Held += c.Amount
		case hub.ChargeUnpaid:
			// A resolved hold is closed unpaid so it is never paid
			// out; its end event's own charge says what was paid and
			// withheld.
			if !strings.HasPrefix(c.EventID, holdEventID("")) {
				in.Unpaid += c.Amount
			}
		}
	}
	return in
}

// Income returns a provider's income over the charges recorded in
// [from, to).
func (c *Service) Income(ctx context.Context, provider string, from, to time.Time) (Income, error) {
	cs, err := c.cfg.Charges.ChargesByProvider(ctx, provider, from, to)
	if err != nil {
		return Income{}, err
	}
	return IncomeOf(provider, from, to, cs), nil
}
