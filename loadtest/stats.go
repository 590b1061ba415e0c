package loadtest

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Percentiles summarises a latency distribution, in microseconds.
type Percentiles struct {
	Count int   `json:"count"`
	Mean  int64 `json:"mean_us"`
	P50   int64 `json:"p50_us"`
	P90   int64 `json:"p90_us"`
	P99   int64 `json:"p99_us"`
	Max   int64 `json:"max_us"`
}

// Summarize computes the percentiles of samples (microseconds) by the
// nearest-rank method on the sorted samples: the p-th percentile is the
// smallest sample with at least p% of the samples at or below it, so every
// figure reported is a latency that was really observed. samples is sorted
// in place.
func Summarize(samples []int64) Percentiles {
	n := len(samples)
	if n == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	return Percentiles{
		Count: n, Mean: int64(math.Round(sum / float64(n))),
		P50: rank(samples, 50), P90: rank(samples, 90), P99: rank(samples, 99), Max: samples[n-1],
	}
}

// rank is the nearest-rank p-th percentile of sorted samples.
func rank(sorted []int64, p float64) int64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Bucket is one bar of a latency histogram: Count samples above the
// previous bucket's bound and at most UpperUS microseconds.
type Bucket struct {
	UpperUS int64 `json:"upper_us"`
	Count   int   `json:"count"`
}

// histogramBounds are the buckets' upper bounds: ten per decade from 10 µs
// to 100 s, fine enough that a CDF drawn from them is smooth on a log axis
// while results.json stays small whatever the sample count.
func histogramBounds() []int64 {
	var b []int64
	for e := 1.0; e <= 8.0001; e += 0.1 {
		b = append(b, int64(math.Round(math.Pow(10, e))))
	}
	return slices.Compact(b)
}

// Histogram buckets sorted samples (microseconds); samples past the last
// bound go into the last bucket. Empty buckets are kept, so charts from
// different runs share their x positions.
func Histogram(sorted []int64) []Bucket {
	bounds := histogramBounds()
	out := make([]Bucket, len(bounds))
	i := 0
	for j, ub := range bounds {
		out[j].UpperUS = ub
		for i < len(sorted) && (sorted[i] <= ub || j == len(bounds)-1) {
			out[j].Count++
			i++
		}
	}
	return out
}

// op names what a recorded operation was.
type op int

const (
	opPay          op = iota // one channel payment, Pay to PayAck
	opPublish                // one usage batch, publish to JetStream ack
	opReceipt                // one receipt, batch made to receipt arrival
	opReceiptAcked           // the same receipt, batch's JetStream ack to its arrival
	opCount
)

// second is what happened in one second of the run.
type second struct {
	payments, events, receipted, errors int
	rssKiB                              int64
}

// recorder collects samples, per-second counts and errors from every
// worker. One mutex is enough: a record is a few appends, far below the
// cost of the network round trip it measures.
type recorder struct {
	start time.Time

	mu      sync.Mutex
	samples [opCount][]int64
	seconds []second
	errors  map[string]int
	// samples1 keeps the first message of each error kind.
	samples1 map[string]string
}

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, errors: map[string]int{}, samples1: map[string]string{}}
}

// slot returns the counters of the second at, growing the timeline.
func (r *recorder) slot(at time.Time) *second {
	i := max(0, int(at.Sub(r.start)/time.Second))
	for len(r.seconds) <= i {
		r.seconds = append(r.seconds, second{})
	}
	return &r.seconds[i]
}

// done records a successful operation of kind o that ended at end and
// took d; n is the events it covered (for publishes and receipts).
func (r *recorder) done(o op, end time.Time, d time.Duration, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[o] = append(r.samples[o], d.Microseconds())
	s := r.slot(end)
	switch o {
	case opPay:
		s.payments++
	case opPublish:
		s.events += n
	case opReceipt:
		s.receipted += n
	}
}

// fail records an error of kind at time at.
func (r *recorder) fail(kind string, at time.Time, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[kind] += n
	r.slot(at).errors += n
}

// sample keeps msg as the example of error kind, if it has none yet.
func (r *recorder) sample(kind, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.samples1[kind]; !ok {
		r.samples1[kind] = msg
	}
}

// setRSS records the hub's resident memory in the second at.
func (r *recorder) setRSS(at time.Time, kib int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slot(at).rssKiB = kib
}

// totals returns the counts so far, for the progress line.
func (r *recorder) totals() (payments, events, receipted, errs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seconds {
		payments += s.payments
		events += s.events
		receipted += s.receipted
		errs += s.errors
	}
	return
}
