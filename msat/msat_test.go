package msat_test

import (
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/msat"
)

// TestMatchesLnwire pins that Amount converts and prints as lnd's
// lnwire.MilliSatoshi does, the type it replaces.
func TestMatchesLnwire(t *testing.T) {
	for _, n := range []uint64{0, 1, 999, 1000, 1001, 123_456_789, uint64(btcutil.MaxSatoshi) * 1000} {
		a, l := msat.Amount(n), lnwire.MilliSatoshi(n)
		if a.ToSatoshis() != l.ToSatoshis() {
			t.Errorf("%d: ToSatoshis = %d, lnwire %d", n, a.ToSatoshis(), l.ToSatoshis())
		}
		if a.String() != l.String() {
			t.Errorf("%d: String = %q, lnwire %q", n, a.String(), l.String())
		}
	}
	for _, sat := range []btcutil.Amount{0, 1, 21, btcutil.MaxSatoshi} {
		if got, want := uint64(msat.FromSatoshis(sat)), uint64(lnwire.NewMSatFromSatoshis(sat)); got != want {
			t.Errorf("FromSatoshis(%d) = %d, lnwire %d", sat, got, want)
		}
	}
}
