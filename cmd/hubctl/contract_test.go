package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// TestContractPrice prices the example EV session offline and checks the
// figures of docs/contracts.md.
func TestContractPrice(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--json", "contract", "price",
		"../../contracts/testdata/examples/ev_charging.json", "../../contracts/testdata/usage/ev_charging.json"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var b struct {
		Total    uint64 `json:"total_msat"`
		Fee      uint64 `json:"fee_msat"`
		Provider uint64 `json:"provider_msat"`
	}
	if err := json.Unmarshal(out.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if b.Total != 3_256_000 || b.Fee != 32_560 || b.Provider != 3_223_440 {
		t.Fatalf("breakdown %+v", b)
	}
	out.Reset()
	code = run(context.Background(), []string{"contract", "price", "../../contracts/testdata/examples/ev_charging.json", "/nonexistent"}, &out, &errOut)
	if code == exitOK {
		t.Fatal("missing usage file accepted")
	}
}
