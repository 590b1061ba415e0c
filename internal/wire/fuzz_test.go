package wire

import (
	"bytes"
	"testing"
)

// FuzzEnrol checks that any payload Enrol.Decode accepts re-encodes to a
// canonical form that decodes to the same token and re-encodes identically.
// The committed corpus lives in testdata/fuzz/FuzzEnrol.
func FuzzEnrol(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 'a'})
	f.Add([]byte{0x00, 0x03, 't', 'o', 'k', 0x03, 0x00})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var e Enrol
		if err := e.Decode(bytes.NewReader(payload), ProtocolVersion); err != nil {
			return
		}
		var b1 bytes.Buffer
		if err := e.Encode(&b1, ProtocolVersion); err != nil {
			t.Fatalf("decoded enrol does not encode: %v", err)
		}
		var e2 Enrol
		if err := e2.Decode(bytes.NewReader(b1.Bytes()), ProtocolVersion); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(e.Token, e2.Token) {
			t.Fatalf("token changed: %x -> %x", e.Token, e2.Token)
		}
		var b2 bytes.Buffer
		if err := e2.Encode(&b2, ProtocolVersion); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
			t.Fatalf("encoding not stable: %x vs %x", b1.Bytes(), b2.Bytes())
		}
		// The full message path must agree with the bare payload decoder.
		msg, err := DecodeMessage(append([]byte{0xBB, 0x00}, payload...))
		if err != nil {
			t.Fatalf("DecodeMessage rejects what Decode accepts: %v", err)
		}
		if !bytes.Equal(msg.(*Enrol).Token, e.Token) {
			t.Fatal("DecodeMessage and Decode disagree")
		}
	})
}
