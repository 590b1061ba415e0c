// Package wire holds what the hub and the device client library share on the
// BOLT 8 connection: the message codec (the BOLT 1 messages m2mhub uses and
// its own custom messages, byte for byte the encodings of lnd's lnwire),
// size-checked framing, the Init feature bits, and the refusal codes carried
// in Error. docs/protocol.md specifies the same things for implementers in
// other languages.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Wire errors. Callers test them with errors.Is.
var (
	// ErrMessageTooLarge means a frame header announced a message larger
	// than the reader accepts. The body was not read, so the stream is no
	// longer aligned and the connection must be closed.
	ErrMessageTooLarge = errors.New("wire: message too large")
	// ErrProtocol means the peer sent something the protocol forbids.
	ErrProtocol = errors.New("wire: protocol violation")
)

// ProtocolVersion is the protocol version passed to every Encode and
// Decode. No message m2mhub uses depends on it; it exists so a future
// version can change encodings without guessing.
const ProtocolVersion uint32 = 0

// MaxMessageSize is the largest message (2-byte type plus payload) that
// fits one BOLT 8 frame. Limits configured by the hub or the client may only
// be smaller.
const MaxMessageSize = 65535

// macSize is the Poly1305 tag brontide appends to every frame body; the
// length brontide's ReadNextHeader returns includes it.
const macSize = 16

// Feature bits announced in Init. Bits come in pairs (BOLT 9): the even
// bit means "you must understand this", the odd one "I understand this". 300
// is far from the bits Lightning assigns today, so a Lightning node that
// connects by mistake sees an unknown required bit and disconnects by itself.
const (
	// FeatureM2MRequired marks a peer that speaks m2mhub protocol version 1
	// and requires the other side to do so too. The hub always sets it.
	FeatureM2MRequired FeatureBit = 300
	// FeatureM2MOptional marks a peer that speaks m2mhub protocol version 1
	// without requiring it.
	FeatureM2MOptional FeatureBit = 301
)

// NewInit returns the Init message both sides send: no global features and the
// m2mhub required bit.
func NewInit() *Init {
	return NewInitMessage(NewRawFeatureVector(), NewRawFeatureVector(FeatureM2MRequired))
}

// CheckInit reports an error wrapping ErrProtocol unless m announces the
// m2mhub feature (either bit of the pair, in Features or the legacy
// GlobalFeatures).
func CheckInit(m *Init) error {
	for _, fv := range []*RawFeatureVector{m.Features, m.GlobalFeatures} {
		if fv.IsSet(FeatureM2MRequired) || fv.IsSet(FeatureM2MOptional) {
			return nil
		}
	}
	return fmt.Errorf("%w: init lacks the m2mhub feature bit %d", ErrProtocol, FeatureM2MRequired)
}

// Code is the machine-readable reason a connection is refused or closed. It
// travels as the prefix of Error data: "code: human message".
type Code string

// Refusal and close codes. The table in docs/protocol.md says which ones are
// permanent (a client must stop reconnecting) and which are transient.
const (
	CodeUnknownKey      Code = "unknown-key"
	CodeRevoked         Code = "revoked"
	CodeRotatedOut      Code = "rotated-out"
	CodeEnrolRefused    Code = "enrol-refused"
	CodeTooManySessions Code = "too-many-sessions"
	CodeTooManyFromIP   Code = "too-many-from-ip"
	CodeReplaced        Code = "replaced"
	CodeMessageTooLarge Code = "message-too-large"
	CodeProtocol        Code = "protocol-violation"
	CodeShuttingDown    Code = "shutting-down"
	CodeTooSlow         Code = "too-slow"
	CodeTimeout         Code = "timeout"
	CodeInternal        Code = "internal"
)

// Permanent reports whether a client receiving c must stop reconnecting: the
// hub will refuse the same key again until an operator acts.
func (c Code) Permanent() bool {
	switch c {
	case CodeUnknownKey, CodeRevoked, CodeRotatedOut, CodeEnrolRefused:
		return true
	}
	return false
}

// CodeError is a decoded Error: a code and a human message.
type CodeError struct {
	Code    Code
	Message string
}

// Error returns the wire form "code: message".
func (e *CodeError) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// NewError builds the connection-wide Error (zero channel id) that carries
// code and msg.
func NewError(code Code, msg string) *Error {
	return &Error{Data: ErrorData((&CodeError{Code: code, Message: msg}).Error())}
}

// ParseError decodes the data of an Error. Data without a recognisable
// code (printable, no spaces, before the first ": ") yields an empty Code and
// the whole text as the message, so errors from other software stay legible.
func ParseError(m *Error) *CodeError {
	s := string(m.Data)
	code, msg, ok := strings.Cut(s, ": ")
	if !ok {
		code, msg = s, ""
	}
	if code == "" || strings.ContainsFunc(code, func(r rune) bool {
		return !(r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) {
		return &CodeError{Message: s}
	}
	return &CodeError{Code: Code(code), Message: msg}
}

// FrameReader is the read half of a brontide connection; *brontide.Conn
// satisfies it.
type FrameReader interface {
	ReadNextHeader() (uint32, error)
	ReadNextBody(buf []byte) ([]byte, error)
}

// FrameWriter is the write half of a brontide connection; *brontide.Conn
// satisfies it.
type FrameWriter interface {
	WriteMessage(b []byte) error
	Flush() (int, error)
}

// ReadMessage reads one message of at most maxSize bytes (type included).
// The size is checked from the frame header before the body is read or
// allocated, so a peer cannot make the reader buffer more than maxSize.
// Custom messages m2mhub defines are returned as their own types (*Enrol,
// *Pay, ...); other custom types come back as *Custom. Errors wrap
// ErrMessageTooLarge or ErrProtocol when the peer is at fault; any other error
// is the transport's.
func ReadMessage(r FrameReader, maxSize int) (Message, error) {
	n, err := r.ReadNextHeader()
	if err != nil {
		return nil, err
	}
	if int(n)-macSize > maxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, int(n)-macSize, maxSize)
	}
	body, err := r.ReadNextBody(make([]byte, n))
	if err != nil {
		return nil, err
	}
	return DecodeMessage(body)
}

// DecodeMessage parses one plaintext message (2-byte type and payload): the
// BOLT 1 messages Init, Error, Warning, Ping and Pong, m2mhub's custom types
// as their own types (see NewMessage), other custom types as *Custom. Any
// other type, and a BOLT 1 payload that does not decode, yield an error
// wrapping ErrProtocol; a custom payload of a known type that does not
// decode yields a *MalformedError.
func DecodeMessage(b []byte) (Message, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: message of %d bytes has no type", ErrProtocol, len(b))
	}
	t := MessageType(binary.BigEndian.Uint16(b))
	payload := b[2:]
	if t >= CustomTypeStart {
		c := &Custom{Type: t, Data: bytes.Clone(payload)}
		m := NewMessage(t)
		if m == nil {
			return c, nil
		}
		if err := m.Decode(bytes.NewReader(payload), ProtocolVersion); err != nil {
			return nil, &MalformedError{Raw: c, Err: err}
		}
		return m, nil
	}
	m := newBOLT1(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrProtocol, uint16(t))
	}
	if err := m.Decode(bytes.NewReader(payload), ProtocolVersion); err != nil {
		return nil, fmt.Errorf("%w: %v: %v", ErrProtocol, t, err)
	}
	return m, nil
}

// MalformedError is DecodeMessage's error for a custom message of a known
// type whose payload does not decode. The frame itself was intact, so the
// stream is still aligned: a receiver may answer the message (the hub replies
// with a channel error) instead of closing the connection. It wraps
// ErrProtocol.
type MalformedError struct {
	// Raw is the message as received.
	Raw *Custom
	Err error
}

func (e *MalformedError) Error() string { return e.Err.Error() }

// Unwrap returns the decoder's error, which wraps ErrProtocol.
func (e *MalformedError) Unwrap() error { return e.Err }

// EncodeMessage serialises msg with its 2-byte type, refusing anything larger
// than MaxMessageSize.
func EncodeMessage(msg Message) ([]byte, error) {
	var buf bytes.Buffer
	var t [2]byte
	binary.BigEndian.PutUint16(t[:], uint16(msg.MsgType()))
	buf.Write(t[:])
	if err := msg.Encode(&buf, ProtocolVersion); err != nil {
		return nil, err
	}
	if buf.Len() > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, buf.Len())
	}
	return buf.Bytes(), nil
}

// WriteMessage encrypts msg into one frame and flushes it. The caller sets the
// write deadline; w must not be written concurrently.
func WriteMessage(w FrameWriter, msg Message) error {
	b, err := EncodeMessage(msg)
	if err != nil {
		return err
	}
	if err := w.WriteMessage(b); err != nil {
		return err
	}
	_, err = w.Flush()
	return err
}
