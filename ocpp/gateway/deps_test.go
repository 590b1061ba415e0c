package gateway

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

// TestDependencies keeps the gateway free of the hub: it reaches it only
// through its Billing port (ocpp/gateway/m2mbilling adapts the provider
// library), so it links the WebSocket library, lnd's clock and package
// ocpp only.
func TestDependencies(t *testing.T) {
	deptest.AllowOnly(t,
		"github.com/gorilla/websocket",
		"github.com/lightningnetwork/lnd/clock",
		"github.com/m2mhub/m2mhub/ocpp",
		"github.com/santhosh-tekuri/jsonschema/v6",
	)
}
