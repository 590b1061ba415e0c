package channel

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
)

// TestLiftedKeyVerifiesAsBtcec checks the lifted-key verification against
// btcec's own schnorr verification: keys of both Y parities, valid
// signatures, a bit changed in each byte of signature and message, a
// signature under another key, and r ≥ p or s ≥ n, which are refused.
func TestLiftedKeyVerifiesAsBtcec(t *testing.T) {
	var odd, even int
	for i := range 8 {
		key := mustKey(t, fmt.Sprintf("xonly-%d", i))
		other := mustKey(t, fmt.Sprintf("xonly-other-%d", i))
		if key.PubKey().SerializeCompressed()[0] == 0x03 {
			odd++
		} else {
			even++
		}
		k := liftKey(key.PubKey())
		hash := sha256.Sum256([]byte(fmt.Sprintf("message %d", i)))
		sig, err := schnorr.Sign(key, hash[:])
		if err != nil {
			t.Fatal(err)
		}
		raw := [64]byte(sig.Serialize())
		if !k.verify(&hash, &raw) {
			t.Fatalf("key %d: a valid signature does not verify", i)
		}
		check := func(what string, h [32]byte, s [64]byte) {
			t.Helper()
			want := false
			if parsed, err := schnorr.ParseSignature(s[:]); err == nil {
				want = parsed.Verify(h[:], key.PubKey())
			}
			if got := k.verify(&h, &s); got != want {
				t.Fatalf("key %d, %s: verify = %v, btcec says %v", i, what, got, want)
			}
		}
		// One bit of each byte, a different bit from byte to byte.
		for n := range 64 {
			s := raw
			s[n] ^= 1 << ((n + i) % 8)
			check(fmt.Sprintf("signature byte %d changed", n), hash, s)
		}
		for n := range 32 {
			h := hash
			h[n] ^= 1 << ((n + i) % 8)
			check(fmt.Sprintf("message byte %d changed", n), h, raw)
		}
		otherSig, err := schnorr.Sign(other, hash[:])
		if err != nil {
			t.Fatal(err)
		}
		check("another key's signature", hash, [64]byte(otherSig.Serialize()))

		// r = p (the field prime) and s = n (the group order) are out of
		// range: BIP-340 fails both.
		highR, highS := raw, raw
		copy(highR[:32], mustHex("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f"))
		copy(highS[32:], mustHex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"))
		if k.verify(&hash, &highR) || k.verify(&hash, &highS) {
			t.Fatalf("key %d: r = p or s = n verified", i)
		}
	}
	if odd == 0 || even == 0 {
		t.Fatalf("keys with odd Y %d, even Y %d: want both", odd, even)
	}
}

// mustHex decodes a hex constant of the test.
func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
