package contracts

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"
)

// withSplits is the ev_charging example with splits added to its document.
func withSplits(tb fataler, splits string) (*Contract, error) {
	tb.Helper()
	b, err := os.ReadFile("testdata/examples/ev_charging.json")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	doc := strings.Replace(string(b), `"currency":`, `"splits": `+splits+`, "currency":`, 1)
	if doc == string(b) {
		tb.Fatalf("no currency field to add splits before")
	}
	return Parse([]byte(doc))
}

// TestSplitShares: the shares of the example session's provider part, by
// the stated rule: fixed first, then bps of the rest rounded down, the
// provider keeping what is left.
func TestSplitShares(t *testing.T) {
	c, err := withSplits(t, `[{"payee": "site-host", "bps": "1500"}, {"payee": "emsp", "fixed_msat": "500", "bps": "333"}]`)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := withSplits(t, `[]`)
	if err != nil || plain.Hash() == c.Hash() {
		t.Fatalf("splits are not part of the contract's hash (%v)", err)
	}
	// 3,223,440 msat for the provider (docs/contracts.md); 500 fixed to
	// the eMSP leaves 3,222,940: site host floor(×0.15) = 483,441, eMSP
	// floor(×0.0333) = 107,323 + 500, the operator the rest.
	got := c.SplitShares("cpo", 3_223_440)
	want := []Share{{"cpo", 3_223_440 - 483_441 - 107_823}, {"site-host", 483_441}, {"emsp", 107_823}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("shares %v, want %v", got, want)
	}
	if got := c.SplitShares("cpo", 300); fmt.Sprint(got) != fmt.Sprint([]Share{{"cpo", 0}, {"site-host", 0}, {"emsp", 300}}) {
		t.Fatalf("a part below the fixed amount: %v", got)
	}
}

func TestSplitsRefused(t *testing.T) {
	for name, splits := range map[string]string{
		"NoPayee":      `[{"bps": "10"}]`,
		"Twice":        `[{"payee": "a", "bps": "10"}, {"payee": "a", "bps": "10"}]`,
		"NoShare":      `[{"payee": "a"}]`,
		"Over100":      `[{"payee": "a", "bps": "6000"}, {"payee": "b", "bps": "4001"}]`,
		"Fraction":     `[{"payee": "a", "bps": "1.5"}]`,
		"Negative":     `[{"payee": "a", "fixed_msat": "-1"}]`,
		"UnknownField": `[{"payee": "a", "bps": "1", "percent": "1"}]`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := withSplits(t, splits); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
}

// TestSplitConserves: for any splits and any provider part, the shares
// add up to the part to the msat, no share is negative, a fixed amount is
// paid in full whenever the part covers every fixed amount before it, and
// the provider gets at least what the bps leave.
func TestSplitConserves(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, MaxSplits).Draw(t, "splits")
		var parts []string
		budget := int64(10000)
		for i := range n {
			s := fmt.Sprintf(`{"payee": "p%d"`, i)
			if rapid.Bool().Draw(t, "has bps") {
				b := rapid.Int64Range(0, budget).Draw(t, "bps")
				budget -= b
				s += fmt.Sprintf(`, "bps": "%d"`, b)
			}
			if rapid.Bool().Draw(t, "has fixed") || !strings.Contains(s, "bps") {
				s += fmt.Sprintf(`, "fixed_msat": "%d"`, rapid.Int64Range(0, 5_000_000).Draw(t, "fixed"))
			}
			parts = append(parts, s+"}")
		}
		c, err := withSplits(t, "["+strings.Join(parts, ",")+"]")
		if err != nil {
			t.Fatal(err)
		}
		part := msat.Amount(rapid.Uint64Range(0, 2_100_000_000_000_000_000).Draw(t, "part"))
		shares := c.SplitShares("cpo", part)
		if len(shares) != n+1 || shares[0].Payee != "cpo" {
			t.Fatalf("shares %v", shares)
		}
		var sum, fixedBefore uint64
		for i, s := range shares {
			if s.Msat > part {
				t.Fatalf("share %v above the part %d", s, part)
			}
			sum += uint64(s.Msat)
			if i == 0 {
				continue
			}
			f := uint64(c.Splits[i-1].fixed)
			if fixedBefore+f <= uint64(part) && uint64(s.Msat) < f {
				t.Fatalf("%s got %d, less than its fixed %d of a part %d", s.Payee, s.Msat, f, part)
			}
			fixedBefore += f
		}
		if sum != uint64(part) {
			t.Fatalf("shares %v add up to %d msat, the part is %d", shares, sum, part)
		}
	})
}
