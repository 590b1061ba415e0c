// Package wire holds what the hub and the device client library share on the
// BOLT 8 connection: size-checked lnwire framing, the Init feature bits, the
// refusal codes carried in lnwire.Error, and m2mhub's custom messages.
// docs/protocol.md specifies the same things for implementers in other
// languages.
package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/lightningnetwork/lnd/lnwire"
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

// ProtocolVersion is the lnwire protocol version passed to lnwire's encoders.
// lnwire ignores it for every message m2mhub uses; it exists so a future
// version can change encodings without guessing.
const ProtocolVersion uint32 = 0

// MaxMessageSize is the largest lnwire message (2-byte type plus payload) that
// fits one BOLT 8 frame. Limits configured by the hub or the client may only
// be smaller.
const MaxMessageSize = 65535

// macSize is the Poly1305 tag brontide appends to every frame body; the
// length brontide's ReadNextHeader returns includes it.
const macSize = 16

// Feature bits announced in lnwire.Init. Bits come in pairs (BOLT 9): the even
// bit means "you must understand this", the odd one "I understand this". 300
// is far from the bits Lightning assigns today, so a Lightning node that
// connects by mistake sees an unknown required bit and disconnects by itself.
const (
	// FeatureM2MRequired marks a peer that speaks m2mhub protocol version 1
	// and requires the other side to do so too. The hub always sets it.
	FeatureM2MRequired lnwire.FeatureBit = 300
	// FeatureM2MOptional marks a peer that speaks m2mhub protocol version 1
	// without requiring it.
	FeatureM2MOptional lnwire.FeatureBit = 301
)

// NewInit returns the Init message both sides send: no global features and the
// m2mhub required bit.
func NewInit() *lnwire.Init {
	return lnwire.NewInitMessage(
		lnwire.NewRawFeatureVector(),
		lnwire.NewRawFeatureVector(FeatureM2MRequired),
	)
}

// CheckInit reports an error wrapping ErrProtocol unless m announces the
// m2mhub feature (either bit of the pair, in Features or the legacy
// GlobalFeatures).
func CheckInit(m *lnwire.Init) error {
	for _, fv := range []*lnwire.RawFeatureVector{m.Features, m.GlobalFeatures} {
		if fv != nil && (fv.IsSet(FeatureM2MRequired) || fv.IsSet(FeatureM2MOptional)) {
			return nil
		}
	}
	return fmt.Errorf("%w: init lacks the m2mhub feature bit %d", ErrProtocol, FeatureM2MRequired)
}

// Code is the machine-readable reason a connection is refused or closed. It
// travels as the prefix of lnwire.Error data: "code: human message".
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

// CodeError is a decoded lnwire.Error: a code and a human message.
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

// NewError builds the connection-wide lnwire.Error (zero channel id) that
// carries code and msg.
func NewError(code Code, msg string) *lnwire.Error {
	return &lnwire.Error{Data: lnwire.ErrorData((&CodeError{Code: code, Message: msg}).Error())}
}

// ParseError decodes the data of an lnwire.Error. Data without a recognisable
// code (printable, no spaces, before the first ": ") yields an empty Code and
// the whole text as the message, so errors from other software stay legible.
func ParseError(m *lnwire.Error) *CodeError {
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

// ReadMessage reads one lnwire message of at most maxSize bytes (type
// included). The size is checked from the frame header before the body is
// read or allocated, so a peer cannot make the reader buffer more than
// maxSize. Custom messages m2mhub defines are returned as their own types
// (*Enrol, *Pay, ...); other custom types come back as *lnwire.Custom. Errors wrap
// ErrMessageTooLarge or ErrProtocol when the peer is at fault; any other error
// is the transport's.
func ReadMessage(r FrameReader, maxSize int) (lnwire.Message, error) {
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

// DecodeMessage parses one plaintext lnwire message (2-byte type and payload).
// m2mhub's custom types come back as their own types (see NewMessage); other
// custom types as *lnwire.Custom. A payload the type's decoder refuses yields
// an error wrapping ErrProtocol.
func DecodeMessage(b []byte) (lnwire.Message, error) {
	msg, err := lnwire.ReadMessage(bytes.NewReader(b), ProtocolVersion)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	c, ok := msg.(*lnwire.Custom)
	if !ok {
		return msg, nil
	}
	m := NewMessage(c.Type)
	if m == nil {
		return msg, nil
	}
	if err := m.Decode(bytes.NewReader(c.Data), ProtocolVersion); err != nil {
		return nil, &MalformedError{Raw: c, Err: err}
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
	Raw *lnwire.Custom
	Err error
}

func (e *MalformedError) Error() string { return e.Err.Error() }

// Unwrap returns the decoder's error, which wraps ErrProtocol.
func (e *MalformedError) Unwrap() error { return e.Err }

// EncodeMessage serialises msg with its 2-byte type, refusing anything larger
// than MaxMessageSize.
func EncodeMessage(msg lnwire.Message) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := lnwire.WriteMessage(&buf, msg, ProtocolVersion); err != nil {
		return nil, err
	}
	if buf.Len() > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, buf.Len())
	}
	return buf.Bytes(), nil
}

// WriteMessage encrypts msg into one frame and flushes it. The caller sets the
// write deadline; w must not be written concurrently.
func WriteMessage(w FrameWriter, msg lnwire.Message) error {
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
