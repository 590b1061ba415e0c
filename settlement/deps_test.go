package settlement

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

// TestDependencies keeps the package pure: besides the standard library it
// may import only btcd's script, key and chain types, msat and the channel
// package, never a store, bus or RPC client (those belong in adapters such
// as settlement/btcdchain).
func TestDependencies(t *testing.T) {
	deptest.AllowOnly(t,
		"github.com/btcsuite/btcd/btcec/v2",
		"github.com/btcsuite/btcd/btcutil",
		"github.com/btcsuite/btcd/chaincfg",
		"github.com/btcsuite/btcd/txscript",
		"github.com/btcsuite/btcd/wire",
		"github.com/m2mhub/m2mhub/msat",
		"github.com/m2mhub/m2mhub/channel",
	)
}
