package channel

import (
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
)

// BenchmarkVerifyClaim is the hub's per-payment cost: build the claim
// template, compute its BIP341 sighash and verify the device's signature.
func BenchmarkVerifyClaim(b *testing.B) {
	p := mustParty(b, "bench", 1_000_000, 900_000)
	s := State{ChannelID: p.id, Seq: 42, Paid: 123_456_789}
	sig, err := p.out.SignClaim(p.device, s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.out.VerifyClaim(s, sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClaimSigHash is VerifyClaim without the signature check.
func BenchmarkClaimSigHash(b *testing.B) {
	p := mustParty(b, "bench", 1_000_000, 900_000)
	s := State{ChannelID: p.id, Seq: 42, Paid: 123_456_789}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.out.ClaimSigHash(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSchnorrVerify is the baseline: one BIP340 verification alone.
func BenchmarkSchnorrVerify(b *testing.B) {
	key := mustKey(b, "bench")
	var msg [32]byte
	msg[0] = 1
	sig, err := schnorr.Sign(key, msg[:])
	if err != nil {
		b.Fatal(err)
	}
	pub := key.PubKey()
	b.ReportAllocs()
	for b.Loop() {
		if !sig.Verify(msg[:], pub) {
			b.Fatal("signature does not verify")
		}
	}
}

// BenchmarkVerifyClaimParallel is BenchmarkVerifyClaim on every core, the
// ceiling for signed updates per second.
func BenchmarkVerifyClaimParallel(b *testing.B) {
	p := mustParty(b, "bench", 1_000_000, 900_000)
	s := State{ChannelID: p.id, Seq: 42, Paid: 123_456_789}
	sig, err := p.out.SignClaim(p.device, s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.out.VerifyClaim(s, sig); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkNewOutput is the one-off cost of deriving a channel output.
func BenchmarkNewOutput(b *testing.B) {
	p := mustParty(b, "bench", 1_000_000, 900_000)
	params := p.out.Params()
	for b.Loop() {
		if _, err := NewOutput(params); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceiptSign is the hub's receipt per payment: Receipt.Sign
// derives the hub's public key each time, a ReceiptSigner once.
func BenchmarkReceiptSign(b *testing.B) {
	key := mustKey(b, "hub")
	r := sampleReceipt(b)
	b.Run("Receipt.Sign", func(b *testing.B) {
		for b.Loop() {
			if err := r.Sign(key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReceiptSigner", func(b *testing.B) {
		s := NewReceiptSigner(key)
		for b.Loop() {
			if err := s.Sign(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSignClaim is the device's per-payment signature: the claim
// sighash, the signature and its check against the device key.
func BenchmarkSignClaim(b *testing.B) {
	p := mustParty(b, "bench", 1_000_000, 900_000)
	s := State{ChannelID: p.id, Seq: 42, Paid: 123_456_789}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.out.SignClaim(p.device, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceiptVerifyKey is the device's check of each payment's
// receipt against its pinned hub key.
func BenchmarkReceiptVerifyKey(b *testing.B) {
	r := sampleReceipt(b)
	hub := mustKey(b, "hub").PubKey()
	b.ReportAllocs()
	for b.Loop() {
		if err := r.VerifyKey(hub); err != nil {
			b.Fatal(err)
		}
	}
}
