package metering_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/m2mhub/m2mhub/metering"
)

// FuzzParseBatch checks that the intake's decoder never panics, and that
// whatever it accepts re-encodes to a body it parses to the same events,
// with a canonical form that agrees with the generic canonicalizer.
func FuzzParseBatch(f *testing.F) {
	key := mustKey(f, 1)
	e := mustSigned(f, "seed", key)
	one, _ := e.MarshalJSON()
	f.Add(one)
	two, _ := metering.EncodeBatch([]metering.Event{e, mustSigned(f, "seed2", key)})
	f.Add(two)
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := metering.ParseBatch(b)
		if err != nil {
			return
		}
		body, err := metering.EncodeBatch(evs)
		if err != nil {
			t.Fatalf("accepted batch does not re-encode: %v", err)
		}
		again, err := metering.ParseBatch(body)
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v\n%s", err, body)
		}
		if !reflect.DeepEqual(evs, again) {
			t.Fatalf("round trip changed events")
		}
		for i := range evs {
			unsigned := evs[i]
			unsigned.Sig = ""
			raw, _ := unsigned.MarshalJSON()
			c, err := metering.Canonicalize(raw)
			if err != nil || !bytes.Equal(c, evs[i].Canonical()) {
				t.Fatalf("canonical forms differ: %s vs %s (%v)", c, evs[i].Canonical(), err)
			}
		}
	})
}

// FuzzCanonical checks the canonicalizer: its output is valid JSON that
// decodes to the same value as the input and is its own canonical form.
func FuzzCanonical(f *testing.F) {
	f.Add([]byte(`{"b":"1","a":["x",{"\u00e9":"\n"}]}`))
	f.Add([]byte(`{"\uff21":"1","\ud83d\ude00":"2"}`))
	f.Add([]byte(`"\u0000\u001f\"\\"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := metering.Canonicalize(b)
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("invalid JSON out: %q", c)
		}
		var in, out any
		if err := json.Unmarshal(b, &in); err != nil {
			t.Fatalf("accepted input json refuses: %v", err)
		}
		if err := json.Unmarshal(c, &out); err != nil || !reflect.DeepEqual(in, out) {
			t.Fatalf("canonical form changed the value: %q -> %q", b, c)
		}
		c2, err := metering.Canonicalize(c)
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("not idempotent: %q -> %q (%v)", c, c2, err)
		}
	})
}
