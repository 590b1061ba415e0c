package wire

import (
	"bytes"
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// FuzzDecodeMessage feeds arbitrary bytes to DecodeMessage. Whatever it
// accepts as one of m2mhub's types must re-encode, decode again to the same
// encoding, and stay stable from then on; whatever it refuses must be
// refused with ErrProtocol (never a panic or another error). The committed
// corpus in testdata/fuzz/FuzzDecodeMessage holds a valid encoding of every
// message type.
func FuzzDecodeMessage(f *testing.F) {
	for _, typ := range sortedTypes() {
		m := rapid.Custom(messageGens()[typ]).Example(2)
		b, err := EncodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not wrapping ErrProtocol: %v", err)
			}
			return
		}
		if NewMessage(msg.MsgType()) == nil {
			return // not ours: lnwire's own messages and foreign custom types
		}
		b1, err := EncodeMessage(msg)
		if err != nil {
			t.Fatalf("decoded %T does not encode: %v", msg, err)
		}
		msg2, err := DecodeMessage(b1)
		if err != nil {
			t.Fatalf("re-decode of %x: %v", b1, err)
		}
		b2, err := EncodeMessage(msg2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding not stable (%v):\n %x\n %x", err, b1, b2)
		}
		// The canonical form may only drop unknown odd records and empty
		// optional strings, so it is never longer than the input.
		if len(b1) > len(data) {
			t.Fatalf("canonical form longer than input: %d > %d", len(b1), len(data))
		}
	})
}
