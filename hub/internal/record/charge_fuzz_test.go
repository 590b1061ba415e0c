package record

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// FuzzChargeRecord feeds arbitrary bytes to DecodeCharge, the codec
// of both stores' charge records: it must never panic, must refuse with
// ErrBadCharge, and whatever it accepts must encode to a record that
// decodes to the same charge.
func FuzzChargeRecord(f *testing.F) {
	c := sampleCharge()
	f.Add(EncodeCharge(c))
	c.Quantity = ""
	f.Add(EncodeCharge(c)[:ChargeFixedLen+20])
	f.Add(make([]byte, ChargeFixedLen))
	c.Shares = []hub.Share{{Payee: "site-host", Msat: 1850}, {Payee: "emp", Msat: 500}}
	f.Add(EncodeCharge(c))
	c.Paid = c.Charged.Add(time.Hour)
	f.Add(EncodeCharge(c))
	c.Shares = nil
	f.Add(EncodeCharge(c))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeCharge(b)
		if err != nil {
			if !errors.Is(err, ErrBadCharge) {
				t.Fatalf("refused with %v, want ErrBadChargeRecord", err)
			}
			return
		}
		again, err := DecodeCharge(EncodeCharge(got))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("charge changed in a round trip (%v):\n %+v\n %+v", err, got, again)
		}
	})
}
