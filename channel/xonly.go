package channel

import (
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
)

// xOnlyKey is a BIP-340 public key lifted once: the curve point with even
// Y and the 32 bytes of its X. btcec's schnorr.Signature.Verify takes a
// *btcec.PublicKey, serialises it to x-only form and parses it back on
// every call, a square root on the curve that measured 7–8 % of each
// claim check on the hub's hot path; a channel keeps its device key lifted
// instead.
type xOnlyKey struct {
	p btcec.JacobianPoint // affine (Z = 1), Y even; only read once built
	x [32]byte
}

// liftKey returns pub as a BIP-340 key: the point of pub's X with even Y.
func liftKey(pub *btcec.PublicKey) xOnlyKey {
	var k xOnlyKey
	pub.AsJacobian(&k.p)
	if k.p.Y.IsOdd() {
		k.p.Y.Negate(1).Normalize()
	}
	copy(k.x[:], schnorr.SerializePubKey(pub))
	return k
}

// verify reports whether sig is a valid BIP-340 signature of hash under k,
// following BIP-340's Verify steps as btcec's schnorrVerify does, less the
// key's lift_x (done once by liftKey). Unlike btcec's ParseSignature it
// refuses an s of n or more, as BIP-340 says, rather than reducing it.
func (k *xOnlyKey) verify(hash *[32]byte, sig *[64]byte) bool {
	// r < p and s < n.
	var r btcec.FieldVal
	if overflow := r.SetByteSlice(sig[:32]); overflow {
		return false
	}
	var s btcec.ModNScalar
	if overflow := s.SetByteSlice(sig[32:]); overflow {
		return false
	}
	// e = tagged_hash("BIP0340/challenge", r || P || m) mod n, negated so
	// that R = s·G + (−e)·P is one addition.
	commitment := chainhash.TaggedHash(chainhash.TagBIP0340Challenge, sig[:32], k.x[:], hash[:])
	var e btcec.ModNScalar
	e.SetBytes((*[32]byte)(commitment))
	e.Negate()

	var sG, eP, R btcec.JacobianPoint
	btcec.ScalarBaseMultNonConst(&s, &sG)
	btcec.ScalarMultNonConst(&e, &k.p, &eP)
	btcec.AddNonConst(&sG, &eP, &R)
	// R must not be infinity, must have an even Y, and its X must be r.
	if (R.X.IsZero() && R.Y.IsZero()) || R.Z.IsZero() {
		return false
	}
	R.ToAffine()
	if R.Y.IsOdd() {
		return false
	}
	return r.Equals(&R.X)
}
