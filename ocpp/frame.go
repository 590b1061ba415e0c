// Package ocpp holds the OCPP-J 2.0.1 RPC framing (OCPP 2.0.1 Part 4) and
// validation of message payloads against the official OCPP 2.0.1 JSON
// schemas. It does no I/O: package ocpp/gateway runs the CSMS over
// WebSocket.
package ocpp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Subprotocol is the WebSocket subprotocol of OCPP 2.0.1 (Part 4, 3.1.2).
const Subprotocol = "ocpp2.0.1"

// MessageType is the first element of every OCPP-J frame.
type MessageType int

// The three message types of OCPP-J (Part 4, 4.1.3).
const (
	TypeCall       MessageType = 2
	TypeCallResult MessageType = 3
	TypeCallError  MessageType = 4
)

// ErrorCode is an RPC framework error code (Part 4, 4.3).
type ErrorCode string

// The error codes OCPP-J 2.0.1 defines.
const (
	FormatViolation               ErrorCode = "FormatViolation"
	GenericError                  ErrorCode = "GenericError"
	InternalError                 ErrorCode = "InternalError"
	MessageTypeNotSupported       ErrorCode = "MessageTypeNotSupported"
	NotImplemented                ErrorCode = "NotImplemented"
	NotSupported                  ErrorCode = "NotSupported"
	OccurrenceConstraintViolation ErrorCode = "OccurrenceConstraintViolation"
	PropertyConstraintViolation   ErrorCode = "PropertyConstraintViolation"
	ProtocolError                 ErrorCode = "ProtocolError"
	RPCFrameworkError             ErrorCode = "RpcFrameworkError"
	SecurityError                 ErrorCode = "SecurityError"
	TypeConstraintViolation       ErrorCode = "TypeConstraintViolation"
)

// MaxMessageIDLen is the longest message id the spec allows (36 chars).
const MaxMessageIDLen = 36

// Frame is one decoded OCPP-J message. Action and Payload are set for a
// CALL, Payload for a CALLRESULT, Code, Description and Details for a
// CALLERROR.
type Frame struct {
	Type        MessageType
	ID          string
	Action      string
	Payload     json.RawMessage
	Code        ErrorCode
	Description string
	Details     json.RawMessage
}

// Error is a frame the receiver must answer with a CALLERROR: Code is the
// one the spec names, ID the message id when it could be read (empty
// otherwise; the spec then has the receiver answer with id "-1" where it
// can answer at all).
type Error struct {
	Code    ErrorCode
	ID      string
	Message string
}

// Error describes the violation.
func (e *Error) Error() string { return fmt.Sprintf("ocpp: %s: %s", e.Code, e.Message) }

// ErrBadFrame is wrapped by every *Error that Decode returns.
var ErrBadFrame = errors.New("ocpp: bad frame")

// Is lets errors.Is(err, ErrBadFrame) match any *Error.
func (e *Error) Is(target error) bool { return target == ErrBadFrame }

// Decode parses one OCPP-J text frame. A frame that is not a JSON array
// of the right shape fails with an *Error: RpcFrameworkError when it is
// not an array or its message id cannot be read, MessageTypeNotSupported
// for an unknown type number, FormatViolation when the elements of a known
// type are of the wrong kind or count, and ProtocolError for an over-long
// message id or a payload that is not a JSON object.
func Decode(b []byte) (*Frame, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(b, &elems); err != nil {
		return nil, &Error{Code: RPCFrameworkError, Message: "frame is not a JSON array"}
	}
	if len(elems) < 3 {
		return nil, &Error{Code: RPCFrameworkError, Message: "frame has fewer than 3 elements"}
	}
	var f Frame
	var t int
	if err := json.Unmarshal(elems[0], &t); err != nil {
		return nil, &Error{Code: RPCFrameworkError, Message: "message type is not an integer"}
	}
	f.Type = MessageType(t)
	if err := json.Unmarshal(elems[1], &f.ID); err != nil {
		return nil, &Error{Code: RPCFrameworkError, Message: "message id is not a string"}
	}
	bad := func(code ErrorCode, format string, a ...any) error {
		return &Error{Code: code, ID: f.ID, Message: fmt.Sprintf(format, a...)}
	}
	if f.ID == "" || len(f.ID) > MaxMessageIDLen {
		return nil, bad(ProtocolError, "message id must have 1 to %d characters", MaxMessageIDLen)
	}
	switch f.Type {
	case TypeCall:
		if len(elems) != 4 {
			return nil, bad(FormatViolation, "CALL has %d elements, want 4", len(elems))
		}
		if err := json.Unmarshal(elems[2], &f.Action); err != nil || f.Action == "" {
			return nil, bad(FormatViolation, "CALL action is not a non-empty string")
		}
		f.Payload = elems[3]
	case TypeCallResult:
		if len(elems) != 3 {
			return nil, bad(FormatViolation, "CALLRESULT has %d elements, want 3", len(elems))
		}
		f.Payload = elems[2]
	case TypeCallError:
		if len(elems) != 5 {
			return nil, bad(FormatViolation, "CALLERROR has %d elements, want 5", len(elems))
		}
		var code string
		if err := json.Unmarshal(elems[2], &code); err != nil || code == "" {
			return nil, bad(FormatViolation, "CALLERROR code is not a string")
		}
		f.Code = ErrorCode(code)
		if err := json.Unmarshal(elems[3], &f.Description); err != nil {
			return nil, bad(FormatViolation, "CALLERROR description is not a string")
		}
		f.Details = elems[4]
		if !isObject(f.Details) {
			return nil, bad(FormatViolation, "CALLERROR details are not a JSON object")
		}
		return &f, nil
	default:
		return nil, bad(MessageTypeNotSupported, "message type %d", t)
	}
	if !isObject(f.Payload) {
		return nil, bad(FormatViolation, "payload is not a JSON object")
	}
	return &f, nil
}

func isObject(b json.RawMessage) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// EncodeCall encodes a CALL frame.
func EncodeCall(id, action string, payload any) ([]byte, error) {
	return json.Marshal([]any{TypeCall, id, action, payload})
}

// EncodeCallResult encodes a CALLRESULT frame.
func EncodeCallResult(id string, payload any) ([]byte, error) {
	return json.Marshal([]any{TypeCallResult, id, payload})
}

// EncodeCallError encodes a CALLERROR frame with empty details. An empty
// id becomes "-1", as the spec asks when the id of the offending message
// could not be read.
func EncodeCallError(id string, code ErrorCode, description string) []byte {
	if id == "" {
		id = "-1"
	}
	b, _ := json.Marshal([]any{TypeCallError, id, code, description, struct{}{}})
	return b
}
