package contracts

import (
	"fmt"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/shopspring/decimal"
)

// What a conditional release does when a reading is out of range.
const (
	OnBreachRefund  = "refund"
	OnBreachPenalty = "penalty"
)

// Outcome is the result of a conditional release.
type Outcome string

// Release outcomes.
const (
	// OutcomeRelease pays the whole held amount to the provider.
	OutcomeRelease Outcome = "release"
	// OutcomeRefund returns the whole held amount to the payer.
	OutcomeRefund Outcome = "refund"
	// OutcomePenalty pays the provider the held amount less the penalty
	// and returns the penalty to the payer.
	OutcomePenalty Outcome = "penalty"
)

// Release is a conditional release (cold chain) body: Amount is held from
// the payer when the job starts; when it ends, the readings decide. If at
// least MinReadings readings were taken and every one lies in [Min, Max],
// the provider is paid; otherwise the payer gets a refund, or, with
// on_breach "penalty", the provider is paid Amount − Penalty.
type Release struct {
	// Amount is held, in the contract currency.
	Amount Dec `json:"amount"`
	// Quantity names what the readings measure, such as "temperature_c".
	Quantity string `json:"quantity,omitempty"`
	// Min and Max bound every reading, inclusive.
	Min Dec `json:"min"`
	Max Dec `json:"max"`
	// MinReadings is how many readings prove the condition; fewer is a
	// breach, since a silent sensor proves nothing.
	MinReadings Dec `json:"min_readings"`
	// OnBreach is OnBreachRefund or OnBreachPenalty.
	OnBreach string `json:"on_breach"`
	// Penalty, with OnBreachPenalty, is kept back from the provider.
	Penalty *Dec `json:"penalty,omitempty"`

	minReadings int64
}

// ReleaseDecision says where a held amount goes. HeldMsat = ReleaseMsat +
// RefundMsat exactly.
type ReleaseDecision struct {
	Outcome     Outcome     `json:"outcome"`
	HeldMsat    msat.Amount `json:"held_msat"`
	ReleaseMsat msat.Amount `json:"release_msat"`
	RefundMsat  msat.Amount `json:"refund_msat"`
	// Breach is the index of the first reading out of range, or -1.
	Breach int    `json:"breach"`
	Reason string `json:"reason"`
}

func (r *Release) validate() error {
	if err := positive("conditional_release.amount", r.Amount); err != nil {
		return err
	}
	if r.Min.GreaterThan(r.Max.Decimal) {
		return fmt.Errorf("%w: conditional_release.min is above max", ErrInvalid)
	}
	if len(r.Quantity) > 64 {
		return fmt.Errorf("%w: conditional_release.quantity is over 64 bytes", ErrInvalid)
	}
	var err error
	if r.minReadings, err = whole("conditional_release.min_readings", r.MinReadings, 0, 1_000_000); err != nil {
		return err
	}
	switch r.OnBreach {
	case OnBreachRefund:
		if r.Penalty != nil {
			return fmt.Errorf("%w: conditional_release.penalty needs on_breach %q", ErrInvalid, OnBreachPenalty)
		}
	case OnBreachPenalty:
		if r.Penalty == nil {
			return fmt.Errorf("%w: conditional_release on_breach %q needs penalty", ErrInvalid, OnBreachPenalty)
		}
		if err := nonNeg("conditional_release.penalty", *r.Penalty); err != nil {
			return err
		}
		if r.Penalty.GreaterThan(r.Amount.Decimal) {
			return fmt.Errorf("%w: conditional_release.penalty exceeds amount", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: conditional_release.on_breach must be %q or %q", ErrInvalid, OnBreachRefund, OnBreachPenalty)
	}
	return nil
}

// HoldMsat returns the amount a conditional release contract holds from
// the payer, in msat (Amount × rate, rounded half up).
func HoldMsat(c *Contract) (msat.Amount, error) {
	if c == nil || !c.parsed || c.ConditionalRelease == nil {
		return 0, fmt.Errorf("%w: not a parsed conditional release contract", ErrInvalid)
	}
	return toMsat(c.ConditionalRelease.Amount.Mul(c.rate()))
}

// Decide evaluates a conditional release over the readings. The hub calls
// it when the job ends and moves the held funds as the decision says;
// Price does the same and also splits the released amount with the hub.
func Decide(c *Contract, readings []Reading) (ReleaseDecision, error) {
	if c == nil || !c.parsed || c.ConditionalRelease == nil {
		return ReleaseDecision{}, fmt.Errorf("%w: not a parsed conditional release contract", ErrInvalid)
	}
	d, _, err := c.ConditionalRelease.decide(c, readings)
	return d, err
}

func (r *Release) decide(c *Contract, readings []Reading) (ReleaseDecision, []item, error) {
	held, err := HoldMsat(c)
	if err != nil {
		return ReleaseDecision{}, nil, err
	}
	d := ReleaseDecision{HeldMsat: held, Breach: -1}
	for i, rd := range readings {
		if rd.Value.LessThan(r.Min.Decimal) || rd.Value.GreaterThan(r.Max.Decimal) {
			d.Breach = i
			d.Reason = fmt.Sprintf("reading %d is %s, outside [%s, %s]", i, rd.Value, r.Min, r.Max)
			break
		}
	}
	if d.Breach < 0 && int64(len(readings)) < r.minReadings {
		d.Reason = fmt.Sprintf("%d readings, %d required", len(readings), r.minReadings)
	}
	var pay decimal.Decimal
	switch {
	case d.Reason == "":
		d.Outcome, d.Reason, pay = OutcomeRelease, fmt.Sprintf("all %d readings in [%s, %s]", len(readings), r.Min, r.Max), r.Amount.Decimal
	case r.OnBreach == OnBreachPenalty:
		d.Outcome, pay = OutcomePenalty, r.Amount.Sub(r.Penalty.Decimal)
	default:
		d.Outcome, pay = OutcomeRefund, decimal.Zero
	}
	// The released part is rounded once and the refund is what is left,
	// so the two always add up to the held amount.
	if d.ReleaseMsat, err = toMsat(pay.Mul(c.rate())); err != nil {
		return ReleaseDecision{}, nil, err
	}
	if d.ReleaseMsat > held {
		d.ReleaseMsat = held
	}
	d.RefundMsat = held - d.ReleaseMsat
	var items []item
	if pay.Sign() > 0 {
		items = []item{{component: "RELEASE", element: -1, quantity: decimal.NewFromInt(1), unit: "job",
			unitPrice: pay, num: pay, den: 1}}
	}
	return d, items, nil
}
