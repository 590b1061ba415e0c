package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// MessageType is the 2-byte type that opens every message (BOLT 1).
type MessageType uint16

// Message is one message of the device protocol: the BOLT 1 messages m2mhub
// uses (Init, Error, Warning, Ping, Pong), its own custom messages, and
// Custom for custom types it does not define. Encode and Decode handle the
// payload after the type; pver is ProtocolVersion. The encodings are
// lnd's lnwire encodings byte for byte (compat_test.go checks both ways).
type Message interface {
	MsgType() MessageType
	Encode(b *bytes.Buffer, pver uint32) error
	Decode(r io.Reader, pver uint32) error
}

// BOLT 1 message types, and the start of the custom range.
const (
	MsgWarning MessageType = 1
	MsgInit    MessageType = 16
	MsgError   MessageType = 17
	MsgPing    MessageType = 18
	MsgPong    MessageType = 19
	// CustomTypeStart is the first type of the custom range (BOLT 1);
	// m2mhub's messages live in it from TypeBase upwards.
	CustomTypeStart MessageType = 32768
)

// String returns the BOLT 1 name of t, or its number.
func (t MessageType) String() string {
	switch t {
	case MsgWarning:
		return "Warning"
	case MsgInit:
		return "Init"
	case MsgError:
		return "Error"
	case MsgPing:
		return "Ping"
	case MsgPong:
		return "Pong"
	}
	if t >= CustomTypeStart {
		return fmt.Sprintf("Custom(%d)", uint16(t))
	}
	return fmt.Sprintf("<unknown %d>", uint16(t))
}

// ChannelID is the 32-byte channel id of BOLT 2 that opens Error and
// Warning. m2mhub always sends the zero id: its errors are connection-wide.
type ChannelID [32]byte

// FeatureBit is one bit of a BOLT 9 feature vector.
type FeatureBit uint16

// RawFeatureVector is a set of feature bits with BOLT 9's encoding: a 2-byte
// length, then the bits as a big-endian bit field, bit 0 being the least
// significant bit of the last byte, in the fewest bytes that hold the
// highest set bit.
type RawFeatureVector struct {
	bits map[FeatureBit]struct{}
}

// NewRawFeatureVector returns a vector with bits set.
func NewRawFeatureVector(bits ...FeatureBit) *RawFeatureVector {
	fv := &RawFeatureVector{bits: make(map[FeatureBit]struct{}, len(bits))}
	for _, b := range bits {
		fv.Set(b)
	}
	return fv
}

// IsSet reports whether bit is set.
func (fv *RawFeatureVector) IsSet(bit FeatureBit) bool {
	if fv == nil {
		return false
	}
	_, ok := fv.bits[bit]
	return ok
}

// Set sets bit.
func (fv *RawFeatureVector) Set(bit FeatureBit) {
	if fv.bits == nil {
		fv.bits = make(map[FeatureBit]struct{})
	}
	fv.bits[bit] = struct{}{}
}

// Bits returns the set bits in increasing order.
func (fv *RawFeatureVector) Bits() []FeatureBit {
	bits := make([]FeatureBit, 0, len(fv.bits))
	for b := range fv.bits {
		bits = append(bits, b)
	}
	sort.Slice(bits, func(i, j int) bool { return bits[i] < bits[j] })
	return bits
}

// size is the length of the bit field: the fewest bytes holding the
// highest set bit.
func (fv *RawFeatureVector) size() int {
	if len(fv.bits) == 0 {
		return 0
	}
	n := 0
	for b := range fv.bits {
		n = max(n, int(b))
	}
	return n/8 + 1
}

// Encode writes the length-prefixed bit field.
func (fv *RawFeatureVector) Encode(w *bytes.Buffer) {
	n := fv.size()
	data := make([]byte, n)
	for b := range fv.bits {
		data[n-int(b)/8-1] |= 1 << (b % 8)
	}
	writeVar(w, data)
}

// Decode reads a length-prefixed bit field into fv, replacing its bits.
// Leading zero bytes are accepted; they do not survive re-encoding.
func (fv *RawFeatureVector) Decode(r io.Reader) error {
	data, err := readVar(r)
	if err != nil {
		return err
	}
	fv.bits = make(map[FeatureBit]struct{})
	for i := range len(data) * 8 {
		if data[len(data)-i/8-1]>>(i%8)&1 == 1 {
			fv.bits[FeatureBit(i)] = struct{}{}
		}
	}
	return nil
}

// writeVar writes b with a 2-byte big-endian length. Callers keep b under
// 65536 bytes: the message size check refuses anything near it.
func writeVar(w *bytes.Buffer, b []byte) {
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(b)))
	w.Write(l[:])
	w.Write(b)
}

// readVar reads a 2-byte big-endian length and that many bytes.
func readVar(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// errVarTooLong is returned when a length-prefixed field cannot fit its
// 2-byte length.
var errVarTooLong = errors.New("field longer than 65535 bytes")

func checkVar(b []byte) error {
	if len(b) > 0xFFFF {
		return errVarTooLong
	}
	return nil
}

// Init is BOLT 1's init message, the first message of each side.
type Init struct {
	// GlobalFeatures is the legacy vector; features found there count
	// as if in Features.
	GlobalFeatures *RawFeatureVector
	Features       *RawFeatureVector
	// ExtraData is the TLV stream that may follow the vectors (init_tlvs),
	// kept as received.
	ExtraData []byte
}

// NewInitMessage returns an Init with the given vectors.
func NewInitMessage(global, features *RawFeatureVector) *Init {
	return &Init{GlobalFeatures: global, Features: features}
}

// MsgType returns MsgInit.
func (*Init) MsgType() MessageType { return MsgInit }

// Encode writes both vectors and the extra data.
func (m *Init) Encode(b *bytes.Buffer, _ uint32) error {
	if m.GlobalFeatures == nil || m.Features == nil {
		return errors.New("init: nil feature vector")
	}
	m.GlobalFeatures.Encode(b)
	m.Features.Encode(b)
	b.Write(m.ExtraData)
	return nil
}

// Decode reads both vectors; whatever follows becomes ExtraData.
func (m *Init) Decode(r io.Reader, _ uint32) error {
	var g, f RawFeatureVector
	if err := g.Decode(r); err != nil {
		return err
	}
	if err := f.Decode(r); err != nil {
		return err
	}
	extra, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(extra) == 0 {
		extra = nil
	}
	*m = Init{GlobalFeatures: &g, Features: &f, ExtraData: extra}
	return nil
}

// ErrorData is the text of an Error.
type ErrorData []byte

// Error is BOLT 1's error message. m2mhub carries a Code in its data (see
// NewError and ParseError).
type Error struct {
	ChanID ChannelID
	Data   ErrorData
}

// MsgType returns MsgError.
func (*Error) MsgType() MessageType { return MsgError }

// Error returns the data as text, so an Error can be returned as an error.
func (m *Error) Error() string { return string(m.Data) }

// Encode writes the channel id and the length-prefixed data.
func (m *Error) Encode(b *bytes.Buffer, _ uint32) error {
	return encodeChanData(b, m.ChanID, m.Data)
}

// Decode reads the channel id and the data; trailing bytes are ignored
// (BOLT 1 extensions).
func (m *Error) Decode(r io.Reader, _ uint32) error {
	id, data, err := decodeChanData(r)
	if err != nil {
		return err
	}
	*m = Error{ChanID: id, Data: data}
	return nil
}

// WarningData is the text of a Warning.
type WarningData []byte

// Warning is BOLT 1's warning message: logged, never fatal.
type Warning struct {
	ChanID ChannelID
	Data   WarningData
}

// MsgType returns MsgWarning.
func (*Warning) MsgType() MessageType { return MsgWarning }

// Encode writes the channel id and the length-prefixed data.
func (m *Warning) Encode(b *bytes.Buffer, _ uint32) error {
	return encodeChanData(b, m.ChanID, m.Data)
}

// Decode reads the channel id and the data; trailing bytes are ignored.
func (m *Warning) Decode(r io.Reader, _ uint32) error {
	id, data, err := decodeChanData(r)
	if err != nil {
		return err
	}
	*m = Warning{ChanID: id, Data: data}
	return nil
}

func encodeChanData(b *bytes.Buffer, id ChannelID, data []byte) error {
	if err := checkVar(data); err != nil {
		return err
	}
	b.Write(id[:])
	writeVar(b, data)
	return nil
}

func decodeChanData(r io.Reader) (ChannelID, []byte, error) {
	var id ChannelID
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return id, nil, err
	}
	data, err := readVar(r)
	return id, data, err
}

// PingPayload is the padding of a Ping.
type PingPayload []byte

// Ping is BOLT 1's ping: the receiver answers with a Pong of NumPongBytes
// bytes.
type Ping struct {
	NumPongBytes uint16
	PaddingBytes PingPayload
}

// NewPing returns a Ping asking for numBytes of pong padding.
func NewPing(numBytes uint16) *Ping { return &Ping{NumPongBytes: numBytes} }

// MsgType returns MsgPing.
func (*Ping) MsgType() MessageType { return MsgPing }

// Encode writes the pong length and the padding.
func (m *Ping) Encode(b *bytes.Buffer, _ uint32) error {
	if err := checkVar(m.PaddingBytes); err != nil {
		return err
	}
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], m.NumPongBytes)
	b.Write(n[:])
	writeVar(b, m.PaddingBytes)
	return nil
}

// Decode reads the pong length and the padding; trailing bytes are
// ignored.
func (m *Ping) Decode(r io.Reader, _ uint32) error {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	pad, err := readVar(r)
	if err != nil {
		return err
	}
	*m = Ping{NumPongBytes: binary.BigEndian.Uint16(n[:]), PaddingBytes: pad}
	return nil
}

// PongPayload is the padding of a Pong.
type PongPayload []byte

// Pong is BOLT 1's answer to a Ping.
type Pong struct {
	PongBytes PongPayload
}

// NewPong returns a Pong with the given padding.
func NewPong(pongBytes []byte) *Pong { return &Pong{PongBytes: pongBytes} }

// MsgType returns MsgPong.
func (*Pong) MsgType() MessageType { return MsgPong }

// Encode writes the length-prefixed padding.
func (m *Pong) Encode(b *bytes.Buffer, _ uint32) error {
	if err := checkVar(m.PongBytes); err != nil {
		return err
	}
	writeVar(b, m.PongBytes)
	return nil
}

// Decode reads the padding; trailing bytes are ignored.
func (m *Pong) Decode(r io.Reader, _ uint32) error {
	pad, err := readVar(r)
	if err != nil {
		return err
	}
	*m = Pong{PongBytes: pad}
	return nil
}

// Custom is a message of the custom range that m2mhub does not define (or
// one it does, before decoding): the type and the raw payload.
type Custom struct {
	Type MessageType
	Data []byte
}

// MsgType returns the message's type.
func (m *Custom) MsgType() MessageType { return m.Type }

// Encode writes the payload as is.
func (m *Custom) Encode(b *bytes.Buffer, _ uint32) error {
	if m.Type < CustomTypeStart {
		return fmt.Errorf("custom message type %d below %d", uint16(m.Type), uint16(CustomTypeStart))
	}
	b.Write(m.Data)
	return nil
}

// Decode reads the rest of r as the payload.
func (m *Custom) Decode(r io.Reader, _ uint32) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.Data = data
	return nil
}

// newBOLT1 returns an empty BOLT 1 message of type t, or nil.
func newBOLT1(t MessageType) Message {
	switch t {
	case MsgInit:
		return new(Init)
	case MsgError:
		return new(Error)
	case MsgWarning:
		return new(Warning)
	case MsgPing:
		return new(Ping)
	case MsgPong:
		return new(Pong)
	}
	return nil
}
