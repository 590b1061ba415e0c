package wire

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"
)

// syncGens returns generators of valid resynchronisation messages;
// messageGens merges them into the shared table.
func syncGens() map[MessageType]func(*rapid.T) Message {
	return map[MessageType]func(*rapid.T) Message{
		MsgChannelSync: func(t *rapid.T) Message {
			return &ChannelSync{ChanID: genOutPoint(t, "chan")}
		},
		MsgChannelState: func(t *rapid.T) Message {
			m := &ChannelState{ChanID: genOutPoint(t, "chan"), Seq: genU64(t, "seq"), Paid: genMsat(t, "paid")}
			if m.Seq > 0 {
				sig := genArr64(t, "sig")
				m.Sig = &sig
			}
			for i := range rapid.IntRange(0, 3).Draw(t, "holds") {
				max := genMsat(t, fmt.Sprint("max", i))
				m.Holds = append(m.Holds, HoldState{
					ID: genArr16(t, "id"), Max: max,
					Captured: msat.Amount(rapid.Uint64Range(0, uint64(max)).Draw(t, "captured")),
					Expires:  genU64(t, "exp"), Provider: genID(t, "prov"), Sig: genArr64(t, "hsig"),
				})
			}
			return m
		},
	}
}

// TestChannelStateLayout pins both messages byte for byte against
// docs/protocol.md.
func TestChannelStateLayout(t *testing.T) {
	op := ChannelSync{}
	op.ChanID.Index = 3
	b, err := EncodeMessage(&op)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0xBB, 0x2E, 0x00, 36}, make([]byte, 32)...)
	want = append(want, 0, 0, 0, 3)
	if !bytes.Equal(b, want) {
		t.Fatalf("ChannelSync\n got  %x\n want %x", b, want)
	}

	sig := [64]byte{0x11}
	st := &ChannelState{ChanID: op.ChanID, Seq: 7, Paid: 5000, Sig: &sig}
	b, err = EncodeMessage(st)
	if err != nil {
		t.Fatal(err)
	}
	want = append([]byte{0xBB, 0x30, 0x00, 36}, make([]byte, 32)...)
	want = append(want, 0, 0, 0, 3)
	want = append(want, 0x02, 8, 0, 0, 0, 0, 0, 0, 0, 7)
	want = append(want, 0x04, 8, 0, 0, 0, 0, 0, 0, 0x13, 0x88)
	want = append(want, 0x05, 64, 0x11)
	want = append(want, make([]byte, 63)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("ChannelState\n got  %x\n want %x", b, want)
	}
}
