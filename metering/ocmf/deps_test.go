package ocmf

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

// TestDependencies keeps the package pure: the standard library, btcec
// (secp256k1), shopspring/decimal and contracts only.
func TestDependencies(t *testing.T) {
	deptest.AllowOnly(t,
		"github.com/btcsuite/btcd/btcec/v2",
		"github.com/shopspring/decimal",
		"github.com/m2mhub/m2mhub/contracts",
	)
}
