package boltstore_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub/storetest"
)

func TestMeteringConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunMetering(t, func(t *testing.T) storetest.MeteringStoreUnderTest {
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}

func TestPaidCutConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunPaidCut(t, func(t *testing.T) storetest.PaidCutStoreUnderTest {
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}

// BenchmarkRecordCharges measures charges made durable per second through
// RecordCharges, one commit per call shared between concurrent callers.
func BenchmarkRecordCharges(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		for _, callers := range []int{1, 4} {
			b.Run(fmt.Sprintf("batch=%d/callers=%d", batch, callers), func(b *testing.B) {
				s := mustOpen(b, b.TempDir())
				defer s.Close()
				storetest.BenchRecordCharges(b, s, 256, batch, callers)
			})
		}
	}
}

func TestCDRConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunCDRs(t, func(t *testing.T) storetest.CDRStoreUnderTest {
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}
