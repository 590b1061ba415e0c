package contracts

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that the decoder never panics, refuses only with its
// sentinels, and that whatever it accepts has a stable canonical form:
// Parse → Canonical → Parse gives the same canonical bytes and hash, and
// the hash is the SHA-256 of those bytes. The seed corpus in
// testdata/fuzz/FuzzParse holds one valid document per kind; the example
// files are added too.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "examples", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimalToll))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		canon := c.Canonical()
		if c.Hash() != sha256.Sum256(canon) {
			t.Fatal("hash is not the SHA-256 of the canonical form")
		}
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("canonical form refused: %v\n%s", err, canon)
		}
		if !bytes.Equal(again.Canonical(), canon) || again.Hash() != c.Hash() {
			t.Fatalf("canonical form unstable:\n%s\n%s", canon, again.Canonical())
		}
	})
}
