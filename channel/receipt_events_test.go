package channel

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// sampleReceiptV2 returns a signed version-2 receipt naming three events.
func sampleReceiptV2(tb testing.TB) Receipt {
	tb.Helper()
	r := sampleReceipt(tb)
	root, n, err := EventsRoot([]string{"ev-3", "ev-1", "ev-2"})
	if err != nil {
		tb.Fatal(err)
	}
	r.Contract = [32]byte{0xC0, 0x01}
	r.EventsRoot, r.EventCount = root, n
	if err := r.Sign(mustKey(tb, "hub")); err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestReceiptV2(t *testing.T) {
	t.Run("RoundTrip", rapid.MakeCheck(func(rt *rapid.T) {
		in := genReceipt(rt)
		copy(in.Contract[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "contract"))
		copy(in.EventsRoot[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "root"))
		in.EventCount = rapid.Uint32Range(1, 1<<32-1).Draw(rt, "count")
		b, err := in.MarshalBinary()
		if err != nil {
			rt.Fatal(err)
		}
		if b[0] != ReceiptVersionEvents || len(b) > MaxReceiptSize {
			rt.Fatalf("version %d, %d bytes", b[0], len(b))
		}
		var out Receipt
		if err := out.UnmarshalBinary(b); err != nil {
			rt.Fatal(err)
		}
		if out != in {
			rt.Fatalf("changed:\n in  %+v\n out %+v", in, out)
		}
	}))
	t.Run("Layout", func(t *testing.T) {
		r := sampleReceiptV2(t)
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// Version 1's 194 fixed bytes plus contract, root and count.
		if want := 194 + 68 + len(r.Payer) + len(r.Payee) + len(r.Memo); len(b) != want {
			t.Fatalf("%d bytes, want %d", len(b), want)
		}
		tail := b[len(b)-64-33-68 : len(b)-64-33]
		if !bytes.Equal(tail[:32], r.Contract[:]) || !bytes.Equal(tail[32:64], r.EventsRoot[:]) ||
			!bytes.Equal(tail[64:], []byte{0, 0, 0, 3}) {
			t.Fatalf("metering fields not before the hub key: %x", tail)
		}
		if err := r.VerifyKey(mustKey(t, "hub").PubKey()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("V1Unchanged", func(t *testing.T) {
		// A receipt without events still encodes as version 1, so every
		// receipt signed before version 2 keeps its id.
		b, err := sampleReceipt(t).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != ReceiptVersion {
			t.Fatalf("version %d", b[0])
		}
	})
	t.Run("ErrBadSignature", func(t *testing.T) {
		for name, mutate := range map[string]func(*Receipt){
			"contract": func(r *Receipt) { r.Contract[5] ^= 1 },
			"root":     func(r *Receipt) { r.EventsRoot[0] ^= 1 },
			"count":    func(r *Receipt) { r.EventCount++ },
		} {
			r := sampleReceiptV2(t)
			mutate(&r)
			if err := r.Verify(); !errors.Is(err, ErrBadSignature) {
				t.Errorf("%s tampered: err = %v", name, err)
			}
		}
	})
	t.Run("ErrBadReceipt", func(t *testing.T) {
		good, err := sampleReceiptV2(t).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		zeroCount := append([]byte{}, good...)
		off := len(good) - 64 - 33 - 4
		copy(zeroCount[off:], []byte{0, 0, 0, 0})
		v1Tagged := append([]byte{ReceiptVersion}, good[1:]...)
		for name, b := range map[string][]byte{
			"zero-count": zeroCount,
			"v1-tagged":  v1Tagged,
			"truncated":  good[:len(good)-1],
		} {
			var r Receipt
			if err := r.UnmarshalBinary(b); !errors.Is(err, ErrBadReceipt) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
		r := sampleReceipt(t)
		r.Contract = [32]byte{1}
		if _, err := r.MarshalBinary(); !errors.Is(err, ErrBadReceipt) {
			t.Errorf("contract without events: err = %v", err)
		}
	})
}

func TestEventsRoot(t *testing.T) {
	leaf := func(id string) [32]byte { return sha256.Sum256(append([]byte{0}, id...)) }
	node := func(l, r [32]byte) [32]byte { return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...)) }
	t.Run("Known", func(t *testing.T) {
		a, b, c := leaf("a"), leaf("b"), leaf("c")
		for name, tc := range map[string]struct {
			ids  []string
			want [32]byte
		}{
			"one":      {[]string{"a"}, a},
			"two":      {[]string{"b", "a"}, node(a, b)},
			"three":    {[]string{"c", "a", "b"}, node(node(a, b), c)},
			"unsorted": {[]string{"b", "c", "a"}, node(node(a, b), c)},
		} {
			got, n, err := EventsRoot(tc.ids)
			if err != nil || got != tc.want || int(n) != len(tc.ids) {
				t.Errorf("%s: root %x n %d err %v, want %x", name, got, n, err, tc.want)
			}
		}
	})
	t.Run("OrderFree", rapid.MakeCheck(func(rt *rapid.T) {
		ids := rapid.SliceOfNDistinct(rapid.StringN(1, 20, -1), 1, 50, func(s string) string { return s }).Draw(rt, "ids")
		r1, _, err := EventsRoot(ids)
		if err != nil {
			rt.Fatal(err)
		}
		perm := rapid.Permutation(ids).Draw(rt, "perm")
		r2, _, _ := EventsRoot(perm)
		if r1 != r2 {
			rt.Fatal("root depends on order")
		}
		// Dropping an id changes the root.
		if len(ids) > 1 {
			r3, _, _ := EventsRoot(ids[1:])
			if r3 == r1 {
				rt.Fatal("root ignores an id")
			}
		}
	}))
	t.Run("ErrBadReceipt", func(t *testing.T) {
		for name, ids := range map[string][]string{"empty": nil, "repeat": {"a", "b", "a"}} {
			if _, _, err := EventsRoot(ids); !errors.Is(err, ErrBadReceipt) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})
	t.Run("CoversEvents", func(t *testing.T) {
		r := sampleReceiptV2(t)
		if !r.CoversEvents([]string{"ev-1", "ev-2", "ev-3"}) {
			t.Fatal("receipt does not cover its events")
		}
		if r.CoversEvents([]string{"ev-1", "ev-2"}) || r.CoversEvents([]string{"ev-1", "ev-2", "ev-4"}) {
			t.Fatal("receipt covers other events")
		}
	})
}
