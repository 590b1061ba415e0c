package ocpp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	long := strings.Repeat("a", MaxMessageIDLen+1)
	tests := []struct {
		name string
		in   string
		code ErrorCode // empty: decodes
		want Frame
	}{
		{name: "OK/Call", in: `[2,"19223201","BootNotification",{"reason":"PowerUp"}]`,
			want: Frame{Type: TypeCall, ID: "19223201", Action: "BootNotification", Payload: json.RawMessage(`{"reason":"PowerUp"}`)}},
		{name: "OK/CallResult", in: `[3, "19223201", {"status":"Accepted"}]`,
			want: Frame{Type: TypeCallResult, ID: "19223201", Payload: json.RawMessage(`{"status":"Accepted"}`)}},
		{name: "OK/CallError", in: `[4,"162376037","NotSupported","SetDisplayMessageRequest not implemented",{}]`,
			want: Frame{Type: TypeCallError, ID: "162376037", Code: NotSupported, Description: "SetDisplayMessageRequest not implemented", Details: json.RawMessage(`{}`)}},
		{name: "RpcFrameworkError/NotJSON", in: `hello`, code: RPCFrameworkError},
		{name: "RpcFrameworkError/NotArray", in: `{"a":1}`, code: RPCFrameworkError},
		{name: "RpcFrameworkError/Short", in: `[2,"1"]`, code: RPCFrameworkError},
		{name: "RpcFrameworkError/TypeNotInt", in: `["2","1","Heartbeat",{}]`, code: RPCFrameworkError},
		{name: "RpcFrameworkError/IDNotString", in: `[2,1,"Heartbeat",{}]`, code: RPCFrameworkError},
		{name: "MessageTypeNotSupported", in: `[5,"1","Heartbeat",{}]`, code: MessageTypeNotSupported},
		{name: "ProtocolError/LongID", in: `[2,"` + long + `","Heartbeat",{}]`, code: ProtocolError},
		{name: "ProtocolError/EmptyID", in: `[2,"","Heartbeat",{}]`, code: ProtocolError},
		{name: "FormatViolation/CallExtra", in: `[2,"1","Heartbeat",{},{}]`, code: FormatViolation},
		{name: "FormatViolation/ActionNotString", in: `[2,"1",7,{}]`, code: FormatViolation},
		{name: "FormatViolation/PayloadArray", in: `[2,"1","Heartbeat",[]]`, code: FormatViolation},
		{name: "FormatViolation/ResultNull", in: `[3,"1",null]`, code: FormatViolation},
		{name: "FormatViolation/ErrorShort", in: `[4,"1","GenericError",""]`, code: FormatViolation},
		{name: "FormatViolation/ErrorDetailsString", in: `[4,"1","GenericError","x","y"]`, code: FormatViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Decode([]byte(tt.in))
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if f.Type != tt.want.Type || f.ID != tt.want.ID || f.Action != tt.want.Action || string(f.Payload) != string(tt.want.Payload) ||
					f.Code != tt.want.Code || f.Description != tt.want.Description || string(f.Details) != string(tt.want.Details) {
					t.Fatalf("decoded %+v, want %+v", f, tt.want)
				}
				return
			}
			var oe *Error
			if !errors.As(err, &oe) || !errors.Is(err, ErrBadFrame) {
				t.Fatalf("err %v, want an *Error", err)
			}
			if oe.Code != tt.code {
				t.Fatalf("code %s, want %s (%v)", oe.Code, tt.code, err)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	b, err := EncodeCall("42", "Heartbeat", struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `[2,"42","Heartbeat",{}]` {
		t.Fatalf("CALL %s", b)
	}
	b, err = EncodeCallResult("42", json.RawMessage(`{"currentTime":"2026-01-01T00:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if f, err := Decode(b); err != nil || f.Type != TypeCallResult || f.ID != "42" {
		t.Fatalf("CALLRESULT %s: %+v %v", b, f, err)
	}
	b = EncodeCallError("", FormatViolation, "bad")
	if string(b) != `[4,"-1","FormatViolation","bad",{}]` {
		t.Fatalf("CALLERROR %s", b)
	}
	if f, err := Decode(b); err != nil || f.Code != FormatViolation {
		t.Fatalf("CALLERROR %s: %+v %v", b, f, err)
	}
}

// FuzzDecode checks that Decode never panics, that every failure is an
// *Error with a code, and that what it decodes re-encodes to a frame that
// decodes the same.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`[2,"19223201","BootNotification",{"chargingStation":{"model":"M","vendorName":"V"},"reason":"PowerUp"}]`,
		`[3,"19223201",{"currentTime":"2026-01-01T00:00:00Z","interval":300,"status":"Accepted"}]`,
		`[4,"1","GenericError","x",{}]`, `[2,"1","Heartbeat",{}]`, `[]`, `[5,"1"]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			var oe *Error
			if !errors.As(err, &oe) || oe.Code == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		var again []byte
		switch fr.Type {
		case TypeCall:
			again, err = EncodeCall(fr.ID, fr.Action, fr.Payload)
		case TypeCallResult:
			again, err = EncodeCallResult(fr.ID, fr.Payload)
		case TypeCallError:
			again, err = json.Marshal([]any{TypeCallError, fr.ID, fr.Code, fr.Description, fr.Details})
		}
		if err != nil {
			t.Fatalf("re-encode %+v: %v", fr, err)
		}
		fr2, err := Decode(again)
		if err != nil || fr2.Type != fr.Type || fr2.ID != fr.ID || fr2.Action != fr.Action || fr2.Code != fr.Code || fr2.Description != fr.Description {
			t.Fatalf("re-decoded %+v (%v), want %+v", fr2, err, fr)
		}
	})
}
