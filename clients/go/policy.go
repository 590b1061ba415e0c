package m2mclient

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"
)

// ErrPolicy is wrapped by every refusal of the device's spending policy.
// Callers test for it with errors.Is; the hub, where it asked, is told
// "policy-refused".
var ErrPolicy = errors.New("m2mclient: refused by spending policy")

// PolicyWindow is the length of the rolling window MaxPerHour and
// MaxPerProviderPerHour are measured over.
const PolicyWindow = time.Hour

// Policy bounds what the device signs, checked on the device before any
// signature is made, so a rogue provider (or a compromised hub relaying its
// requests) cannot drain the channel faster than the owner allowed. A zero
// limit means no limit on that dimension.
type Policy struct {
	// MaxPerPayment bounds one payment (one signed state update).
	MaxPerPayment msat.Amount

	// MaxPerHour bounds the sum of payments in any rolling hour, over all
	// providers and channels.
	MaxPerHour msat.Amount

	// MaxPerProviderPerHour bounds the sum of payments to one provider in
	// any rolling hour.
	MaxPerProviderPerHour msat.Amount

	// AllowedProviders lists the provider ids the device pays and
	// authorises holds for; empty allows any provider.
	AllowedProviders []string

	// MaxHold bounds the maximum of a hold the device authorises.
	MaxHold msat.Amount
}

// spend is one payment inside the rolling window.
type spend struct {
	at       time.Time
	provider string
	amount   msat.Amount
}

// Limiter enforces a Policy. It remembers the payments of the last
// PolicyWindow to enforce the hourly limits. It is safe for concurrent use:
// Spend checks and records in one step, so two payments racing on different
// channels cannot both squeeze under the same limit.
type Limiter struct {
	policy Policy
	clock  clock.Clock

	mu     sync.Mutex
	spends []spend // in time order
}

// NewLimiter returns a Limiter for p that reads time from clk (the wall
// clock when nil).
func NewLimiter(p Policy, clk clock.Clock) *Limiter {
	if clk == nil {
		clk = clock.NewDefaultClock()
	}
	p.AllowedProviders = slices.Clone(p.AllowedProviders)
	return &Limiter{policy: p, clock: clk}
}

// Policy returns the policy the limiter enforces.
func (l *Limiter) Policy() Policy {
	p := l.policy
	p.AllowedProviders = slices.Clone(p.AllowedProviders)
	return p
}

// allowed reports whether provider is on the allow list.
func (l *Limiter) allowed(provider string) bool {
	return len(l.policy.AllowedProviders) == 0 || slices.Contains(l.policy.AllowedProviders, provider)
}

// Spend checks a payment of amount to provider against the policy and, if it
// passes, records it in the rolling window. It returns an error wrapping
// ErrPolicy, recording nothing, when the payment is refused. The returned
// undo removes the record again; call it only when the payment certainly did
// not happen (the hub refused it before acknowledging), never after an
// ambiguous failure such as a timeout, so that the window errs on the side
// of spending less.
func (l *Limiter) Spend(provider string, amount msat.Amount) (undo func(), err error) {
	p := l.policy
	switch {
	case amount == 0:
		return nil, fmt.Errorf("%w: zero amount", ErrPolicy)
	case provider == "":
		return nil, fmt.Errorf("%w: no provider", ErrPolicy)
	case !l.allowed(provider):
		return nil, fmt.Errorf("%w: provider %q not allowed", ErrPolicy, provider)
	case p.MaxPerPayment > 0 && amount > p.MaxPerPayment:
		return nil, fmt.Errorf("%w: %d msat over the per-payment limit %d msat",
			ErrPolicy, uint64(amount), uint64(p.MaxPerPayment))
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	l.expire(now)
	var total, toProvider msat.Amount
	for _, s := range l.spends {
		total += s.amount
		if s.provider == provider || s.provider == "" {
			// A spend to no provider in particular (see record) may
			// have gone to this one.
			toProvider += s.amount
		}
	}
	switch {
	case p.MaxPerHour > 0 && total+amount > p.MaxPerHour:
		return nil, fmt.Errorf("%w: %d msat would bring the last hour to %d msat, limit %d msat",
			ErrPolicy, uint64(amount), uint64(total+amount), uint64(p.MaxPerHour))
	case p.MaxPerProviderPerHour > 0 && toProvider+amount > p.MaxPerProviderPerHour:
		return nil, fmt.Errorf("%w: %d msat would bring the last hour to %q to %d msat, limit %d msat",
			ErrPolicy, uint64(amount), provider, uint64(toProvider+amount), uint64(p.MaxPerProviderPerHour))
	}
	rec := spend{at: now, provider: provider, amount: amount}
	l.spends = append(l.spends, rec)
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			for i, s := range l.spends {
				if s == rec {
					l.spends = slices.Delete(l.spends, i, i+1)
					return
				}
			}
		})
	}, nil
}

// record adds a spend the device learned of afterwards (the hub held a
// state the device's restored store did not know) as made just now to no
// provider in particular, so it counts against every hourly limit. Spend
// refuses provider "", so no attributed spend shares the mark.
func (l *Limiter) record(amount msat.Amount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.clock.Now())
	l.spends = append(l.spends, spend{at: l.clock.Now(), amount: amount})
}

// CheckHold decides whether the device authorises a hold of up to max for
// provider. A hold moves no money by itself (every capture is still a
// payment checked by Spend), but it promises the provider service, so it is
// bounded too. It returns an error wrapping ErrPolicy.
func (l *Limiter) CheckHold(provider string, max msat.Amount) error {
	p := l.policy
	switch {
	case max == 0:
		return fmt.Errorf("%w: zero hold", ErrPolicy)
	case !l.allowed(provider):
		return fmt.Errorf("%w: provider %q not allowed", ErrPolicy, provider)
	case p.MaxHold > 0 && max > p.MaxHold:
		return fmt.Errorf("%w: hold of %d msat over the limit %d msat",
			ErrPolicy, uint64(max), uint64(p.MaxHold))
	case p.MaxPerProviderPerHour > 0 && max > p.MaxPerProviderPerHour:
		// Such a hold could never be captured in full within one
		// window; refusing it up front beats a refused capture later.
		return fmt.Errorf("%w: hold of %d msat over the per-provider hourly limit %d msat",
			ErrPolicy, uint64(max), uint64(p.MaxPerProviderPerHour))
	}
	return nil
}

// SpentLastHour returns the total paid within the rolling window.
func (l *Limiter) SpentLastHour() msat.Amount {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.clock.Now())
	var total msat.Amount
	for _, s := range l.spends {
		total += s.amount
	}
	return total
}

// expire drops spends older than the window. l.mu must be held.
func (l *Limiter) expire(now time.Time) {
	cut := now.Add(-PolicyWindow)
	i := 0
	for i < len(l.spends) && !l.spends[i].at.After(cut) {
		i++
	}
	l.spends = slices.Delete(l.spends, 0, i)
}
