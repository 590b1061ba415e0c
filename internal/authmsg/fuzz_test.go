package authmsg

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
)

// FuzzParseToken feeds arbitrary bytes to ParseToken (a device presents
// them before it is known): it must never panic, must refuse with
// ErrMalformed or ErrBadSignature, and may accept only the content the
// operator signed, however the JSON around it is spelled.
func FuzzParseToken(f *testing.F) {
	op, _ := btcec.PrivKeyFromBytes(bytes.Repeat([]byte{7}, 32))
	signed := Token{ID: "tok-1", Roles: []string{"payer"}, Owner: "fleet", Kind: "car", Expires: time.Unix(1_900_000_000, 0).UTC()}
	raw, err := SignToken(op, signed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add([]byte(`{"id":"x","roles":[],"expires":"2030-01-01T00:00:00Z","sig":"00"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := ParseToken(op.PubKey(), b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("refused with %v, want ErrMalformed or ErrBadSignature", err)
			}
			return
		}
		tok.Sig = ""
		if !reflect.DeepEqual(tok, signed) {
			t.Fatalf("accepted content the operator never signed: %+v", tok)
		}
	})
}
