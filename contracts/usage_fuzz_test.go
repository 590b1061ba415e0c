package contracts

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseUsage feeds arbitrary bytes to ParseUsage (usage records come
// from providers): it must never panic, must refuse with ErrBadUsage, and
// whatever it accepts must encode to a record it accepts again, encoding
// the same way after that.
func FuzzParseUsage(f *testing.F) {
	seeds, err := filepath.Glob("testdata/usage/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUsage(b)
		if err != nil {
			if !errors.Is(err, ErrBadUsage) {
				t.Fatalf("refused with %v, want ErrBadUsage", err)
			}
			return
		}
		enc, err := json.Marshal(u)
		if err != nil {
			t.Fatalf("accepted usage does not encode: %v", err)
		}
		u2, err := ParseUsage(enc)
		if err != nil {
			t.Fatalf("re-encoded usage %s refused: %v", enc, err)
		}
		enc2, err := json.Marshal(u2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("usage encodes differently after a round trip:\n %s\n %s", enc, enc2)
		}
	})
}
