package boltstore_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub/storetest"
)

func TestSettlementConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunSettlement(t, func(t *testing.T) storetest.SettlementStoreUnderTest {
		// One directory per subtest name, so a second call from the same
		// subtest reopens the same file.
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}

func TestFencingConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunFencing(t, func(t *testing.T) storetest.FencedStoreUnderTest {
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}
