package ocmf

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary text to the OCMF parser, as a charger's
// signedMeterData reaches it: it must never panic, must refuse only with
// its sentinels, and a message it accepts keeps its signed payload byte for
// byte and verifies, or fails to, without panicking. The committed corpus
// in testdata/fuzz/FuzzParse holds messages of every curve; the testdata
// messages are added too.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.ocmf"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		f.Add(mustRead(f, filepath.Base(name)))
	}
	key := mustKey(f, "secp256r1")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if !strings.HasPrefix(s, "OCMF|"+string(m.Payload)+"|") {
			t.Fatal("payload is not the text between the pipes")
		}
		if err := m.Verify(key); err != nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("verify error without sentinel: %v", err)
		}
		if _, err := MeterValues([]*Message{m}); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("meter values error without sentinel: %v", err)
		}
	})
}
