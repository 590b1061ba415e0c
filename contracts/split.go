package contracts

import (
	"fmt"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/shopspring/decimal"
)

// MaxSplits bounds a contract's revenue splits.
const MaxSplits = 16

// Split is one payee's share of every charge a contract prices: a fixed
// msat amount per charge, basis points of what is left after the fixed
// amounts, or both. Splits divide the provider's part (the total less the
// hub's fee); whatever they leave goes to the provider that metered the
// charge. Example: a charge point operator (the provider), a site host
// taking 1500 bps and an e-mobility provider taking 500 msat a charge.
//
// The rounding rule (SplitShares): fixed amounts first, in the order
// listed, each capped at what is left; then each percentage share of the
// remainder after every fixed amount, rounded down to the msat; the
// provider gets the rest, and so every rounding remainder. The shares add
// up to the provider part to the msat.
type Split struct {
	// Payee is the registered device id the share is paid to.
	Payee string `json:"payee"`
	// BPS is the share in basis points (1/10000), 0..10000.
	BPS *Dec `json:"bps,omitempty"`
	// FixedMsat is a fixed msat amount per charge.
	FixedMsat *Dec `json:"fixed_msat,omitempty"`

	bps, fixed int64
}

// Share is one payee's part of a charge.
type Share struct {
	Payee string      `json:"payee"`
	Msat  msat.Amount `json:"msat"`
}

// validateSplits checks the splits: each names a payee once, has bps
// and/or fixed_msat, and the bps add up to 10000 at most.
func validateSplits(ss []Split) error {
	if len(ss) > MaxSplits {
		return fmt.Errorf("%w: at most %d splits", ErrInvalid, MaxSplits)
	}
	seen := map[string]bool{}
	var bps int64
	for i := range ss {
		s := &ss[i]
		field := fmt.Sprintf("splits[%d]", i)
		switch {
		case s.Payee == "" || len(s.Payee) > 128:
			return fmt.Errorf("%w: %s.payee must be a device id of 1 to 128 bytes", ErrInvalid, field)
		case seen[s.Payee]:
			return fmt.Errorf("%w: %s.payee %q is listed twice", ErrInvalid, field, s.Payee)
		case s.BPS == nil && s.FixedMsat == nil:
			return fmt.Errorf("%w: %s needs bps and/or fixed_msat", ErrInvalid, field)
		}
		seen[s.Payee] = true
		var err error
		if s.BPS != nil {
			if s.bps, err = whole(field+".bps", *s.BPS, 0, 10000); err != nil {
				return err
			}
		}
		if s.FixedMsat != nil {
			if s.fixed, err = whole(field+".fixed_msat", *s.FixedMsat, 0, maxMsat); err != nil {
				return err
			}
		}
		bps += s.bps
	}
	if bps > 10000 {
		return fmt.Errorf("%w: the splits' bps add up to %d, more than 10000", ErrInvalid, bps)
	}
	return nil
}

// SplitShares divides part, the provider's part of one charge
// (Breakdown.ProviderMsat), among the contract's splits and provider by
// the rule on Split. The provider's share comes first; a payee with
// nothing is still listed. Without splits the provider gets it all. The
// shares always add up to part.
func (c *Contract) SplitShares(provider string, part msat.Amount) []Share {
	out := make([]Share, 1, len(c.Splits)+1)
	left := uint64(part)
	shares := make([]uint64, len(c.Splits))
	for i, s := range c.Splits {
		f := min(uint64(s.fixed), left)
		shares[i], left = f, left-f
	}
	base := decimal.NewFromUint64(left)
	for i, s := range c.Splits {
		p := uint64(base.Mul(decimal.NewFromInt(s.bps)).Shift(-4).Floor().IntPart())
		shares[i], left = shares[i]+p, left-p
	}
	out[0] = Share{Payee: provider, Msat: msat.Amount(left)}
	for i, s := range c.Splits {
		out = append(out, Share{Payee: s.Payee, Msat: msat.Amount(shares[i])})
	}
	return out
}
