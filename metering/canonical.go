package metering

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting while decoding: an event is at most four levels
// deep (event, data, periods, period), so anything deeper is not an event
// and must not cost the decoder a deep recursion.
const maxDepth = 6

// Canonicalize returns the RFC 8785 (JCS) canonical form of a JSON text that
// holds only strings, arrays and objects, as usage events do. Numbers,
// booleans, null, duplicate keys and invalid UTF-8 are refused with
// ErrMalformed. See docs/metering.md for the byte-exact rules.
func Canonicalize(b []byte) ([]byte, error) {
	v, err := decodeTree(b)
	if err != nil {
		return nil, err
	}
	return appendCanonical(nil, v), nil
}

// decodeTree decodes one JSON value made of strings, arrays and objects
// (map[string]any, []any, string) and refuses trailing data.
func decodeTree(b []byte) (any, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch t := tok.(type) {
	case string:
		return t, nil
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
				}
				k, _ := kt.(string) // the decoder only yields string keys
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("%w: duplicate key %q", ErrMalformed, k)
				}
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			if _, err := dec.Token(); err != nil { // '}'
				return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			return m, nil
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			return a, nil
		}
	}
	return nil, fmt.Errorf("%w: only strings, arrays and objects are allowed, got %v", ErrMalformed, tok)
}

// appendCanonical appends the JCS form of v (string, []any, map[string]any,
// map[string]string or []map[string]any) to buf.
func appendCanonical(buf []byte, v any) []byte {
	switch t := v.(type) {
	case string:
		return appendString(buf, t)
	case []any:
		buf = append(buf, '[')
		for i, e := range t {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendCanonical(buf, e)
		}
		return append(buf, ']')
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		buf = append(buf, '{')
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			buf = appendCanonical(buf, t[k])
		}
		return append(buf, '}')
	}
	panic(fmt.Sprintf("metering: canonical form of %T", v)) // callers build trees of the types above only
}

const hexDigits = "0123456789abcdef"

// appendString writes s as RFC 8785 does (ECMAScript JSON.stringify): only
// '"', '\\' and control characters are escaped; \b \t \n \f \r use their
// short forms, other controls \u00xx in lowercase hex; everything else,
// including non-ASCII, is copied as UTF-8.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c >= 0x20:
			buf = append(buf, c)
		case c == '\b':
			buf = append(buf, '\\', 'b')
		case c == '\t':
			buf = append(buf, '\\', 't')
		case c == '\n':
			buf = append(buf, '\\', 'n')
		case c == '\f':
			buf = append(buf, '\\', 'f')
		case c == '\r':
			buf = append(buf, '\\', 'r')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
	}
	return append(buf, '"')
}

// compareUTF16 orders strings by their UTF-16 code units, as RFC 8785
// sorts object keys. It differs from byte order only when a character
// above U+FFFF (a surrogate pair) meets one in U+E000..U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := utf16Units(ra), utf16Units(rb)
			return slices.Compare(ua[:], ub[:])
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16Units returns r's first and second UTF-16 code unit (the second is
// zero for a character in the basic plane, which sorts correctly because a
// differing first unit decides first).
func utf16Units(r rune) [2]uint16 {
	if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError || r2 != utf8.RuneError {
		return [2]uint16{uint16(r1), uint16(r2)}
	}
	return [2]uint16{uint16(r), 0}
}
