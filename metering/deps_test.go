package metering

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

// TestDependencies keeps the package pure: besides the standard library it
// may import only btcec (BIP-340 signatures), shopspring/decimal and the
// contracts package, never a store, bus or RPC client (NATS lives in
// hub/natsintake).
func TestDependencies(t *testing.T) {
	deptest.AllowOnly(t,
		"github.com/btcsuite/btcd/btcec/v2",
		"github.com/shopspring/decimal",
		"github.com/m2mhub/m2mhub/contracts",
	)
}
