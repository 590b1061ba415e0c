package ocpp

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

// TestDependencies keeps the framing and schemas free of I/O: the
// standard library and the JSON-schema validator only.
func TestDependencies(t *testing.T) {
	deptest.AllowOnly(t, "github.com/santhosh-tekuri/jsonschema/v6")
}
