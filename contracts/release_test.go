package contracts

import (
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
)

func readings(vals ...string) []Reading {
	out := make([]Reading, len(vals))
	for i, v := range vals {
		out[i] = Reading{Value: MustDec(v)}
	}
	return out
}

// TestConditionalRelease uses the example cold-chain contract: 25.00 EUR
// held at 1,100,000 msat/EUR = 27,500,000 msat; readings must stay in
// [2, 8] with at least 4 of them; on a breach the provider gets 25 − 20 =
// 5.00 EUR = 5,500,000 msat and the payer 22,000,000 back. The hub fee is
// 100 bps + 1,000 msat of what is released.
func TestConditionalRelease(t *testing.T) {
	c := MustExample(t, "conditional_release")
	held, err := HoldMsat(c)
	if err != nil || held != 27_500_000 {
		t.Fatalf("hold %d, %v", held, err)
	}
	tests := []struct {
		name      string
		readings  []Reading
		outcome   Outcome
		breach    int
		release   msat.Amount
		fee       msat.Amount
		reasonHas string
	}{
		// Bounds are inclusive: 2 and 8 are in range. Fee 275,000 + 1,000.
		{"Release", readings("2", "5", "7.9", "8"), OutcomeRelease, -1, 27_500_000, 276_000, "all 4 readings"},
		// 8.1 °C at index 2. Fee on 5,500,000: 55,000 + 1,000.
		{"PenaltyOnBreach", readings("3", "5", "8.1", "4"), OutcomePenalty, 2, 5_500_000, 56_000, "reading 2 is 8.1"},
		{"PenaltyBelowRange", readings("1.99", "5", "5", "5"), OutcomePenalty, 0, 5_500_000, 56_000, "outside [2, 8]"},
		// Three readings prove nothing when four are required.
		{"PenaltyTooFewReadings", readings("3", "4", "5"), OutcomePenalty, -1, 5_500_000, 56_000, "3 readings, 4 required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decide(c, tt.readings)
			if err != nil {
				t.Fatal(err)
			}
			if d.Outcome != tt.outcome || d.Breach != tt.breach || d.ReleaseMsat != tt.release ||
				d.HeldMsat != held || d.ReleaseMsat+d.RefundMsat != held || !strings.Contains(d.Reason, tt.reasonHas) {
				t.Fatalf("decision %+v", d)
			}
			b := MustPrice(t, c, Usage{Device: "pharma-1", Provider: "truck-9", Readings: tt.readings})
			if b.Release == nil || *b.Release != d {
				t.Fatalf("breakdown decision %+v, want %+v", b.Release, d)
			}
			if b.TotalMsat != tt.release || b.FeeMsat != tt.fee || b.ProviderMsat != tt.release-tt.fee {
				t.Fatalf("total %d fee %d provider %d", b.TotalMsat, b.FeeMsat, b.ProviderMsat)
			}
		})
	}
	t.Run("RefundOnBreach", func(t *testing.T) {
		refund := MustParse(t, strings.NewReplacer(`"on_breach": "penalty"`, `"on_breach": "refund"`, `,
    "penalty": "20.00"`, ``).Replace(string(mustRead(t, "testdata/examples/conditional_release.json"))))
		b := MustPrice(t, refund, Usage{Readings: readings("3", "9", "4", "5")})
		d := b.Release
		// Nothing released, so no line, no total, and the per-event fee
		// is capped at the zero total.
		if d.Outcome != OutcomeRefund || d.RefundMsat != 27_500_000 || d.ReleaseMsat != 0 ||
			len(b.Lines) != 0 || b.TotalMsat != 0 || b.FeeMsat != 0 {
			t.Fatalf("breakdown %+v decision %+v", b, d)
		}
	})
	t.Run("ErrInvalid/NotRelease", func(t *testing.T) {
		if _, err := Decide(MustExample(t, "toll"), nil); err == nil {
			t.Fatal("decided a toll contract")
		}
	})
}
