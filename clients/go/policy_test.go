package m2mclient

import (
	"errors"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"
)

func TestLimiterSpend(t *testing.T) {
	type pay struct {
		after    time.Duration // clock advance before this payment
		provider string
		amount   msat.Amount
		ok       bool
	}
	tests := []struct {
		name   string
		policy Policy
		pays   []pay
	}{
		{
			name:   "PerPayment",
			policy: Policy{MaxPerPayment: 1000},
			pays: []pay{
				{provider: "a", amount: 1000, ok: true},
				{provider: "a", amount: 1001, ok: false},
				{provider: "b", amount: 1, ok: true},
			},
		},
		{
			name:   "ZeroAmountRefused",
			policy: Policy{},
			pays:   []pay{{provider: "a", amount: 0, ok: false}},
		},
		{
			name:   "NoLimits",
			policy: Policy{},
			pays:   []pay{{provider: "a", amount: 1 << 40, ok: true}},
		},
		{
			name:   "HourlyWindowRolls",
			policy: Policy{MaxPerHour: 3000},
			pays: []pay{
				{provider: "a", amount: 1000, ok: true},                                       // t=0
				{after: 20 * time.Minute, provider: "b", amount: 2000, ok: true},              // t=20m, total 3000
				{after: 10 * time.Minute, provider: "a", amount: 1, ok: false},                // t=30m, over
				{after: 30*time.Minute - time.Second, provider: "a", amount: 1000, ok: false}, // t=59m59s: first still inside
				{after: time.Second, provider: "a", amount: 1000, ok: true},                   // t=60m: first is an hour old, dropped
				{after: 0, provider: "a", amount: 1, ok: false},
				{after: 20 * time.Minute, provider: "a", amount: 2000, ok: true}, // t=80m: the 2000 dropped
			},
		},
		{
			name:   "PerProviderHourly",
			policy: Policy{MaxPerProviderPerHour: 1500},
			pays: []pay{
				{provider: "a", amount: 1000, ok: true},
				{provider: "a", amount: 600, ok: false},
				{provider: "b", amount: 1500, ok: true},
				{after: time.Hour + time.Second, provider: "a", amount: 1500, ok: true},
			},
		},
		{
			name:   "AllowList",
			policy: Policy{AllowedProviders: []string{"charger-1", "toll-7"}},
			pays: []pay{
				{provider: "charger-1", amount: 5, ok: true},
				{provider: "toll-7", amount: 5, ok: true},
				{provider: "rogue", amount: 5, ok: false},
				{provider: "", amount: 5, ok: false},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewTestClock(time.Unix(1_700_000_000, 0))
			l := NewLimiter(tc.policy, clk)
			for i, p := range tc.pays {
				clk.SetTime(clk.Now().Add(p.after))
				_, err := l.Spend(p.provider, p.amount)
				if p.ok && err != nil {
					t.Fatalf("payment %d: %v", i, err)
				}
				if !p.ok && !errors.Is(err, ErrPolicy) {
					t.Fatalf("payment %d: err %v, want ErrPolicy", i, err)
				}
			}
		})
	}
}

func TestLimiterUndo(t *testing.T) {
	clk := clock.NewTestClock(time.Unix(1_700_000_000, 0))
	l := NewLimiter(Policy{MaxPerHour: 1000}, clk)
	undo, err := l.Spend("a", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Spend("a", 1); !errors.Is(err, ErrPolicy) {
		t.Fatalf("over limit: %v", err)
	}
	undo()
	undo() // idempotent: must not remove another record
	if got := l.SpentLastHour(); got != 0 {
		t.Fatalf("after undo spent %d", got)
	}
	if _, err := l.Spend("a", 600); err != nil {
		t.Fatal(err)
	}
	undo()
	if got := l.SpentLastHour(); got != 600 {
		t.Fatalf("second undo removed a later record: spent %d", got)
	}
}

func TestLimiterCheckHold(t *testing.T) {
	l := NewLimiter(Policy{
		MaxHold:               50_000,
		MaxPerProviderPerHour: 40_000,
		AllowedProviders:      []string{"charger-1"},
	}, nil)
	tests := []struct {
		name     string
		provider string
		max      msat.Amount
		ok       bool
	}{
		{"OK", "charger-1", 40_000, true},
		{"ErrOverPerProviderHour", "charger-1", 40_001, false},
		{"ErrNotAllowed", "rogue", 1, false},
		{"ErrZero", "charger-1", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := l.CheckHold(tc.provider, tc.max)
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrPolicy)) {
				t.Fatalf("CheckHold(%q, %d) = %v", tc.provider, tc.max, err)
			}
		})
	}
	l2 := NewLimiter(Policy{MaxHold: 100}, nil)
	if err := l2.CheckHold("x", 101); !errors.Is(err, ErrPolicy) {
		t.Fatalf("over MaxHold: %v", err)
	}
}
