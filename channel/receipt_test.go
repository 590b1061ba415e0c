package channel

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"
)

// sampleReceipt returns a signed receipt with every field set.
func sampleReceipt(tb testing.TB) Receipt {
	tb.Helper()
	r := Receipt{
		Channel: wire.OutPoint{Hash: [32]byte{0xC4}, Index: 2},
		Seq:     41,
		Payer:   "car-7",
		Payee:   "charger-17",
		Amount:  12_345,
		Paid:    987_654,
		HoldID:  [16]byte{0xAB},
		Memo:    "session 5, 7.2 kWh",
		Time:    time.UnixMilli(1_750_000_000_123).UTC(),
	}
	if err := r.Sign(mustKey(tb, "hub")); err != nil {
		tb.Fatal(err)
	}
	return r
}

func genReceipt(t *rapid.T) Receipt {
	str := func(min, max int, label string) string {
		return rapid.StringOfN(rapid.Rune(), min, -1, max).Draw(t, label)
	}
	r := Receipt{
		Seq:    rapid.Uint64().Draw(t, "seq"),
		Payer:  str(1, MaxReceiptIDSize, "payer"),
		Payee:  str(1, MaxReceiptIDSize, "payee"),
		Amount: msat.Amount(rapid.Uint64().Draw(t, "amount")),
		Paid:   msat.Amount(rapid.Uint64().Draw(t, "paid")),
		Memo:   str(0, MaxReceiptMemoSize, "memo"),
		Time:   time.UnixMilli(rapid.Int64Range(0, 1<<50).Draw(t, "ms")).UTC(),
	}
	copy(r.Channel.Hash[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "txid"))
	r.Channel.Index = rapid.Uint32().Draw(t, "vout")
	copy(r.HoldID[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "hold"))
	copy(r.HubKey[:], rapid.SliceOfN(rapid.Byte(), 33, 33).Draw(t, "key"))
	copy(r.Sig[:], rapid.SliceOfN(rapid.Byte(), 64, 64).Draw(t, "sig"))
	return r
}

func TestReceiptEncoding(t *testing.T) {
	t.Run("RoundTrip", rapid.MakeCheck(func(rt *rapid.T) {
		in := genReceipt(rt)
		b, err := in.MarshalBinary()
		if err != nil {
			rt.Fatal(err)
		}
		if len(b) > MaxReceiptSize {
			rt.Fatalf("%d bytes", len(b))
		}
		var out Receipt
		if err := out.UnmarshalBinary(b); err != nil {
			rt.Fatal(err)
		}
		if out != in {
			rt.Fatalf("changed:\n in  %+v\n out %+v", in, out)
		}
		if out.ID() != in.ID() {
			rt.Fatal("ID changed")
		}
	}))
	t.Run("Layout", func(t *testing.T) {
		r := sampleReceipt(t)
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// Fixed part 194 bytes plus the three strings.
		if want := 194 + len(r.Payer) + len(r.Payee) + len(r.Memo); len(b) != want {
			t.Fatalf("%d bytes, want %d", len(b), want)
		}
		if b[0] != ReceiptVersion || !bytes.Equal(b[len(b)-64:], r.Sig[:]) {
			t.Fatal("version must lead and sig must trail")
		}
		id := chainhash.TaggedHash([]byte("m2mhub/receipt/v1"), b[:len(b)-64])
		if r.ID() != *id {
			t.Fatal("ID is not the tagged hash of the encoding without sig")
		}
	})
	t.Run("TimeIsMilliseconds", func(t *testing.T) {
		r := sampleReceipt(t)
		r.Time = r.Time.Add(999 * time.Microsecond)
		b, _ := r.MarshalBinary()
		var out Receipt
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !out.Time.Equal(r.Time.Truncate(time.Millisecond)) {
			t.Fatalf("time %v", out.Time)
		}
	})
	t.Run("ErrBadReceipt", func(t *testing.T) {
		good, err := sampleReceipt(t).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		cases := map[string][]byte{
			"empty":          nil,
			"version-2":      append([]byte{2}, good[1:]...),
			"truncated":      good[:len(good)-1],
			"trailing":       append(append([]byte{}, good...), 0),
			"oversized":      make([]byte, MaxReceiptSize+1),
			"payer-len-huge": append(append(append([]byte{}, good[:45]...), 0xff, 0xff, 0xff, 0xff), good[49:]...),
		}
		for name, b := range cases {
			var r Receipt
			if err := r.UnmarshalBinary(b); !errors.Is(err, ErrBadReceipt) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
		for name, mutate := range map[string]func(*Receipt){
			"payer-empty":     func(r *Receipt) { r.Payer = "" },
			"payee-too-long":  func(r *Receipt) { r.Payee = strings.Repeat("p", MaxReceiptIDSize+1) },
			"memo-too-long":   func(r *Receipt) { r.Memo = strings.Repeat("m", MaxReceiptMemoSize+1) },
			"memo-not-utf8":   func(r *Receipt) { r.Memo = "\xff" },
			"before-1970":     func(r *Receipt) { r.Time = time.Unix(-1, 0) },
			"zero-time-value": func(r *Receipt) { r.Time = time.Time{} },
		} {
			r := sampleReceipt(t)
			mutate(&r)
			if _, err := r.MarshalBinary(); !errors.Is(err, ErrBadReceipt) {
				t.Errorf("marshal %s: err = %v", name, err)
			}
			if err := r.Sign(mustKey(t, "hub")); !errors.Is(err, ErrBadReceipt) {
				t.Errorf("sign %s: err = %v", name, err)
			}
		}
	})
}

func TestReceiptSignature(t *testing.T) {
	hub := mustKey(t, "hub")
	t.Run("OK", func(t *testing.T) {
		r := sampleReceipt(t)
		if err := r.Verify(); err != nil {
			t.Fatal(err)
		}
		if err := r.VerifyKey(hub.PubKey()); err != nil {
			t.Fatal(err)
		}
		// Survives the trip through bytes.
		b, _ := r.MarshalBinary()
		var out Receipt
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if err := out.Verify(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("OKSigner", func(t *testing.T) {
		// One signer for many receipts signs each as Receipt.Sign does.
		s := NewReceiptSigner(hub)
		for seq := uint64(1); seq <= 3; seq++ {
			want := sampleReceipt(t)
			want.Seq = seq
			if err := want.Sign(hub); err != nil {
				t.Fatal(err)
			}
			got := want
			got.HubKey, got.Sig = [33]byte{}, [64]byte{}
			if err := s.Sign(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("seq %d: signer gave %x/%x, Sign %x/%x", seq, got.HubKey, got.Sig, want.HubKey, want.Sig)
			}
		}
	})
	t.Run("ErrBadSignature", func(t *testing.T) {
		for name, mutate := range map[string]func(*Receipt){
			"channel": func(r *Receipt) { r.Channel.Index++ },
			"seq":     func(r *Receipt) { r.Seq++ },
			"payer":   func(r *Receipt) { r.Payer = "car-8" },
			"payee":   func(r *Receipt) { r.Payee = "charger-18" },
			"amount":  func(r *Receipt) { r.Amount++ },
			"paid":    func(r *Receipt) { r.Paid++ },
			"hold":    func(r *Receipt) { r.HoldID = [16]byte{} },
			"memo":    func(r *Receipt) { r.Memo += "!" },
			"time":    func(r *Receipt) { r.Time = r.Time.Add(time.Millisecond) },
			"sig":     func(r *Receipt) { r.Sig[10] ^= 1 },
			"other-key": func(r *Receipt) {
				r.HubKey = [33]byte(mustKey(t, "mallory").PubKey().SerializeCompressed())
			},
		} {
			r := sampleReceipt(t)
			mutate(&r)
			if err := r.Verify(); !errors.Is(err, ErrBadSignature) {
				t.Errorf("%s tampered: err = %v, want ErrBadSignature", name, err)
			}
			// The pinned-key check (ReceiptVerifier) refuses it too.
			want := ErrBadSignature
			if name == "other-key" {
				want = ErrNotParticipant
			}
			if err := r.VerifyKey(hub.PubKey()); !errors.Is(err, want) {
				t.Errorf("%s tampered: VerifyKey err = %v, want %v", name, err, want)
			}
		}
	})
	t.Run("ErrNotParticipant", func(t *testing.T) {
		r := sampleReceipt(t)
		if err := r.VerifyKey(mustKey(t, "mallory").PubKey()); !errors.Is(err, ErrNotParticipant) {
			t.Fatalf("err = %v", err)
		}
		// A receipt re-signed by another key verifies on its own, which
		// is why callers pin the hub key.
		if err := r.Sign(mustKey(t, "mallory")); err != nil {
			t.Fatal(err)
		}
		if err := r.Verify(); err != nil {
			t.Fatal(err)
		}
		if err := r.VerifyKey(hub.PubKey()); !errors.Is(err, ErrNotParticipant) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrBadReceiptKey", func(t *testing.T) {
		r := sampleReceipt(t)
		r.HubKey = [33]byte{0x05}
		if err := r.Verify(); !errors.Is(err, ErrBadReceipt) {
			t.Fatalf("err = %v", err)
		}
	})
}
