package ocpp

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed schemas/*.json
var schemaFS embed.FS

// ErrUnknownAction means no schema is known for the action: the gateway
// does not support it.
var ErrUnknownAction = errors.New("ocpp: unknown action")

// ErrSchema is wrapped by a *Error whose payload violates the action's
// schema.
var ErrSchema = errors.New("ocpp: schema violation")

// Direction says which half of an exchange a payload is.
type Direction string

// A request is the payload of a CALL, a response that of its CALLRESULT.
const (
	Request  Direction = "req"
	Response Direction = "conf"
)

// Schemas validates payloads against the official OCPP 2.0.1 JSON schemas
// of the actions it holds (those in schemas/, see schemas/NOTICE.md).
type Schemas struct {
	byKey map[string]*jsonschema.Schema
}

// LoadSchemas compiles the embedded schemas.
func LoadSchemas() (*Schemas, error) {
	entries, err := schemaFS.ReadDir("schemas")
	if err != nil {
		return nil, fmt.Errorf("ocpp: schemas: %w", err)
	}
	c := jsonschema.NewCompiler()
	var keys []string
	for _, e := range entries {
		name := e.Name()
		b, err := schemaFS.ReadFile("schemas/" + name)
		if err != nil {
			return nil, fmt.Errorf("ocpp: schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("ocpp: schema %s: %w", name, err)
		}
		key := strings.TrimSuffix(name, ".json")
		if err := c.AddResource("urn:"+key, doc); err != nil {
			return nil, fmt.Errorf("ocpp: schema %s: %w", name, err)
		}
		keys = append(keys, key)
	}
	s := &Schemas{byKey: make(map[string]*jsonschema.Schema, len(keys))}
	for _, k := range keys {
		sch, err := c.Compile("urn:" + k)
		if err != nil {
			return nil, fmt.Errorf("ocpp: schema %s: %w", k, err)
		}
		s.byKey[k] = sch
	}
	return s, nil
}

// Actions lists the actions with both a request and a response schema.
func (s *Schemas) Actions() []string {
	var out []string
	for k := range s.byKey {
		if a, ok := strings.CutSuffix(k, ".req"); ok {
			if _, ok := s.byKey[a+".conf"]; ok {
				out = append(out, a)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Validate checks payload against action's schema for dir. It returns an
// error wrapping ErrUnknownAction for an action without a schema, and
// otherwise an error wrapping ErrSchema and an *Error: code FormatViolation for a payload that
// is not JSON, and for a schema violation the code of the violated keyword
// (see violation).
func (s *Schemas) Validate(action string, dir Direction, payload []byte) error {
	sch, ok := s.byKey[action+"."+string(dir)]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownAction, action)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return schemaError(FormatViolation, "payload is not JSON")
	}
	err = sch.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return schemaError(FormatViolation, err.Error())
	}
	code, text := violation(ve)
	return schemaError(code, fmt.Sprintf("%s %s: %s", action, dir, text))
}

func schemaError(code ErrorCode, msg string) error {
	return fmt.Errorf("%w: %w", ErrSchema, &Error{Code: code, Message: msg})
}

// violation picks, among the violated keywords (the validator reports
// them in no fixed order), the one whose OCPP-J code ranks first
// (Part 4, 4.3: a missing required field is an
// OccurrenceConstraintViolation, a wrong JSON type a
// TypeConstraintViolation, an unknown field a FormatViolation, any other
// constraint a PropertyConstraintViolation), and describes it.
func violation(ve *jsonschema.ValidationError) (ErrorCode, string) {
	rank := map[ErrorCode]int{OccurrenceConstraintViolation: 0, TypeConstraintViolation: 1, FormatViolation: 2, PropertyConstraintViolation: 3}
	var best *jsonschema.ValidationError
	var bestCode ErrorCode
	var bestText string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		code := codeOf(e)
		text := "/" + strings.Join(e.InstanceLocation, "/") + ": " + strings.ReplaceAll(e.Error(), "\n", " ")
		if best == nil || rank[code] < rank[bestCode] || (rank[code] == rank[bestCode] && text < bestText) {
			best, bestCode, bestText = e, code, text
		}
	}
	walk(ve)
	return bestCode, bestText
}

func codeOf(e *jsonschema.ValidationError) ErrorCode {
	kw := e.ErrorKind.KeywordPath()
	if len(kw) == 0 {
		return FormatViolation
	}
	switch kw[len(kw)-1] {
	case "required":
		return OccurrenceConstraintViolation
	case "type":
		return TypeConstraintViolation
	case "additionalProperties", "false":
		return FormatViolation
	default:
		return PropertyConstraintViolation
	}
}
