package wire

import (
	"bytes"
	"fmt"
	"io"

	"github.com/lightningnetwork/lnd/tlv"
)

// m2mhub's custom message types live from TypeBase upwards, inside BOLT 1's
// custom range (>= 32768) and far enough from its start that other software
// experimenting there is unlikely to collide. Even types must be understood
// by the receiver (BOLT 1), odd ones may be ignored.
const (
	// TypeBase is the first message type m2mhub assigns.
	TypeBase MessageType = 0xBB00
	// MsgEnrol is the type of Enrol: 47872.
	MsgEnrol = TypeBase
)

// MaxTokenSize bounds an enrolment token. Tokens are small signed documents;
// the bound keeps a hostile Enrol from making the hub hash or parse
// kilobytes it will only reject.
const MaxTokenSize = 4096

// TLV record types inside Enrol. Even types are required: a decoder that does
// not know one must fail. Unknown odd types are skipped.
const (
	// enrolTokenType carries the operator-signed enrolment token.
	enrolTokenType tlv.Type = 0
)

// Enrol is sent by a device that holds an operator-signed enrolment token,
// right after the noise handshake and before its Init. The hub registers the
// device's handshake key from the token (zero-touch provisioning) unless the
// key is already registered, in which case the token is ignored.
//
// Payload: a TLV stream (lnd's tlv encoding, BigSize type and length) with
// record 0 = token bytes (required, 1..MaxTokenSize bytes).
type Enrol struct {
	// Token is the enrolment token exactly as the operator issued it.
	Token []byte
}

var _ Message = (*Enrol)(nil)

// MsgType returns MsgEnrol.
func (e *Enrol) MsgType() MessageType { return MsgEnrol }

// Encode writes the TLV payload of e to b.
func (e *Enrol) Encode(b *bytes.Buffer, _ uint32) error {
	if err := e.validate(); err != nil {
		return err
	}
	tok := e.Token
	s, err := tlv.NewStream(tlv.MakePrimitiveRecord(enrolTokenType, &tok))
	if err != nil {
		return err
	}
	return s.Encode(b)
}

// Decode reads the TLV payload of an Enrol from r. It fails with an error
// wrapping ErrProtocol on a malformed stream, a missing token, an unknown even
// record, or a token larger than MaxTokenSize.
func (e *Enrol) Decode(r io.Reader, _ uint32) error {
	var tok []byte
	s, err := tlv.NewStream(tlv.MakePrimitiveRecord(enrolTokenType, &tok))
	if err != nil {
		return err
	}
	parsed, err := s.DecodeWithParsedTypesP2P(r)
	if err != nil {
		return fmt.Errorf("%w: enrol: %v", ErrProtocol, err)
	}
	if _, ok := parsed[enrolTokenType]; !ok {
		return fmt.Errorf("%w: enrol: token record missing", ErrProtocol)
	}
	for t := range parsed {
		if t != enrolTokenType && t%2 == 0 {
			return fmt.Errorf("%w: enrol: unknown required record %d", ErrProtocol, t)
		}
	}
	e.Token = tok
	return e.validate()
}

func (e *Enrol) validate() error {
	if len(e.Token) == 0 || len(e.Token) > MaxTokenSize {
		return fmt.Errorf("%w: enrol: token of %d bytes (want 1..%d)", ErrProtocol, len(e.Token), MaxTokenSize)
	}
	return nil
}
