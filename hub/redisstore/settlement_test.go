package redisstore_test

import (
	"testing"

	"github.com/m2mhub/m2mhub/hub/storetest"
	"github.com/m2mhub/m2mhub/internal/redistest"
)

func TestSettlementConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunSettlement(t, func(t *testing.T) storetest.SettlementStoreUnderTest {
		// The prefix follows the test name, so a second call from the same
		// subtest opens the same keys.
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}

func TestFencingConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunFencing(t, func(t *testing.T) storetest.FencedStoreUnderTest {
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}
