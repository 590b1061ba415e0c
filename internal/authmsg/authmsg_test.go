package authmsg

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
)

func mustKey(t *testing.T) *btcec.PrivateKey {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestToken(t *testing.T) {
	op := mustKey(t)
	tok := Token{ID: "t1", Roles: []string{"payer"}, Owner: "acme", Expires: time.Now().Add(time.Hour)}
	raw, err := SignToken(op, tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		got, err := ParseToken(op.PubKey(), raw)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != "t1" || got.Owner != "acme" || len(got.Roles) != 1 {
			t.Fatalf("parsed %+v", got)
		}
	})
	t.Run("ErrBadSignatureOtherOperator", func(t *testing.T) {
		if _, err := ParseToken(mustKey(t).PubKey(), raw); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrBadSignatureTampered", func(t *testing.T) {
		forged := bytes.Replace(raw, []byte(`"payer"`), []byte(`"provider"`), 1)
		if _, err := ParseToken(op.PubKey(), forged); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		for _, b := range [][]byte{nil, []byte("{"), []byte(`{"id":""}`), bytes.Repeat([]byte("x"), MaxTokenSize+1)} {
			if _, err := ParseToken(op.PubKey(), b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%q: err = %v", b, err)
			}
		}
	})
}

func TestRotation(t *testing.T) {
	old, next := mustKey(t), mustKey(t)
	sig, err := SignRotation(old, "dev-1", next.PubKey())
	if err != nil {
		t.Fatal(err)
	}
	newKey := next.PubKey().SerializeCompressed()
	if err := VerifyRotation(old.PubKey(), "dev-1", newKey, sig); err != nil {
		t.Fatal(err)
	}
	// The signature binds the device id and the new key.
	if err := VerifyRotation(old.PubKey(), "dev-2", newKey, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other device: %v", err)
	}
	if err := VerifyRotation(old.PubKey(), "dev-1", mustKey(t).PubKey().SerializeCompressed(), sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	if err := VerifyRotation(next.PubKey(), "dev-1", newKey, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signed by the new key: %v", err)
	}
}
