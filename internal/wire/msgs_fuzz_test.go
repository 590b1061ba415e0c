package wire

import (
	"bytes"
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// FuzzDecodeMessage feeds arbitrary bytes to DecodeMessage. Whatever it
// accepts (BOLT 1 messages, m2mhub's types, foreign custom types) must re-encode, decode again to the same
// encoding, and stay stable from then on; whatever it refuses must be
// refused with ErrProtocol (never a panic or another error). The committed
// corpus in testdata/fuzz/FuzzDecodeMessage holds a valid encoding of every
// message type; the seeds below add the BOLT 1 messages.
func FuzzDecodeMessage(f *testing.F) {
	seeds := []Message{
		NewInit(),
		&Init{GlobalFeatures: NewRawFeatureVector(1), Features: NewRawFeatureVector(0, 301), ExtraData: []byte{0x03, 0x01, 0x00}},
		NewError(CodeRevoked, "this device has been revoked"),
		&Warning{ChanID: ChannelID{1}, Data: WarningData("careful")},
		NewPing(16),
		&Ping{NumPongBytes: 3, PaddingBytes: PingPayload{1, 2, 3}},
		NewPong(make([]byte, 4)),
		&Custom{Type: TypeBase + 1, Data: []byte("foreign")},
	}
	for _, typ := range sortedTypes() {
		seeds = append(seeds, rapid.Custom(messageGens()[typ]).Example(2))
	}
	for _, m := range seeds {
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
