package wire

import (
	"bytes"
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// settleGens returns generators of valid settlement messages; messageGens
// merges them into the table every property, malformed and fuzz test uses.
func settleGens() map[MessageType]func(*rapid.T) Message {
	return map[MessageType]func(*rapid.T) Message{
		MsgSettleProposal: func(t *rapid.T) Message {
			return &SettleProposal{
				Epoch: genU64(t, "epoch"), ChanID: genOutPoint(t, "chan"),
				Template:     genVar(t, 1, MaxSettleTemplateSize, "tmpl"),
				NextCapacity: genSat(t, "cap"), NextExpiry: rapid.Uint32().Draw(t, "exp"),
				Spent: genMsat(t, "spent"), Earned: genMsat(t, "earned"), HubNonce: genNonce(t, "nonce"),
			}
		},
		MsgSettleSign: func(t *rapid.T) Message {
			return &SettleSign{Epoch: genU64(t, "epoch"), ChanID: genOutPoint(t, "chan"),
				DeviceNonce: genNonce(t, "nonce"), PartialSig: genArr32(t, "psig")}
		},
		MsgSettleDone: func(t *rapid.T) Message {
			return &SettleDone{Epoch: genU64(t, "epoch"), ChanID: genOutPoint(t, "chan"),
				NextOutpoint: genOutPoint(t, "next"), NextCapacity: genSat(t, "cap"),
				NextExpiry: rapid.Uint32().Draw(t, "exp"), Txid: genArr32(t, "txid")}
		},
	}
}

// TestSettleMalformedFields replaces single records of the settlement
// messages with values outside their bounds.
func TestSettleMalformedFields(t *testing.T) {
	long := func(n int) []byte { return bytes.Repeat([]byte{'a'}, n) }
	for _, tc := range []struct {
		name string
		typ  MessageType
		rec  uint64
		val  []byte
	}{
		{"SettleProposal/template-empty", MsgSettleProposal, 4, nil},
		{"SettleProposal/template-oversized", MsgSettleProposal, 4, long(MaxSettleTemplateSize + 1)},
		{"SettleProposal/epoch-4-bytes", MsgSettleProposal, 0, long(4)},
		{"SettleProposal/chan-35", MsgSettleProposal, 2, long(35)},
		{"SettleProposal/capacity-over-21e6-btc", MsgSettleProposal, 6, u64be(2100000000000001)},
		{"SettleProposal/capacity-negative", MsgSettleProposal, 6, u64be(1 << 63)},
		{"SettleProposal/expiry-8-bytes", MsgSettleProposal, 8, u64be(1)},
		{"SettleProposal/spent-over-max", MsgSettleProposal, 10, u64be(uint64(MaxMilliSatoshi) + 1)},
		{"SettleProposal/earned-over-max", MsgSettleProposal, 12, u64be(^uint64(0))},
		{"SettleProposal/nonce-65", MsgSettleProposal, 14, long(65)},
		{"SettleProposal/nonce-67", MsgSettleProposal, 14, long(67)},
		{"SettleSign/nonce-65", MsgSettleSign, 4, long(65)},
		{"SettleSign/partial-sig-31", MsgSettleSign, 6, long(31)},
		{"SettleSign/partial-sig-33", MsgSettleSign, 6, long(33)},
		{"SettleDone/next-37", MsgSettleDone, 4, long(37)},
		{"SettleDone/capacity-over-21e6-btc", MsgSettleDone, 6, u64be(2100000000000001)},
		{"SettleDone/txid-31", MsgSettleDone, 10, long(31)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := replaceRecord(t, validPayload(t, tc.typ), tc.rec, tc.val)
			mustRefuse(t, tc.typ, payload, tc.name)
		})
	}
}

// TestSettleEncodeRefusesOutOfBounds: the hub cannot send a proposal the
// device must refuse to decode.
func TestSettleEncodeRefusesOutOfBounds(t *testing.T) {
	for name, m := range map[string]Message{
		"no-template":       &SettleProposal{},
		"long-template":     &SettleProposal{Template: make([]byte, MaxSettleTemplateSize+1)},
		"negative-capacity": &SettleProposal{Template: []byte{1}, NextCapacity: -1},
		"huge-spent":        &SettleProposal{Template: []byte{1}, Spent: MaxMilliSatoshi + 1},
		"done-negative-cap": &SettleDone{NextCapacity: -1},
	} {
		if _, err := EncodeMessage(m); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// TestSettleSignLayout pins one encoding byte for byte against
// docs/protocol.md.
func TestSettleSignLayout(t *testing.T) {
	m := &SettleSign{Epoch: 7}
	m.ChanID.Hash[0] = 0x11
	m.ChanID.Index = 2
	m.DeviceNonce[0] = 0x02
	m.PartialSig[31] = 0x99
	b, err := EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	want = append(want, 0xBB, 0x2A)
	want = append(want, 0x00, 8, 0, 0, 0, 0, 0, 0, 0, 7)
	want = append(want, 0x02, 36, 0x11)
	want = append(want, make([]byte, 31)...)
	want = append(want, 0, 0, 0, 2)
	want = append(want, 0x04, 66, 0x02)
	want = append(want, make([]byte, 65)...)
	want = append(want, 0x06, 32)
	want = append(want, make([]byte, 31)...)
	want = append(want, 0x99)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding\n got  %x\n want %x", b, want)
	}
}
