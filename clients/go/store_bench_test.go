package m2mclient

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkPaymentWrites measures what a payment writes on the device, in
// FileStore, without the network: the pending state before the send and
// the acknowledged state with its receipt after the PayAck.
//
//   - SyncedPending: the pending state fsynced before the send, as before
//     (two fsyncs a payment, both on the round trip);
//   - DeferredPending: the pending state written (SaveDeferred) and covered
//     by the acknowledgement's fsync, as Pay does now (one fsync).
//
// Each reports the p50 and p99 of one payment's writes.
func BenchmarkPaymentWrites(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, pending func(s *FileStore, st ChannelState) error) {
		s, err := NewFileStore(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		st := sampleState(b)
		r := signedReceipt(b, 1)
		// The first record and a new journal are synced at once.
		for range 2 {
			if err := s.Save(ctx, st); err != nil {
				b.Fatal(err)
			}
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			st.Seq = uint64(2*i + 10)
			if err := pending(s, st); err != nil {
				b.Fatal(err)
			}
			st.Seq++
			if err := s.SaveWithReceipt(ctx, st, r); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("SyncedPending", func(b *testing.B) {
		run(b, func(s *FileStore, st ChannelState) error { return s.Save(ctx, st) })
	})
	b.Run("DeferredPending", func(b *testing.B) {
		run(b, func(s *FileStore, st ChannelState) error {
			done, err := s.SaveDeferred(ctx, st)
			if err != nil {
				return err
			}
			// Only closes the journal: the acknowledgement's fsync
			// that follows covers the write.
			return done(false)
		})
	})
}
