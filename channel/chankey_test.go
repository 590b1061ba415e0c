package channel

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"pgregory.net/rapid"
)

func TestChannelKeyTweak(t *testing.T) {
	device := mustKey(t, "device").PubKey()
	other := mustKey(t, "other").PubKey()
	hub := mustKey(t, "hub")
	pending := [32]byte{1, 2, 3}

	t.Run("MatchesTaggedHash", func(t *testing.T) {
		tw := ChannelKeyTweak(device, pending)
		h := chainhash.TaggedHash([]byte("m2mhub/chankey"), device.SerializeCompressed(), pending[:])
		var want btcec.ModNScalar
		want.SetBytes((*[32]byte)(h))
		if !tw.Equals(&want) {
			t.Fatal("tweak is not the tagged hash of device key || pending id")
		}
	})
	t.Run("BindsDeviceAndPendingID", func(t *testing.T) {
		a := ChannelKeyTweak(device, pending)
		b := ChannelKeyTweak(other, pending)
		c := ChannelKeyTweak(device, [32]byte{1, 2, 4})
		if a.Equals(&b) || a.Equals(&c) {
			t.Fatal("different inputs gave the same tweak")
		}
	})
	t.Run("PrivAndPubAgree", rapid.MakeCheck(func(rt *rapid.T) {
		var id [32]byte
		copy(id[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "pending"))
		tw := ChannelKeyTweak(device, id)
		pub, err := HubChannelPubKey(hub.PubKey(), tw)
		if err != nil {
			rt.Fatal(err)
		}
		priv, err := HubChannelPrivKey(hub, tw)
		if err != nil {
			rt.Fatal(err)
		}
		if !priv.PubKey().IsEqual(pub) {
			rt.Fatal("p+t does not match P+tG")
		}
		if pub.IsEqual(hub.PubKey()) {
			rt.Fatal("channel key equals identity key")
		}
	}))
	t.Run("ErrInvalidParams", func(t *testing.T) {
		tw := ChannelKeyTweak(device, pending)
		if _, err := HubChannelPubKey(nil, tw); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("nil pub: %v", err)
		}
		if _, err := HubChannelPrivKey(nil, tw); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("nil priv: %v", err)
		}
		// A tweak of −p cancels the key: both sides must refuse it.
		neg := hub.Key
		neg.Negate()
		if _, err := HubChannelPrivKey(hub, neg); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("priv p−p: %v", err)
		}
		if _, err := HubChannelPubKey(hub.PubKey(), neg); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("pub P−P: %v", err)
		}
	})
}
