package contracts

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

// TestDependencies keeps the package pure: besides the standard library it
// may import only shopspring/decimal and msat, never a store, bus or RPC
// client.
func TestDependencies(t *testing.T) {
	deptest.AllowOnly(t,
		"github.com/shopspring/decimal",
		"github.com/m2mhub/m2mhub/msat",
	)
}
