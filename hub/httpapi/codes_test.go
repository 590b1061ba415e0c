package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
)

// TestErrorCodesBothWays checks that every error of the table reads back,
// through the client's APIError, as an error that maps to the same answer,
// and that an unknown or internal code wraps nothing.
func TestErrorCodesBothWays(t *testing.T) {
	for _, c := range errorCodes {
		status, code := statusOf(fmt.Errorf("context: %w", c.err))
		if status != c.status || code != c.code {
			t.Errorf("%v answers %d %s, table says %d %s", c.err, status, code, c.status, c.code)
		}
		back := &APIError{Status: status, Code: code}
		if s, k := statusOf(back); s != c.status || k != c.code {
			t.Errorf("%s read back answers %d %s", c.code, s, k)
		}
	}
	for _, code := range []string{"internal", "from-a-newer-hub"} {
		if err := (&APIError{Status: 500, Code: code}).Unwrap(); err != nil {
			t.Errorf("code %s unwraps to %v", code, err)
		}
	}
	if !errors.Is(&APIError{Status: 404, Code: "not_found"}, hub.ErrNotFound) {
		t.Error("not_found does not read back as its error")
	}
}
