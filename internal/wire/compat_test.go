package wire

import (
	"bytes"
	"testing"

	"github.com/lightningnetwork/lnd/lnwire"
	"pgregory.net/rapid"
)

// The codec must stay byte for byte lnd's lnwire: lnd peers and clients built
// on lnwire speak to the hub. Each test below encodes with one side, decodes
// with the other and re-encodes, in both directions, and requires the same
// bytes throughout.

// lnwireEncode is lnwire's framing of m: 2-byte type and payload.
func lnwireEncode(t *rapid.T, m lnwire.Message) []byte {
	var b bytes.Buffer
	if _, err := lnwire.WriteMessage(&b, m, 0); err != nil {
		t.Fatalf("lnwire encode %T: %v", m, err)
	}
	return b.Bytes()
}

// viaLnwire checks that lnwire decodes the encoding of m and re-encodes it
// to the same bytes, and returns lnwire's message.
func viaLnwire(t *rapid.T, m Message) lnwire.Message {
	b, err := EncodeMessage(m)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	lm, err := lnwire.ReadMessage(bytes.NewReader(b), 0)
	if err != nil {
		t.Fatalf("lnwire decode of %T %x: %v", m, b, err)
	}
	if uint16(lm.MsgType()) != uint16(m.MsgType()) {
		t.Fatalf("lnwire type %d, want %d", lm.MsgType(), m.MsgType())
	}
	if got := lnwireEncode(t, lm); !bytes.Equal(got, b) {
		t.Fatalf("%T: lnwire re-encodes\n %x\nwant\n %x", m, got, b)
	}
	return lm
}

// fromLnwire checks that DecodeMessage reads lnwire's encoding of lm and
// re-encodes it to the same bytes, and returns the decoded message.
func fromLnwire(t *rapid.T, lm lnwire.Message) Message {
	b := lnwireEncode(t, lm)
	m, err := DecodeMessage(b)
	if err != nil {
		t.Fatalf("decode lnwire's %T %x: %v", lm, b, err)
	}
	got, err := EncodeMessage(m)
	if err != nil {
		t.Fatalf("re-encode %T: %v", m, err)
	}
	if !bytes.Equal(got, b) {
		t.Fatalf("%T: re-encodes\n %x\nwant lnwire's\n %x", lm, got, b)
	}
	return m
}

func genBits(t *rapid.T, label string) []uint16 {
	// Mostly low bits (Lightning's) and the m2mhub pair, sometimes far
	// ones, so vectors of 0 to a few hundred bytes come up.
	bit := rapid.OneOf(rapid.Uint16Range(0, 64), rapid.SampledFrom([]uint16{300, 301}), rapid.Uint16Range(0, 4000))
	return rapid.SliceOfN(bit, 0, 8).Draw(t, label)
}

func genData(t *rapid.T, label string) []byte {
	return rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, label)
}

// initExtra is a valid init_tlvs stream: optionally networks (type 1, one
// chain hash) and remote_addr (type 3, an IPv4 address).
func genInitExtra(t *rapid.T) []byte {
	var b []byte
	if rapid.Bool().Draw(t, "networks") {
		b = append(b, 0x01, 0x20)
		b = append(b, rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "chain")...)
	}
	if rapid.Bool().Draw(t, "remote_addr") {
		b = append(b, 0x03, 0x07, 0x01)
		b = append(b, rapid.SliceOfN(rapid.Byte(), 6, 6).Draw(t, "addr")...)
	}
	return b
}

func ourVector(bits []uint16) *RawFeatureVector {
	fv := NewRawFeatureVector()
	for _, b := range bits {
		fv.Set(FeatureBit(b))
	}
	return fv
}

func lnVector(bits []uint16) *lnwire.RawFeatureVector {
	fv := lnwire.NewRawFeatureVector()
	for _, b := range bits {
		fv.Set(lnwire.FeatureBit(b))
	}
	return fv
}

// sameBits fails t unless both vectors hold exactly bits.
func sameBits(t *rapid.T, ours *RawFeatureVector, theirs *lnwire.RawFeatureVector, bits []uint16) {
	want := ourVector(bits)
	for _, b := range want.Bits() {
		if !ours.IsSet(b) || !theirs.IsSet(lnwire.FeatureBit(b)) {
			t.Fatalf("bit %d lost", b)
		}
	}
	if len(ours.Bits()) != len(want.Bits()) {
		t.Fatalf("bits %v, want %v", ours.Bits(), want.Bits())
	}
	for b := range 8 * theirs.SerializeSize() {
		if theirs.IsSet(lnwire.FeatureBit(b)) && !want.IsSet(FeatureBit(b)) {
			t.Fatalf("lnwire sees bit %d, not set", b)
		}
	}
}

func TestCompatFeatureVector(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bits := genBits(t, "bits")
		var ours, theirs bytes.Buffer
		ourVector(bits).Encode(&ours)
		if err := lnVector(bits).Encode(&theirs); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours.Bytes(), theirs.Bytes()) {
			t.Fatalf("bits %v: encode %x, lnwire %x", bits, ours.Bytes(), theirs.Bytes())
		}
		var back RawFeatureVector
		if err := back.Decode(bytes.NewReader(theirs.Bytes())); err != nil {
			t.Fatal(err)
		}
		lnBack := lnwire.NewRawFeatureVector()
		if err := lnBack.Decode(bytes.NewReader(ours.Bytes())); err != nil {
			t.Fatal(err)
		}
		sameBits(t, &back, lnBack, bits)
	})
}

// TestCompatFeatureBitOrder pins BOLT 9's bit order on a known vector: bit 0
// is the lowest bit of the last byte.
func TestCompatFeatureBitOrder(t *testing.T) {
	var b bytes.Buffer
	NewRawFeatureVector(0, 9, 300).Encode(&b)
	want := make([]byte, 2+38)
	want[1] = 38        // 300/8 + 1 bytes
	want[2] = 1 << 4    // bit 300 = byte 37 from the end, bit 4
	want[2+36] = 1 << 1 // bit 9
	want[2+37] = 1 << 0 // bit 0
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("encode %x, want %x", b.Bytes(), want)
	}
	b.Reset()
	NewRawFeatureVector().Encode(&b)
	if !bytes.Equal(b.Bytes(), []byte{0, 0}) {
		t.Fatalf("empty vector %x", b.Bytes())
	}
}

func TestCompatInit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gbits, fbits, extra := genBits(t, "global"), genBits(t, "features"), genInitExtra(t)
		m := &Init{GlobalFeatures: ourVector(gbits), Features: ourVector(fbits), ExtraData: extra}
		lm := viaLnwire(t, m).(*lnwire.Init)
		sameBits(t, m.Features, lm.Features, fbits)
		sameBits(t, m.GlobalFeatures, lm.GlobalFeatures, gbits)

		back := fromLnwire(t, &lnwire.Init{
			GlobalFeatures: lnVector(gbits), Features: lnVector(fbits), ExtraData: lnwire.ExtraOpaqueData(extra),
		}).(*Init)
		sameBits(t, back.Features, lm.Features, fbits)
		if !bytes.Equal(back.ExtraData, extra) {
			t.Fatalf("extra data %x, want %x", back.ExtraData, extra)
		}
	})
	// The Init both sides send, as lnd sees it.
	lm := viaLnwireOnce(t, NewInit()).(*lnwire.Init)
	if !lm.Features.IsSet(lnwire.FeatureBit(FeatureM2MRequired)) {
		t.Fatal("lnwire does not see the m2mhub bit")
	}
}

// viaLnwireOnce runs viaLnwire outside a property.
func viaLnwireOnce(t *testing.T, m Message) lnwire.Message {
	var lm lnwire.Message
	rapid.Check(t, func(rt *rapid.T) { lm = viaLnwire(rt, m) })
	return lm
}

func TestCompatErrorWarning(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var id ChannelID
		copy(id[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "chan"))
		data := genData(t, "data")

		le := viaLnwire(t, &Error{ChanID: id, Data: data}).(*lnwire.Error)
		e := fromLnwire(t, &lnwire.Error{ChanID: lnwire.ChannelID(id), Data: data}).(*Error)
		lw := viaLnwire(t, &Warning{ChanID: id, Data: data}).(*lnwire.Warning)
		w := fromLnwire(t, &lnwire.Warning{ChanID: lnwire.ChannelID(id), Data: data}).(*Warning)
		for what, got := range map[string]struct {
			id   [32]byte
			data []byte
		}{
			"lnwire error": {le.ChanID, le.Data}, "error": {e.ChanID, e.Data},
			"lnwire warning": {lw.ChanID, lw.Data}, "warning": {w.ChanID, w.Data},
		} {
			if got.id != id || !bytes.Equal(got.data, data) {
				t.Fatalf("%s: %x %q, want %x %q", what, got.id, got.data, id, data)
			}
		}
	})
	// A refusal code survives lnwire both ways.
	le := viaLnwireOnce(t, NewError(CodeRevoked, "gone")).(*lnwire.Error)
	var back Error
	back.Data = ErrorData(le.Data)
	if ce := ParseError(&back); ce.Code != CodeRevoked || ce.Message != "gone" {
		t.Fatalf("code through lnwire: %+v", ce)
	}
}

func TestCompatPingPong(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.Uint16().Draw(t, "num_pong_bytes")
		pad := genData(t, "padding")

		lp := viaLnwire(t, &Ping{NumPongBytes: n, PaddingBytes: pad}).(*lnwire.Ping)
		if lp.NumPongBytes != n || !bytes.Equal(lp.PaddingBytes, pad) {
			t.Fatalf("lnwire ping %d %x", lp.NumPongBytes, lp.PaddingBytes)
		}
		p := fromLnwire(t, &lnwire.Ping{NumPongBytes: n, PaddingBytes: pad}).(*Ping)
		if p.NumPongBytes != n || !bytes.Equal(p.PaddingBytes, pad) {
			t.Fatalf("ping %d %x", p.NumPongBytes, p.PaddingBytes)
		}

		lo := viaLnwire(t, NewPong(pad)).(*lnwire.Pong)
		if !bytes.Equal(lo.PongBytes, pad) {
			t.Fatalf("lnwire pong %x", lo.PongBytes)
		}
		o := fromLnwire(t, lnwire.NewPong(pad)).(*Pong)
		if !bytes.Equal(o.PongBytes, pad) {
			t.Fatalf("pong %x", o.PongBytes)
		}
	})
}

// TestCompatCustom covers every m2mhub message and a foreign custom type:
// lnwire carries them as lnwire.Custom with the same type and payload.
func TestCompatCustom(t *testing.T) {
	gens := messageGens()
	gens[MsgEnrol] = func(t *rapid.T) Message {
		return &Enrol{Token: rapid.SliceOfN(rapid.Byte(), 1, 200).Draw(t, "token")}
	}
	gens[TypeBase+1] = func(t *rapid.T) Message {
		return &Custom{Type: TypeBase + 1, Data: genData(t, "data")}
	}
	for typ, gen := range gens {
		t.Run(typ.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				m := gen(t)
				lc := viaLnwire(t, m).(*lnwire.Custom)
				b, err := EncodeMessage(m)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(lc.Data, b[2:]) {
					t.Fatalf("lnwire payload %x, want %x", lc.Data, b[2:])
				}
				back := fromLnwire(t, &lnwire.Custom{Type: lnwire.MessageType(typ), Data: lc.Data})
				if back.MsgType() != typ {
					t.Fatalf("type %d, want %d", back.MsgType(), typ)
				}
			})
		})
	}
}
