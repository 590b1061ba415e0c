package storetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
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
// with n open channels has (one in 100 with an active hold): it fills the
// store (64 writers, so setup shares commits), closes it, and then times
// what a restarted hub does with its channels: open the store and run
// start, which does the hub's start-up work on it (the channel manager's
// first watcher round, chantest.StartManager) and returns what to close
// before the store. It reports that start-up time (start-s), the heap and
// this process's RSS once it is done, and the p50/p99 latency of durable
// payments (ApplyPayment with a receipt) on channels drawn at random among
// the n, made while the started hub runs. In the same run it times the
// store alone: opened and every ready channel listed (scan-s). open
// follows RunChannels' rules: a second call with the same b reopens the
// same data. otherRSS, when not nil, returns the resident bytes of a
// store server outside this process (redis-server), reported beside. Its
// figures are medians over the b.N starts of one fill: run it with
// -benchtime=3x.
func BenchManyChannels(b *testing.B, n int, open func(tb testing.TB) ChannelStoreUnderTest, start func(tb testing.TB, s ChannelStoreUnderTest) io.Closer, otherRSS func() uint64) {
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
	const holdEvery = 100
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
				if i%holdEvery == 0 {
					h := NewHold(b, ops[i].Funding, ops[i].DeviceID, 100_000)
					h.Expires = time.Now().Add(24 * time.Hour) // still active when the hub starts
					if err := s.PutHold(ctx, h); err != nil {
						b.Errorf("PutHold: %v", err)
						return
					}
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

	var startS, scanS, heap, rss, server []float64
	var lat []time.Duration
	for i := range b.N {
		// The store alone: opened, every ready channel listed.
		runtime.GC()
		t0 := time.Now()
		s = open(b)
		ready, err := s.Channels(ctx, hub.ChannelReady)
		if err != nil {
			b.Fatal(err)
		}
		scanS = append(scanS, time.Since(t0).Seconds())
		if len(ready) != n {
			b.Fatalf("%d ready channels listed, stored %d", len(ready), n)
		}
		ready = nil
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}

		// The hub's start: the store opened and the start-up work done.
		runtime.GC()
		stopProfile := startProfile(b, i)
		t0 = time.Now()
		s = open(b)
		started := start(b, s)
		startS = append(startS, time.Since(t0).Seconds())
		stopProfile()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap = append(heap, float64(ms.HeapInuse)/(1<<20))
		rss = append(rss, float64(selfRSS())/(1<<20))
		if otherRSS != nil {
			server = append(server, float64(otherRSS())/(1<<20))
		}

		// Payments among them: sequential, so each latency is one
		// update's own (no queue of other writers in front of it).
		const pays = 500
		for range pays {
			i := mrand.IntN(n)
			st, err := s.Channel(ctx, ops[i].Funding)
			if err != nil {
				b.Fatal(err)
			}
			u := hub.PaymentUpdate{
				Channel: ops[i].Funding, Seq: st.Seq + 1, Paid: st.Paid + msat.Amount(1_000),
				Receipt: receipt, Time: epoch(),
			}
			t0 := time.Now()
			if _, err := s.ApplyPayment(ctx, u); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		if err := started.Close(); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.Logf("run %d: start %.2f s, store scan %.2f s, rss %.0f MiB", i+1, startS[i], scanS[i], rss[i])
	}
	// Medians over the b.N runs of one fill (-benchtime=3x: three).
	b.ReportMetric(median(startS), "start-s")
	b.ReportMetric(median(scanS), "scan-s")
	b.ReportMetric(fillS, "fill-s")
	b.ReportMetric(median(heap), "heap-MiB")
	b.ReportMetric(median(rss), "rss-MiB")
	if otherRSS != nil {
		b.ReportMetric(median(server), "server-rss-MiB")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "pay-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "pay-p99-ms")
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// startProfileDir, when set, makes BenchManyChannels write a CPU profile
// and an allocation profile of each timed start into it.
var startProfileDir = flag.String("storetest.startprofile", "", "directory for CPU and allocation profiles of BenchManyChannels' start")

// startProfile starts the CPU profile of start run i, when asked for, and
// returns what stops it and writes the allocation profile.
func startProfile(b *testing.B, i int) (stop func()) {
	dir := *startProfileDir
	if dir == "" {
		return func() {}
	}
	cpu, err := os.Create(filepath.Join(dir, fmt.Sprintf("start-cpu-%d.pprof", i)))
	if err != nil {
		b.Fatal(err)
	}
	runtime.MemProfileRate = 64 << 10
	if err := pprof.StartCPUProfile(cpu); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = cpu.Close()
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("start-allocs-%d.pprof", i)))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
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
