package redisstore_test

import (
	"fmt"
	"testing"

	"github.com/m2mhub/m2mhub/hub/storetest"
	"github.com/m2mhub/m2mhub/internal/redistest"
)

func TestMeteringConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunMetering(t, func(t *testing.T) storetest.MeteringStoreUnderTest {
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}

func TestPaidCutConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunPaidCut(t, func(t *testing.T) storetest.PaidCutStoreUnderTest {
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}

// BenchmarkRecordCharges measures charges made durable per second through
// RecordCharges against a redis-server with appendfsync always: one script
// run (one AOF write) per call.
func BenchmarkRecordCharges(b *testing.B) {
	srv := redistest.Start(b)
	for _, batch := range []int{100, 1000} {
		for _, callers := range []int{1, 4} {
			b.Run(fmt.Sprintf("batch=%d/callers=%d", batch, callers), func(b *testing.B) {
				s := mustOpen(b, srv.URL(), fmt.Sprintf("bench:%s:%d:", b.Name(), b.N))
				defer s.Close()
				storetest.BenchRecordCharges(b, s, 256, batch, callers)
			})
		}
	}
}

func TestCDRConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunCDRs(t, func(t *testing.T) storetest.CDRStoreUnderTest {
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}
