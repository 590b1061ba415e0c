package boltstore

import (
	"bytes"
	"testing"
)

// FuzzChannelState feeds arbitrary bytes to the decoder of a channel's
// stored state: it must accept exactly the stateLen-byte values and
// re-encode whatever it accepts to the same bytes. Inputs are capped at
// twice that length: any other length is refused by the first check, and
// longer ones only reach fmt printing a longer number (see
// channel.FuzzStateDecode).
func FuzzChannelState(f *testing.F) {
	f.Add(encodeState(chanState{seq: 7, paid: 12_345, owed: 3}))
	f.Add(make([]byte, stateLen))
	f.Add(make([]byte, stateLen-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = b[:min(len(b), 2*stateLen)]
		s, err := decodeState(b)
		if len(b) != stateLen {
			if err == nil {
				t.Fatalf("%d bytes accepted", len(b))
			}
			return
		}
		if err != nil {
			t.Fatalf("%d bytes refused: %v", len(b), err)
		}
		if again := encodeState(s); !bytes.Equal(again, b) {
			t.Fatalf("round trip %x -> %x", b, again)
		}
	})
}
