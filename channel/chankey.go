package channel

import (
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
)

// chanKeyTag is the BIP-340 tag of the per-channel hub key tweak.
const chanKeyTag = "m2mhub/chankey"

// ChannelKeyTweak returns t = tagged_hash("m2mhub/chankey", compressed
// device key || pendingID) reduced mod n. The hub's key for a channel is its
// identity key plus t·G, so every channel has its own address while the
// device, knowing only the pinned hub identity key, can check the key it is
// offered before funding.
func ChannelKeyTweak(deviceKey *btcec.PublicKey, pendingID [32]byte) btcec.ModNScalar {
	h := chainhash.TaggedHash([]byte(chanKeyTag), deviceKey.SerializeCompressed(), pendingID[:])
	var t btcec.ModNScalar
	// A hash at or above n (probability ~2^-128) is reduced; both sides
	// reduce the same way, which is all that matters.
	t.SetBytes((*[32]byte)(h))
	return t
}

// HubChannelPubKey returns P + t·G for the hub identity key P. It returns an
// error wrapping ErrInvalidParams when the key is missing or the sum is the
// point at infinity.
func HubChannelPubKey(hubIdentity *btcec.PublicKey, tweak btcec.ModNScalar) (*btcec.PublicKey, error) {
	if hubIdentity == nil {
		return nil, fmt.Errorf("%w: no hub identity key", ErrInvalidParams)
	}
	var p, tG, sum btcec.JacobianPoint
	hubIdentity.AsJacobian(&p)
	btcec.ScalarBaseMultNonConst(&tweak, &tG)
	btcec.AddNonConst(&p, &tG, &sum)
	if (sum.X.IsZero() && sum.Y.IsZero()) || sum.Z.IsZero() {
		return nil, fmt.Errorf("%w: tweaked hub key is the point at infinity", ErrInvalidParams)
	}
	sum.ToAffine()
	return btcec.NewPublicKey(&sum.X, &sum.Y), nil
}

// HubChannelPrivKey returns p + t mod n for the hub identity key p: the
// private key of HubChannelPubKey(p·G, tweak). It returns an error wrapping
// ErrInvalidParams when the key is missing or the sum is zero.
func HubChannelPrivKey(hubIdentity *btcec.PrivateKey, tweak btcec.ModNScalar) (*btcec.PrivateKey, error) {
	if hubIdentity == nil {
		return nil, fmt.Errorf("%w: no hub identity key", ErrInvalidParams)
	}
	k := hubIdentity.Key
	k.Add(&tweak)
	if k.IsZero() {
		return nil, fmt.Errorf("%w: tweaked hub key is zero", ErrInvalidParams)
	}
	return btcec.PrivKeyFromScalar(&k), nil
}
