package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/channel"
	"pgregory.net/rapid"
)

func sortedTypes() []MessageType {
	var ts []MessageType
	for t := range messageGens() {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// TestMessageTable checks that every type of the spec has a generator, a
// constructor and the spec's number.
func TestMessageTable(t *testing.T) {
	ts := sortedTypes()
	if len(ts) != 24 {
		t.Fatalf("%d message types, spec has 24", len(ts))
	}
	for i, typ := range ts {
		if want := TypeBase + MessageType(2*(i+1)); typ != want {
			t.Errorf("type %d, want %d", typ, want)
		}
		m := NewMessage(typ)
		if m == nil || m.MsgType() != typ {
			t.Errorf("NewMessage(%d) = %T", typ, m)
		}
	}
	if NewMessage(TypeBase+1) != nil {
		t.Error("NewMessage knows an odd type")
	}
	if len(ChanCodes()) != 31 {
		t.Errorf("%d channel error codes, spec has 31", len(ChanCodes()))
	}
}

// TestRoundTrip: any valid message encodes, decodes through DecodeMessage
// to its own type and an equal value, and re-encodes to the same bytes.
func TestRoundTrip(t *testing.T) {
	for typ, gen := range messageGens() {
		t.Run(reflect.TypeOf(NewMessage(typ)).Elem().Name(), rapid.MakeCheck(func(rt *rapid.T) {
			in := gen(rt)
			b, err := EncodeMessage(in)
			if err != nil {
				rt.Fatalf("encode %#v: %v", in, err)
			}
			if got := MessageType(binary.BigEndian.Uint16(b)); got != typ {
				rt.Fatalf("type %d, want %d", got, typ)
			}
			out, err := DecodeMessage(b)
			if err != nil {
				rt.Fatalf("decode %x: %v", b, err)
			}
			if reflect.TypeOf(out) != reflect.TypeOf(in) {
				rt.Fatalf("decoded as %T", out)
			}
			b2, err := EncodeMessage(out)
			if err != nil || !bytes.Equal(b, b2) {
				rt.Fatalf("re-encode differs (%v)\n %x\n %x", err, b, b2)
			}
			if off, ok := in.(*ChannelOffer); ok {
				// Keys compare by point, not by internal field layout.
				got := out.(*ChannelOffer)
				if !got.HubChanKey.IsEqual(off.HubChanKey) {
					rt.Fatal("hub key changed")
				}
				c1, c2 := *off, *got
				c1.HubChanKey, c2.HubChanKey = nil, nil
				in, out = &c1, &c2
			}
			if !reflect.DeepEqual(in, out) {
				rt.Fatalf("round trip changed\n in  %#v\n out %#v", in, out)
			}
		}))
	}
}

// validPayload returns the payload of one valid message of typ, the same on
// every run.
func validPayload(t *testing.T, typ MessageType) []byte {
	t.Helper()
	m := rapid.Custom(messageGens()[typ]).Example(1)
	var b bytes.Buffer
	if err := m.Encode(&b, ProtocolVersion); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustRefuse(t *testing.T, typ MessageType, payload []byte, what string) {
	t.Helper()
	if m, err := DecodeMessage(withType(typ, payload)); !errors.Is(err, ErrProtocol) {
		t.Errorf("%v %s: got %#v, %v; want ErrProtocol", typ, what, m, err)
	}
}

// TestMalformedEveryType applies the generic corruptions to a valid payload
// of every type: truncation, an unknown even record, each required record
// dropped, each fixed-size record resized, records out of order.
func TestMalformedEveryType(t *testing.T) {
	for _, typ := range sortedTypes() {
		payload := validPayload(t, typ)
		recs := splitRecords(t, payload)

		mustRefuse(t, typ, payload[:len(payload)-1], "truncated")
		mustRefuse(t, typ, nil, "empty")
		mustRefuse(t, typ, append(append([]byte{}, payload...), 0x40, 0x00), "unknown even record")

		// An unknown odd record is skipped.
		m, err := DecodeMessage(withType(typ, append(append([]byte{}, payload...), 0x41, 0x01, 0xff)))
		if err != nil || m.MsgType() != typ {
			t.Errorf("%v unknown odd record: %v", typ, err)
		}

		for i, rec := range recs {
			rest := append(append([]record{}, recs[:i]...), recs[i+1:]...)
			_, err := DecodeMessage(withType(typ, joinRecords(t, rest)))
			if rec.typ%2 == 0 && !errors.Is(err, ErrProtocol) {
				t.Errorf("%v without required record %d: %v", typ, rec.typ, err)
			}
			if rec.typ%2 == 1 && err != nil {
				t.Errorf("%v without optional record %d: %v", typ, rec.typ, err)
			}
		}
		if len(recs) > 1 {
			swapped := append([]record{}, recs...)
			swapped[0], swapped[1] = swapped[1], swapped[0]
			mustRefuse(t, typ, joinRecords(t, swapped), "records out of order")
			dup := append([]record{recs[0]}, recs...)
			mustRefuse(t, typ, joinRecords(t, dup), "duplicate record")
		}
	}
}

// replaceRecord returns payload with record typ's value set to val (added
// in order when absent).
func replaceRecord(t *testing.T, payload []byte, typ uint64, val []byte) []byte {
	t.Helper()
	var out []record
	done := false
	for _, rec := range splitRecords(t, payload) {
		if !done && rec.typ >= typ {
			out = append(out, record{typ, val})
			done = true
			if rec.typ == typ {
				continue
			}
		}
		out = append(out, rec)
	}
	if !done {
		out = append(out, record{typ, val})
	}
	return joinRecords(t, out)
}

func u64be(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// TestMalformedFields replaces single records with values outside their
// bounds.
func TestMalformedFields(t *testing.T) {
	long := func(n int) []byte { return bytes.Repeat([]byte{'a'}, n) }
	for _, tc := range []struct {
		name string
		typ  MessageType
		rec  uint64
		val  []byte
	}{
		{"OpenChannel/capacity-over-21e6-btc", MsgOpenChannel, 2, u64be(btcutil.MaxSatoshi + 1)},
		{"OpenChannel/capacity-negative", MsgOpenChannel, 2, u64be(1 << 63)},
		{"OpenChannel/expiry-8-bytes", MsgOpenChannel, 4, u64be(1)},
		{"ChannelOffer/key-not-on-curve", MsgChannelOffer, 4, append([]byte{0x02}, bytes.Repeat([]byte{0xff}, 32)...)},
		{"ChannelOffer/key-short", MsgChannelOffer, 4, long(32)},
		{"ChannelOffer/pkscript-empty", MsgChannelOffer, 12, nil},
		{"ChannelOffer/pkscript-oversized", MsgChannelOffer, 12, long(MaxPkScriptSize + 1)},
		{"ChannelFunded/outpoint-35", MsgChannelFunded, 2, long(35)},
		{"ChannelFunded/pending-33", MsgChannelFunded, 0, long(33)},
		{"Pay/payee-empty", MsgPay, 8, nil},
		{"Pay/payee-oversized", MsgPay, 8, long(MaxIDSize + 1)},
		{"Pay/payee-not-utf8", MsgPay, 8, []byte{0xff, 0xfe}},
		{"Pay/memo-oversized", MsgPay, 1, long(MaxMemoSize + 1)},
		{"Pay/memo-not-utf8", MsgPay, 1, []byte{'a', 0xc0}},
		{"Pay/hold-id-15", MsgPay, 3, long(15)},
		{"Pay/sig-63", MsgPay, 10, long(63)},
		{"Pay/paid-over-max", MsgPay, 4, u64be(uint64(MaxMilliSatoshi) + 1)},
		{"Pay/req-id-4-bytes", MsgPay, 5, long(4)},
		{"PayAck/receipt-oversized", MsgPayAck, 4, long(MaxReceiptSize + 1)},
		{"PayAck/receipt-empty", MsgPayAck, 4, nil},
		{"ChannelError/code-empty", MsgChannelError, 0, nil},
		{"ChannelError/code-oversized", MsgChannelError, 0, long(MaxIDSize + 1)},
		{"ChannelError/message-oversized", MsgChannelError, 2, long(MaxErrorMessageSize + 1)},
		{"ChannelError/pending-id-31", MsgChannelError, 9, long(31)},
		{"HoldRequest/payer-oversized", MsgHoldRequest, 2, long(MaxIDSize + 1)},
		{"HoldRequest/provider-oversized", MsgHoldRequest, 3, long(MaxIDSize + 1)},
		{"HoldAuthorize/provider-empty", MsgHoldAuthorize, 4, nil},
		{"HoldResult/status-unknown", MsgHoldResult, 2, []byte("maybe")},
		{"HoldResult/message-oversized", MsgHoldResult, 3, long(MaxErrorMessageSize + 1)},
		{"HoldClosed/reason-unknown", MsgHoldClosed, 4, []byte("stolen")},
		{"Capture/amount-over-max", MsgCapture, 2, u64be(^uint64(0))},
		{"ReceiptNotice/oversized", MsgReceiptNotice, 0, long(MaxReceiptSize + 1)},
		{"CloseRequest/nonce-65", MsgCloseRequest, 4, long(65)},
		{"CloseRequest/pkscript-oversized", MsgCloseRequest, 2, long(MaxPkScriptSize + 1)},
		{"CloseProposal/tx-oversized", MsgCloseProposal, 2, long(MaxCloseTxSize + 1)},
		{"CloseProposal/partial-sig-33", MsgCloseProposal, 6, long(33)},
		{"ChannelClosed/txid-31", MsgChannelClosed, 2, long(31)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := replaceRecord(t, validPayload(t, tc.typ), tc.rec, tc.val)
			mustRefuse(t, tc.typ, payload, tc.name)
		})
	}
}

// TestEncodeRefusesOutOfBounds: the encoder applies the decoder's rules, so
// the hub never sends what a client must refuse.
func TestEncodeRefusesOutOfBounds(t *testing.T) {
	for name, m := range map[string]Message{
		"negative-capacity": &OpenChannel{Capacity: -1},
		"huge-capacity":     &OpenChannel{Capacity: btcutil.MaxSatoshi + 1},
		"no-hub-key":        &ChannelOffer{PkScript: []byte{1}},
		"empty-payee":       &Pay{},
		"long-memo":         &Pay{Payee: "p", Memo: strings.Repeat("m", MaxMemoSize+1)},
		"bad-utf8":          &Pay{Payee: "\xff"},
		"huge-amount":       &Pay{Payee: "p", Amount: MaxMilliSatoshi + 1},
		"empty-receipt":     &PayAck{},
		"empty-code":        &ChannelError{},
		"unknown-status":    &HoldResult{Status: "perhaps"},
		"unknown-reason":    &HoldClosed{Reason: "why"},
		"long-tx":           &CloseProposal{Tx: make([]byte, MaxCloseTxSize+1)},
	} {
		if _, err := EncodeMessage(m); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// TestPayLayout pins one encoding byte for byte against docs/protocol.md.
func TestPayLayout(t *testing.T) {
	hold := [16]byte{0xAA}
	m := &Pay{Seq: 1, Paid: 2000, Amount: 2000, Payee: "p1", HoldID: &hold}
	m.ChanID.Index = 3
	b, err := EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	want = append(want, 0xBB, 0x0A)
	want = append(want, 0x00, 36)
	want = append(want, make([]byte, 32)...)
	want = append(want, 0, 0, 0, 3)
	want = append(want, 0x02, 8, 0, 0, 0, 0, 0, 0, 0, 1)
	want = append(want, 0x03, 16, 0xAA)
	want = append(want, make([]byte, 15)...)
	want = append(want, 0x04, 8, 0, 0, 0, 0, 0, 0, 0x07, 0xD0)
	want = append(want, 0x06, 8, 0, 0, 0, 0, 0, 0, 0x07, 0xD0)
	want = append(want, 0x08, 2, 'p', '1')
	want = append(want, 0x0A, 64)
	want = append(want, make([]byte, 64)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding\n got  %x\n want %x", b, want)
	}
}

func TestChannelErrorIsError(t *testing.T) {
	var err error = &ChannelError{Code: ChanSeqGap, Message: "want seq 4"}
	if err.Error() != "seq-gap: want seq 4" {
		t.Fatalf("Error() = %q", err.Error())
	}
}

// TestReceiptBound keeps the wire bound on carried receipts equal to the
// largest receipt the channel package accepts.
func TestReceiptBound(t *testing.T) {
	if MaxReceiptSize != channel.MaxReceiptSize {
		t.Fatalf("wire bound %d, channel bound %d", MaxReceiptSize, channel.MaxReceiptSize)
	}
}
