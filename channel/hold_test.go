package channel

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

func TestHold(t *testing.T) {
	device := mustKey(t, "device")
	id := [16]byte{9}
	ch := wire.OutPoint{Hash: [32]byte{7}, Index: 1}
	const provider = "charger-17"
	const max = msat.Amount(50_000_000)
	const expires = uint64(1_900_000_000)

	sig, err := SignHold(device, id, ch, provider, max, expires)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		if err := VerifyHold(device.PubKey(), id, ch, provider, max, expires, sig); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("DigestBindsEveryField", func(t *testing.T) {
		base := HoldDigest(id, ch, provider, max, expires)
		variants := map[string][32]byte{
			"hold-id":    HoldDigest([16]byte{8}, ch, provider, max, expires),
			"txid":       HoldDigest(id, wire.OutPoint{Hash: [32]byte{6}, Index: 1}, provider, max, expires),
			"vout":       HoldDigest(id, wire.OutPoint{Hash: [32]byte{7}, Index: 2}, provider, max, expires),
			"provider":   HoldDigest(id, ch, "charger-18", max, expires),
			"max":        HoldDigest(id, ch, provider, max+1, expires),
			"expires":    HoldDigest(id, ch, provider, max, expires+1),
			"empty-prov": HoldDigest(id, ch, "", max, expires),
		}
		for name, d := range variants {
			if d == base {
				t.Errorf("%s does not change the digest", name)
			}
		}
	})
	t.Run("LengthPrefixIsUnambiguous", func(t *testing.T) {
		// Without the length prefix, moving a byte between provider and
		// max could collide; with it the digests differ.
		a := HoldDigest(id, ch, "ab", 0, 0)
		b := HoldDigest(id, ch, "a", msat.Amount('b')<<56, 0)
		if a == b {
			t.Fatal("provider/max boundary is ambiguous")
		}
	})
	t.Run("ErrBadSignature", func(t *testing.T) {
		for name, check := range map[string]error{
			"other-provider": VerifyHold(device.PubKey(), id, ch, "charger-18", max, expires, sig),
			"higher-max":     VerifyHold(device.PubKey(), id, ch, provider, max+1, expires, sig),
			"later-expiry":   VerifyHold(device.PubKey(), id, ch, provider, max, expires+1, sig),
			"other-channel":  VerifyHold(device.PubKey(), id, wire.OutPoint{Hash: ch.Hash, Index: 0}, provider, max, expires, sig),
			"other-hold":     VerifyHold(device.PubKey(), [16]byte{1}, ch, provider, max, expires, sig),
			"other-key":      VerifyHold(mustKey(t, "mallory").PubKey(), id, ch, provider, max, expires, sig),
			"nil-key":        VerifyHold(nil, id, ch, provider, max, expires, sig),
			"garbage-sig":    VerifyHold(device.PubKey(), id, ch, provider, max, expires, [64]byte{0xff}),
		} {
			if !errors.Is(check, ErrBadSignature) {
				t.Errorf("%s: err = %v, want ErrBadSignature", name, check)
			}
		}
	})
}
