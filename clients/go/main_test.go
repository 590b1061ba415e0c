package m2mclient_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every Device, Provider, Session and the hubs the
// tests start leave no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
