package record

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/msat"
)

// sampleCharge is a charge with every field set.
func sampleCharge() hub.Charge {
	return hub.Charge{
		Provider: "cp-1", EventID: "ev-1", Payer: "car-1", Contract: hub.Hash{1, 2}, Amount: 12_345, Fee: 67,
		Channel: wire.OutPoint{Hash: [32]byte{9}, Index: 3}, Status: hub.ChargeOwed, Quantity: "1.5", Digest: hub.Hash{7, 0, 7},
		EventTime: time.Date(2026, 6, 10, 8, 0, 0, 1, time.UTC), Charged: time.Date(2026, 6, 10, 8, 0, 1, 0, time.UTC),
	}
}

func TestChargeRecord(t *testing.T) {
	c := sampleCharge()
	t.Run("RoundTrip", func(t *testing.T) {
		got, err := DecodeCharge(EncodeCharge(c))
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("got %+v, %v; want %+v", got, err, c)
		}
	})
	t.Run("Withheld", func(t *testing.T) {
		for _, digest := range []hub.Hash{c.Digest, {}} {
			w := c
			w.Digest, w.Withheld = digest, 165_000_000
			got, err := DecodeCharge(EncodeCharge(w))
			if err != nil || !reflect.DeepEqual(got, w) {
				t.Fatalf("got %+v, %v; want %+v", got, err, w)
			}
		}
	})
	t.Run("Shares", func(t *testing.T) {
		for _, withheld := range []msat.Amount{0, 5} {
			sh := c
			sh.Digest, sh.Withheld = hub.Hash{}, withheld
			sh.Shares = []hub.Share{{Payee: "site-host", Msat: 1850}, {Payee: "emp", Msat: 500}}
			got, err := DecodeCharge(EncodeCharge(sh))
			if err != nil || !reflect.DeepEqual(got, sh) {
				t.Fatalf("got %+v, %v; want %+v", got, err, sh)
			}
		}
	})
	t.Run("Paid", func(t *testing.T) {
		paid := time.Date(2026, 6, 10, 9, 0, 0, 5, time.UTC)
		for _, shares := range [][]hub.Share{nil, {{Payee: "site-host", Msat: 1850}}} {
			for _, digest := range []hub.Hash{c.Digest, {}} {
				p := c
				p.Status, p.Digest, p.Shares, p.Paid = hub.ChargePaid, digest, shares, paid
				got, err := DecodeCharge(EncodeCharge(p))
				if err != nil || !reflect.DeepEqual(got, p) {
					t.Fatalf("got %+v, %v; want %+v", got, err, p)
				}
				p.Paid = time.Time{}
				if got, err := DecodeCharge(EncodeCharge(p)); err != nil || !reflect.DeepEqual(got, p) {
					t.Fatalf("without a paid time: got %+v, %v; want %+v", got, err, p)
				}
			}
		}
	})
	t.Run("ZeroTimesStayZero", func(t *testing.T) {
		z := c
		z.EventTime, z.Charged = time.Time{}, time.Time{}
		got, err := DecodeCharge(EncodeCharge(z))
		if err != nil || !got.EventTime.IsZero() || !got.Charged.IsZero() {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("RecordWithoutDigest", func(t *testing.T) {
		old := c
		old.Digest = hub.Hash{}
		b := EncodeCharge(old)
		if len(b) != len(EncodeCharge(c))-len(c.Digest) {
			t.Fatalf("a record without a digest is %d bytes", len(b))
		}
		got, err := DecodeCharge(b)
		if err != nil || !reflect.DeepEqual(got, old) {
			t.Fatalf("got %+v, %v; want %+v", got, err, old)
		}
	})
	t.Run("RecordWithoutQuantity", func(t *testing.T) {
		old := c
		old.Quantity, old.Digest = "", hub.Hash{}
		b := EncodeCharge(old)
		b = b[:len(b)-1] // records written before quantities end after the event id
		got, err := DecodeCharge(b)
		if err != nil || !reflect.DeepEqual(got, old) {
			t.Fatalf("got %+v, %v; want %+v", got, err, old)
		}
	})
	t.Run("ErrBadCharge", func(t *testing.T) {
		b := EncodeCharge(c)
		bad := append([]byte(nil), b...)
		bad[ChargeRecordStatus] = 'x'
		sh := c
		sh.Shares = []hub.Share{{Payee: "site-host", Msat: 1850}}
		shared := EncodeCharge(sh)
		pd := c
		pd.Paid = time.Date(2026, 6, 10, 9, 0, 0, 0, time.UTC)
		paid := EncodeCharge(pd)
		zeroPaid := append(paid[:len(paid)-8:len(paid)-8], 0x80, 0, 0, 0, 0, 0, 0, 0)
		for name, in := range map[string][]byte{"Short": b[:ChargeFixedLen-1], "Status": bad, "Truncated": b[:len(b)-2],
			"SharesTruncated": shared[:len(shared)-1], "SharesTrailing": append(shared[:len(shared):len(shared)], 0),
			"ZeroShares":    append(EncodeCharge(c)[:len(b):len(b)], 0, 0, 0, 0, 0, 0, 0, 0, 0),
			"PaidTruncated": paid[:len(paid)-1], "PaidTrailing": append(paid[:len(paid):len(paid)], 0),
			"SharesTrailingPaid": append(shared[:len(shared):len(shared)], paid[len(paid)-8:]...)[:len(shared)+7],
			"ZeroPaid":           zeroPaid} {
			if _, err := DecodeCharge(in); !errors.Is(err, ErrBadCharge) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})
}
