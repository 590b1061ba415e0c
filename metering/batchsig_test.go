package metering_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/m2mhub/m2mhub/metering"
)

func TestBatchSignature(t *testing.T) {
	key := mustKey(t, 7)
	other := mustKey(t, 8)
	batch := func() []metering.Event {
		return []metering.Event{testEvent("b-1"), testEvent("b-2"), testEvent("b-3")}
	}
	evs := batch()
	sig, err := metering.SignBatch(evs, key)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("OK", func(t *testing.T) {
		if err := metering.VerifyBatch(batch(), sig, key.PubKey()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("OKIgnoresEventSigs", func(t *testing.T) {
		// The per-event signature is not part of the batch digest: a
		// provider may send both, and the batch signature alone counts.
		signed := batch()
		for i := range signed {
			if err := metering.Sign(&signed[i], key); err != nil {
				t.Fatal(err)
			}
		}
		if err := metering.VerifyBatch(signed, sig, key.PubKey()); err != nil {
			t.Fatal(err)
		}
	})
	bad := map[string]func() ([]metering.Event, string){
		"ErrBadSignatureChangedQuantity": func() ([]metering.Event, string) {
			e := batch()
			e[1].Data.Quantity = "2"
			return e, sig
		},
		"ErrBadSignatureReordered": func() ([]metering.Event, string) {
			e := batch()
			e[0], e[1] = e[1], e[0]
			return e, sig
		},
		"ErrBadSignatureDropped": func() ([]metering.Event, string) { return batch()[:2], sig },
		"ErrBadSignatureOtherKey": func() ([]metering.Event, string) {
			s, err := metering.SignBatch(batch(), other)
			if err != nil {
				t.Fatal(err)
			}
			return batch(), s
		},
		"ErrBadSignatureNotHex": func() ([]metering.Event, string) { return batch(), "zz" + sig[2:] },
		"ErrBadSignatureShort":  func() ([]metering.Event, string) { return batch(), sig[:126] },
	}
	for name, mk := range bad {
		t.Run(name, func(t *testing.T) {
			e, s := mk()
			if err := metering.VerifyBatch(e, s, key.PubKey()); !errors.Is(err, metering.ErrBadSignature) {
				t.Fatalf("got %v, want ErrBadSignature", err)
			}
		})
	}
	t.Run("DigestIsTaggedHashOfEventDigests", func(t *testing.T) {
		// Recompute the construction docs/metering.md gives, independently.
		tag := sha256.Sum256([]byte("m2mhub/usage-batch/v1"))
		h := sha256.New()
		h.Write(tag[:])
		h.Write(tag[:])
		for i := range evs {
			d := metering.Digest(&evs[i])
			h.Write(d[:])
		}
		got := metering.BatchDigest(evs)
		if want := h.Sum(nil); hex.EncodeToString(got[:]) != hex.EncodeToString(want) {
			t.Fatalf("BatchDigest %x, want %x", got, want)
		}
	})
}
