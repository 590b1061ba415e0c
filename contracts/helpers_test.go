package contracts

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"
)

// MustParse parses doc or fails the test.
func MustParse(tb testing.TB, doc string) *Contract {
	tb.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		tb.Fatalf("parse: %v\n%s", err, doc)
	}
	return c
}

// MustExample parses testdata/examples/<name>.json.
func MustExample(tb testing.TB, name string) *Contract {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "examples", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	return MustParse(tb, string(b))
}

// MustPrice prices u under c or fails the test, and checks the invariants
// every breakdown must keep.
func MustPrice(tb testing.TB, c *Contract, u Usage) Breakdown {
	tb.Helper()
	b, err := Price(c, u)
	if err != nil {
		tb.Fatalf("price: %v", err)
	}
	checkBreakdown(tb, c, b)
	return b
}

// fataler is the part of testing.TB that rapid.T also has.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func checkBreakdown(tb fataler, c *Contract, b Breakdown) {
	tb.Helper()
	var sum msat.Amount
	for _, l := range b.Lines {
		sum += l.Msat
	}
	if sum != b.SubtotalMsat {
		tb.Fatalf("lines add to %d, subtotal %d", sum, b.SubtotalMsat)
	}
	if b.Adjustment == "" && b.TotalMsat != b.SubtotalMsat {
		tb.Fatalf("total %d != subtotal %d without adjustment", b.TotalMsat, b.SubtotalMsat)
	}
	if b.FeeMsat+b.ProviderMsat != b.TotalMsat || b.FeeMsat > b.TotalMsat {
		tb.Fatalf("fee %d + provider %d != total %d", b.FeeMsat, b.ProviderMsat, b.TotalMsat)
	}
	h := c.Hash()
	if b.Contract != hex.EncodeToString(h[:]) {
		tb.Fatalf("breakdown names contract %s", b.Contract)
	}
}

// at parses an RFC 3339 time or fails the test.
func at(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// local builds a wall-clock time in zone.
func local(tb testing.TB, zone string, y int, mo time.Month, d, h, mi int) time.Time {
	tb.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		tb.Fatal(err)
	}
	return time.Date(y, mo, d, h, mi, 0, 0, loc)
}

// lineMsat returns the msat of each line, in order.
func lineMsat(b Breakdown) []msat.Amount {
	out := make([]msat.Amount, len(b.Lines))
	for i, l := range b.Lines {
		out[i] = l.Msat
	}
	return out
}

func hexOf(h [32]byte) string { return hex.EncodeToString(h[:]) }

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
