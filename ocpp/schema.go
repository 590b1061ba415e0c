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
// is not JSON, and one with the code the violated keyword maps to
// (OCPP-J Part 4, 4.3: a missing required field is an
// OccurrenceConstraintViolation, a wrong JSON type a
// TypeConstraintViolation, a value out of its constraints a
// PropertyConstraintViolation) for a schema violation.
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
	return schemaError(codeFor(ve), fmt.Sprintf("%s %s: %s", action, dir, oneLine(ve)))
}

func schemaError(code ErrorCode, msg string) error {
	return fmt.Errorf("%w: %w", ErrSchema, &Error{Code: code, Message: msg})
}

// codeFor maps the innermost violated keyword to the OCPP-J error code.
func codeFor(ve *jsonschema.ValidationError) ErrorCode {
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	kw := ve.ErrorKind.KeywordPath()
	if len(kw) == 0 {
		return FormatViolation
	}
	switch kw[len(kw)-1] {
	case "required":
		return OccurrenceConstraintViolation
	case "type":
		return TypeConstraintViolation
	case "additionalProperties":
		return FormatViolation
	default:
		return PropertyConstraintViolation
	}
}

func oneLine(ve *jsonschema.ValidationError) string {
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	loc := "/" + strings.Join(ve.InstanceLocation, "/")
	return loc + ": " + strings.ReplaceAll(ve.Error(), "\n", " ")
}
