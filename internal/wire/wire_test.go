package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestEnrolRoundTrip(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		in := &Enrol{Token: []byte("operator-signed-token")}
		b, err := EncodeMessage(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := MessageType(binary.BigEndian.Uint16(b)); got != MsgEnrol {
			t.Fatalf("type = %d, want %d", got, MsgEnrol)
		}
		// Type 0, length 21, then the token: the layout docs/protocol.md gives.
		want := append([]byte{0xBB, 0x00, 0x00, 21}, in.Token...)
		if !bytes.Equal(b, want) {
			t.Fatalf("encoding = %x, want %x", b, want)
		}
		out, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		e, ok := out.(*Enrol)
		if !ok || !bytes.Equal(e.Token, in.Token) {
			t.Fatalf("decoded %#v", out)
		}
	})
	t.Run("ErrProtocol", func(t *testing.T) {
		for name, payload := range map[string][]byte{
			"empty":            {},
			"token-empty":      {0x00, 0x00},
			"truncated":        {0x00, 0x05, 'a'},
			"unknown-even":     {0x00, 0x01, 'a', 0x02, 0x00},
			"not-canonical":    {0x01, 0x00, 0x00, 0x01, 'a'},
			"token-too-large":  append([]byte{0x00, 0xfd, 0x10, 0x01}, make([]byte, MaxTokenSize+1)...),
			"length-overflows": {0x00, 0xfe, 0xff, 0xff, 0xff, 0xff},
		} {
			msg := append([]byte{0xBB, 0x00}, payload...)
			if _, err := DecodeMessage(msg); !errors.Is(err, ErrProtocol) {
				t.Errorf("%s: err = %v, want ErrProtocol", name, err)
			}
		}
	})
	t.Run("UnknownOddSkipped", func(t *testing.T) {
		msg := []byte{0xBB, 0x00, 0x00, 0x01, 'a', 0x03, 0x01, 'z'}
		out, err := DecodeMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		if e := out.(*Enrol); string(e.Token) != "a" {
			t.Fatalf("token = %q", e.Token)
		}
	})
}

func TestCodeError(t *testing.T) {
	for _, tc := range []struct {
		data       string
		code       Code
		msg        string
		permanent  bool
		wireString string
	}{
		{"revoked: device dev-1 revoked by operator", CodeRevoked, "device dev-1 revoked by operator", true, ""},
		{"unknown-key: no such device", CodeUnknownKey, "no such device", true, ""},
		{"too-many-sessions: hub full", CodeTooManySessions, "hub full", false, ""},
		{"replaced", CodeReplaced, "", false, ""},
		{"Something Else: broke", "", "Something Else: broke", false, ""},
		{"", "", "", false, ""},
	} {
		got := ParseError(&Error{Data: ErrorData(tc.data)})
		if got.Code != tc.code || got.Message != tc.msg || got.Code.Permanent() != tc.permanent {
			t.Errorf("ParseError(%q) = %+v", tc.data, got)
		}
	}
	e := NewError(CodeRotatedOut, "key was rotated")
	if string(e.Data) != "rotated-out: key was rotated" {
		t.Fatalf("data = %q", e.Data)
	}
	if got := ParseError(e); got.Code != CodeRotatedOut || got.Message != "key was rotated" {
		t.Fatalf("round trip = %+v", got)
	}
}

func TestInitFeatures(t *testing.T) {
	b, err := EncodeMessage(NewInit())
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckInit(m.(*Init)); err != nil {
		t.Fatal(err)
	}
	lightning := NewInitMessage(NewRawFeatureVector(), NewRawFeatureVector(0)) // option_data_loss_protect, required
	if err := CheckInit(lightning); !errors.Is(err, ErrProtocol) {
		t.Fatalf("plain Lightning init: err = %v, want ErrProtocol", err)
	}
}

// frames is a FrameReader over queued plaintext frames that records whether a
// body was read, so the test can prove the size check happens first.
type frames struct {
	queue    [][]byte
	bodyRead bool
}

func (f *frames) ReadNextHeader() (uint32, error) {
	if len(f.queue) == 0 {
		return 0, io.EOF
	}
	return uint32(len(f.queue[0]) + macSize), nil
}

func (f *frames) ReadNextBody(buf []byte) ([]byte, error) {
	f.bodyRead = true
	b := f.queue[0]
	f.queue = f.queue[1:]
	return b, nil
}

func TestReadMessageSizeCheckedBeforeBody(t *testing.T) {
	ping, err := EncodeMessage(NewPing(0))
	if err != nil {
		t.Fatal(err)
	}
	big, err := EncodeMessage(&Custom{Type: TypeBase + 1, Data: make([]byte, 1000)})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("OK", func(t *testing.T) {
		f := &frames{queue: [][]byte{ping}}
		m, err := ReadMessage(f, 100)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*Ping); !ok {
			t.Fatalf("got %T", m)
		}
	})
	t.Run("ErrMessageTooLarge", func(t *testing.T) {
		f := &frames{queue: [][]byte{big}}
		if _, err := ReadMessage(f, 100); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("err = %v, want ErrMessageTooLarge", err)
		}
		if f.bodyRead {
			t.Fatal("body read despite oversized header")
		}
	})
	t.Run("ErrProtocol", func(t *testing.T) {
		f := &frames{queue: [][]byte{{0x00, 0x07, 0x01}}} // unknown even type 7 below the custom range
		if _, err := ReadMessage(f, 100); !errors.Is(err, ErrProtocol) {
			t.Fatalf("err = %v, want ErrProtocol", err)
		}
	})
}

func TestEncodeMessageTooLarge(t *testing.T) {
	_, err := EncodeMessage(&Custom{Type: TypeBase + 1, Data: make([]byte, MaxMessageSize)})
	if err == nil {
		t.Fatal("encoded a message larger than one frame")
	}
}
