package storetest

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
)

// BenchApplyPayment measures acknowledged (durable) payments per second on
// s, the hub's hot path: writers goroutines (b.SetParallelism over
// GOMAXPROCS) each pay into their own channels, so no update is refused and
// concurrent calls can share fsyncs. Every update carries a ReceiptSize
// receipt. It reports ops/s and the p50/p99 latency of one ApplyPayment.
func BenchApplyPayment(b *testing.B, s hub.ChannelStore, channels, parallelism int) {
	b.Helper()
	ctx := context.Background()
	chans := make([]hub.ChannelRecord, channels)
	for i := range chans {
		chans[i] = NewChannel(b, fmt.Sprintf("dev-%d", i))
	}
	// Stored concurrently, so setup shares commits as the payments do.
	var setup sync.WaitGroup
	for w := range 64 {
		setup.Add(1)
		go func() {
			defer setup.Done()
			for i := w; i < channels; i += 64 {
				if err := s.PutChannel(ctx, chans[i]); err != nil {
					b.Errorf("PutChannel: %v", err)
					return
				}
			}
		}()
	}
	setup.Wait()
	// Receipts are built before the clock starts: the benchmark measures the
	// store, not the encoding of test data.
	receipt := Receipt(chans[0].Funding, 1)

	var (
		worker atomic.Int64
		mu     sync.Mutex
		lat    []time.Duration
		seqs   = make([]uint64, channels) // each index is owned by one goroutine
	)
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Goroutine w owns channels w, w+n, w+2n, ... where n is the number
		// of goroutines, which RunParallel does not tell; parallelism ×
		// GOMAXPROCS is that number.
		w := int(worker.Add(1) - 1)
		n := parallelism * runtime.GOMAXPROCS(0)
		var mine []int
		for i := w; i < channels; i += n {
			mine = append(mine, i)
		}
		if len(mine) == 0 {
			b.Errorf("goroutine %d has no channel: use at least %d channels", w, n)
			return
		}
		local := make([]time.Duration, 0, 1024)
		for k := 0; pb.Next(); k++ {
			i := mine[k%len(mine)]
			seqs[i]++
			u := hub.PaymentUpdate{
				Channel: chans[i].Funding,
				Seq:     seqs[i],
				Paid:    msat.Amount(seqs[i] * 1_000),
				Receipt: receipt,
				Time:    epoch(),
			}
			start := time.Now()
			if _, err := s.ApplyPayment(ctx, u); err != nil {
				b.Errorf("ApplyPayment: %v", err)
				return
			}
			local = append(local, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	// Process CPU per update: what the store leaves of the two cores for
	// signature checks (about 110 µs each) at the target rate. For Redis it
	// counts the client side only.
	b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
	}
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
