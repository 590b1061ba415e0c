package loadtest

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t.Run("OK_OneToHundred", func(t *testing.T) {
		s := make([]int64, 100)
		for i := range s {
			s[i] = int64(100 - i) // reversed: Summarize sorts
		}
		got := Summarize(s)
		want := Percentiles{Count: 100, Mean: 51, P50: 50, P90: 90, P99: 99, Max: 100}
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("OK_NearestRankIsAnObservedSample", func(t *testing.T) {
		s := []int64{10, 20, 30, 1000}
		got := Summarize(s)
		// p50 of 4 is the 2nd sample, p90 and p99 the 4th.
		if got.P50 != 20 || got.P90 != 1000 || got.P99 != 1000 || got.Max != 1000 || got.Mean != 265 {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("OK_Single", func(t *testing.T) {
		got := Summarize([]int64{7})
		if got != (Percentiles{Count: 1, Mean: 7, P50: 7, P90: 7, P99: 7, Max: 7}) {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("OK_Empty", func(t *testing.T) {
		if got := Summarize(nil); got != (Percentiles{}) {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("OK_MatchesBruteForce", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for range 50 {
			n := 1 + r.IntN(500)
			s := make([]int64, n)
			for i := range s {
				s[i] = r.Int64N(1_000_000)
			}
			sorted := slices.Clone(s)
			slices.Sort(sorted)
			got := Summarize(s)
			for _, c := range []struct {
				p   float64
				got int64
			}{{50, got.P50}, {90, got.P90}, {99, got.P99}} {
				// The smallest sample with at least p% at or below it.
				for _, v := range sorted {
					below := 0
					for _, w := range sorted {
						if w <= v {
							below++
						}
					}
					if float64(below)*100 >= c.p*float64(n) {
						if v != c.got {
							t.Fatalf("n=%d p%v: got %d, want %d", n, c.p, c.got, v)
						}
						break
					}
				}
			}
		}
	})
}

func TestHistogram(t *testing.T) {
	s := []int64{1, 10, 11, 500, 1000, 1001, 5_000_000_000}
	slices.Sort(s)
	h := Histogram(s)
	total := 0
	for i, b := range h {
		total += b.Count
		if i > 0 && b.UpperUS <= h[i-1].UpperUS {
			t.Fatalf("bounds not increasing at %d: %v", i, h[i-1:i+1])
		}
	}
	if total != len(s) {
		t.Fatalf("histogram holds %d samples, want %d", total, len(s))
	}
	if h[0].UpperUS != 10 || h[0].Count != 2 { // 1 and 10
		t.Fatalf("first bucket %+v", h[0])
	}
	if last := h[len(h)-1]; last.UpperUS != 100_000_000 || last.Count != 1 {
		t.Fatalf("last bucket %+v (past-the-end samples go here)", last)
	}
	for _, b := range h {
		if b.UpperUS == 1000 && b.Count != 1 { // 1000 alone; 500 is below 502
			t.Fatalf("bucket ≤1000 µs has %d", b.Count)
		}
	}
}

func TestRecorder(t *testing.T) {
	start := time.Unix(1000, 0)
	r := newRecorder(start)
	r.done(opPay, start.Add(500*time.Millisecond), 2*time.Millisecond, 1)
	r.done(opPay, start.Add(2500*time.Millisecond), 3*time.Millisecond, 1)
	r.done(opPublish, start.Add(2600*time.Millisecond), time.Millisecond, 100)
	r.done(opReceipt, start.Add(2700*time.Millisecond), time.Second, 40)
	r.fail("pay:timeout", start.Add(1200*time.Millisecond), 1)
	r.sample("pay:timeout", "first")
	r.sample("pay:timeout", "second")
	p, e, rc, errs := r.totals()
	if p != 2 || e != 100 || rc != 40 || errs != 1 {
		t.Fatalf("totals %d %d %d %d", p, e, rc, errs)
	}
	if len(r.seconds) != 3 || r.seconds[0].payments != 1 || r.seconds[1].errors != 1 || r.seconds[2].events != 100 {
		t.Fatalf("timeline %+v", r.seconds)
	}
	if r.samples1["pay:timeout"] != "first" || r.samples[opPay][1] != 3000 {
		t.Fatalf("samples %v %v", r.samples1, r.samples[opPay])
	}
}

func TestPacing(t *testing.T) {
	for _, c := range []struct {
		name    string
		rate    float64
		n       int
		maxRate float64
		want    time.Duration
	}{
		{"OK_Shared", 1000, 100, 150, 100 * time.Millisecond},
		{"OK_CappedPerWorker", 100_000, 10, 150, time.Second / 150},
		{"OK_MaxRate", 0, 10, 150, time.Second / 150},
		{"OK_Unpaced", 0, 10, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := pacing(c.rate, c.n, c.maxRate); got != c.want {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\thubd\nVmPeak:\t 900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t   98765 kB\n"
	if got := parseStatusKiB(status, "VmRSS:"); got != 98765 {
		t.Fatalf("VmRSS %d", got)
	}
	if got := parseStatusKiB(status, "VmHWM:"); got != 123456 {
		t.Fatalf("VmHWM %d", got)
	}
	if got := parseStatusKiB(status, "VmSwap:"); got != 0 {
		t.Fatalf("VmSwap %d", got)
	}
}
