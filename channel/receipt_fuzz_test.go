package channel

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReceipt checks that UnmarshalBinary accepts exactly the canonical
// encodings: whatever it accepts re-marshals to the same bytes, and whatever
// it refuses is refused with ErrBadReceipt. The committed corpus lives in
// testdata/fuzz/FuzzReceipt.
func FuzzReceipt(f *testing.F) {
	good, err := sampleReceipt(f).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:100])
	v2, err := sampleReceiptV2(f).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v2)
	f.Add(v2[:len(v2)-70])
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Receipt
		if err := r.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBadReceipt) {
				t.Fatalf("error not wrapping ErrBadReceipt: %v", err)
			}
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted receipt does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("not canonical:\n in  %x\n out %x", b, out)
		}
		// Verify must not panic on arbitrary keys and signatures.
		_ = r.Verify()
	})
}
