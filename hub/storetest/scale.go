package storetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
)

// BenchManyChannels measures a store holding n ready channels, as a hub
// with n open channels has: it fills the store (64 writers, so setup
// shares commits), closes it, and then times what a restarted hub does
// before it serves the first payment: open the store and list every ready
// channel (the channel manager's first scan). It reports that start-up
// time, the heap and this process's RSS once the listing is held, and the
// p50/p99 latency of durable payments (ApplyPayment with a receipt) on
// channels drawn at random among the n. open follows RunChannels' rules: a
// second call with the same b reopens the same data. otherRSS, when not
// nil, returns the resident bytes of a store server outside this process
// (redis-server), reported beside. Run it with -benchtime=1x.
func BenchManyChannels(b *testing.B, n int, open func(tb testing.TB) ChannelStoreUnderTest, otherRSS func() uint64) {
	b.Helper()
	ctx := context.Background()
	tmpl := NewChannel(b, "dev")
	ops := make([]hub.ChannelRecord, n)
	for i := range ops {
		c := tmpl
		c.DeviceID = fmt.Sprintf("dev-%d", i)
		if _, err := rand.Read(c.PendingID[:]); err != nil {
			b.Fatal(err)
		}
		c.Funding = NewOutPoint(b)
		ops[i] = c
	}
	s := open(b)
	fill := time.Now()
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				if err := s.PutChannel(ctx, ops[i]); err != nil {
					b.Errorf("PutChannel: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	fillS := time.Since(fill).Seconds()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	receipt := Receipt(ops[0].Funding, 1)

	for range b.N {
		runtime.GC()
		start := time.Now()
		s = open(b)
		ready, err := s.Channels(ctx, hub.ChannelReady)
		if err != nil {
			b.Fatal(err)
		}
		startS := time.Since(start).Seconds()
		if len(ready) != n {
			b.Fatalf("%d ready channels listed, stored %d", len(ready), n)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss := selfRSS()

		// Payments among them: sequential, so each latency is one
		// update's own (no queue of other writers in front of it).
		const pays = 500
		seqs := map[int]uint64{}
		lat := make([]time.Duration, 0, pays)
		for range pays {
			i := mrand.IntN(n)
			st, err := s.Channel(ctx, ops[i].Funding)
			if err != nil {
				b.Fatal(err)
			}
			seqs[i] = st.Seq + 1
			u := hub.PaymentUpdate{
				Channel: ops[i].Funding, Seq: seqs[i], Paid: st.Paid + msat.Amount(1_000),
				Receipt: receipt, Time: epoch(),
			}
			t0 := time.Now()
			if _, err := s.ApplyPayment(ctx, u); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		runtime.KeepAlive(ready)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		slices.Sort(lat)
		b.ReportMetric(startS, "start-s")
		b.ReportMetric(fillS, "fill-s")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
		if otherRSS != nil {
			b.ReportMetric(float64(otherRSS())/(1<<20), "server-rss-MiB")
		}
		b.ReportMetric(float64(lat[len(lat)/2])/1e6, "pay-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "pay-p99-ms")
	}
}

// selfRSS is this process's resident set, from /proc/self/status.
func selfRSS() uint64 { return ProcRSS(os.Getpid()) }

// ProcRSS returns the resident bytes of process pid (VmRSS in
// /proc/<pid>/status), or zero when it cannot be read.
func ProcRSS(pid int) uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
