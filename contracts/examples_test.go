package contracts

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
)

// TestExampleUsage prices each example contract with its example usage
// record (testdata/usage), as `hubctl contract price` would. Figures are
// worked out in docs/contracts.md.
func TestExampleUsage(t *testing.T) {
	tests := []struct {
		kind                string
		total, fee, provide msat.Amount
	}{
		{"ev_charging", 3_256_000, 32_560, 3_223_440},
		{"toll", 60_000, 300, 59_700},
		{"bandwidth", 700, 24, 676},
		{"energy", 308_000, 3_080, 304_920},
		{"conditional_release", 5_500_000, 56_000, 5_444_000},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			c := MustExample(t, tt.kind)
			u, err := ParseUsage(mustRead(t, filepath.Join("testdata", "usage", tt.kind+".json")))
			if err != nil {
				t.Fatal(err)
			}
			b := MustPrice(t, c, u)
			if b.TotalMsat != tt.total || b.FeeMsat != tt.fee || b.ProviderMsat != tt.provide {
				t.Fatalf("total %d fee %d provider %d, want %d %d %d", b.TotalMsat, b.FeeMsat, b.ProviderMsat, tt.total, tt.fee, tt.provide)
			}
		})
	}
}

func TestParseUsageErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"UnknownField":   `{"device":"d","speed":"3"}`,
		"NumberQuantity": `{"quantity":3}`,
		"TrailingData":   `{"device":"d"} {}`,
		"BadTime":        `{"event_time":"yesterday"}`,
	} {
		t.Run("ErrBadUsage/"+name, func(t *testing.T) {
			if _, err := ParseUsage([]byte(doc)); !errors.Is(err, ErrBadUsage) {
				t.Fatalf("err = %v, want ErrBadUsage", err)
			}
		})
	}
}
