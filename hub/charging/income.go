package charging

import (
	"context"
	"strings"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/msat"
)

// Income sums a provider's charges recorded in [From, To), and its
// shares of other providers' charges under their contracts' revenue
// splits: what a site host or an e-mobility provider that meters nothing
// earns. What paid charges brought (Earned, Fees, Shared) is counted by
// when they were paid (hub.Charge.Paid), as settlement posts fees and
// shares, so an epoch's income is what its settlement pays; charges paid
// without a paid time count by when they were recorded.
type Income struct {
	Provider string    `json:"provider"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	// Events counts the provider's own charges, holds included;
	// ShareEvents the other providers' charges it has a share of.
	Events      int `json:"events"`
	ShareEvents int `json:"share_events"`
	// Earned is what paid charges bring the provider: of its own,
	// amount − fee − the other payees' shares; of the others', its
	// share. Fees is the hub's part of its own paid charges, Shared what
	// they paid other payees, so its own paid charges' amounts are
	// Fees + Shared + what of Earned they brought.
	Earned msat.Amount `json:"earned_msat"`
	Fees   msat.Amount `json:"fees_msat"`
	Shared msat.Amount `json:"shared_msat"`
	// Owed is the provider's part (its share, for others' charges) of
	// charges the payer has not paid yet;
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

// IncomeOf sums charges by status: cs are the provider's own charges and
// shared the other providers' charges that give it a share, recorded in
// [from, to); paid are the charges paid in [from, to), of any provider
// (those that bring the provider nothing are left out). It is pure, so the
// admin API and tests share it.
func IncomeOf(provider string, from, to time.Time, cs, shared, paid []hub.Charge) Income {
	in := Income{Provider: provider, From: from, To: to, Events: len(cs), ShareEvents: len(shared)}
	earn := func(c hub.Charge) {
		if c.Provider == provider {
			in.Earned += c.ProviderPart()
			in.Fees += c.Fee
			in.Shared += c.SharesTotal()
			return
		}
		in.Earned += c.PartOf(provider)
	}
	for _, c := range paid {
		earn(c)
	}
	for _, c := range shared {
		switch c.Status {
		case hub.ChargePaid:
			if c.Paid.IsZero() {
				earn(c)
			}
		case hub.ChargeOwed:
			in.Owed += c.PartOf(provider)
		}
	}
	for _, c := range cs {
		in.Withheld += c.Withheld
		switch c.Status {
		case hub.ChargePaid:
			if c.Paid.IsZero() {
				earn(c)
			}
		case hub.ChargeOwed:
			in.Owed += c.ProviderPart()
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

// Income returns a provider's income over the charges recorded, or paid,
// in [from, to).
func (c *Service) Income(ctx context.Context, provider string, from, to time.Time) (Income, error) {
	return ReadIncome(ctx, c.cfg.Charges, provider, from, to)
}

// IncomeCharges is what ReadIncome reads: a provider's own charges, the
// charges it has a share of and the charges paid in a period
// (hub.ChargeStore's methods).
type IncomeCharges interface {
	ChargesByProvider(ctx context.Context, provider string, from, to time.Time) ([]hub.Charge, error)
	ChargesByPayee(ctx context.Context, payee string, from, to time.Time) ([]hub.Charge, error)
	ChargesPaid(ctx context.Context, from, to time.Time) ([]hub.Charge, error)
}

// ReadIncome reads provider's charges and shares recorded in [from, to),
// and the charges paid in it, from cs and sums them (IncomeOf).
func ReadIncome(ctx context.Context, cs IncomeCharges, provider string, from, to time.Time) (Income, error) {
	own, err := cs.ChargesByProvider(ctx, provider, from, to)
	if err != nil {
		return Income{}, err
	}
	shared, err := cs.ChargesByPayee(ctx, provider, from, to)
	if err != nil {
		return Income{}, err
	}
	paid, err := cs.ChargesPaid(ctx, from, to)
	if err != nil {
		return Income{}, err
	}
	return IncomeOf(provider, from, to, own, shared, paid), nil
}
