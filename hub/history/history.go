// Package history keeps the hub's recent figures in memory: a bounded ring
// of samples taken at a fixed interval (payments, latency, metered income,
// sessions, wallet balance) and the alert conditions the hub sees firing,
// so the dashboard shows the last hours, not only what happened since the
// page opened. It holds values only; hub/metrics takes the samples and the
// admin API serves them (GET /v1/history). Nothing is kept across a
// restart: Prometheus is the long-term record.
package history

import (
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/msat"
)

// Sample is what the hub did over one interval, ending at Time, and the
// levels it stood at then.
type Sample struct {
	Time time.Time `json:"time"`
	// IntervalSeconds is the length of the interval the counts cover.
	IntervalSeconds float64 `json:"interval_seconds"`

	// Payments counts the channel payments accepted in the interval and
	// PaidMsat what they moved (every payment, metered or direct).
	Payments uint64      `json:"payments"`
	PaidMsat msat.Amount `json:"paid_msat"`
	// Refused counts payments refused in the interval.
	Refused uint64 `json:"refused"`
	// LatencyP50Seconds and LatencyP99Seconds estimate the accepted
	// payments' latency quantiles in the interval from the histogram's
	// buckets (as Prometheus's histogram_quantile does); 0 without
	// payments.
	LatencyP50Seconds float64 `json:"latency_p50_seconds"`
	LatencyP99Seconds float64 `json:"latency_p99_seconds"`
	// ChargedMsat is what usage events were charged in the interval
	// (m2mhub_charged_msat_total summed over contract kinds).
	ChargedMsat msat.Amount `json:"charged_msat"`
	// Income is each provider's metered income recorded in the interval:
	// its part (amount − fee) of the charges recorded then, paid or owed.
	// FeesMsat is the hub's part of those charges, its revenue.
	Income   map[string]msat.Amount `json:"income_msat"`
	FeesMsat msat.Amount            `json:"fees_msat"`

	// Sessions is the number of live device sessions at Time.
	Sessions int `json:"sessions"`
	// WalletSat is the hub wallet's balance (spendable, immature and
	// unconfirmed) at Time; absent when it could not be read.
	WalletSat *btcutil.Amount `json:"wallet_sat,omitempty"`
}

// Alert states.
const (
	// StatePending is a condition that holds but not yet for its rule's
	// duration.
	StatePending = "pending"
	// StateFiring is a condition that has held for its rule's duration.
	StateFiring = "firing"
)

// Alert is one of the hub's alert conditions that holds now. The names
// are those of deploy/prometheus/alerts.yml.
type Alert struct {
	Name     string    `json:"name"`
	Severity string    `json:"severity"`
	Summary  string    `json:"summary"`
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
}

// View is what GET /v1/history answers: the samples, oldest first, and
// the alerts holding at the latest one.
type View struct {
	IntervalSeconds float64  `json:"interval_seconds"`
	Capacity        int      `json:"capacity"`
	Samples         []Sample `json:"samples"`
	Alerts          []Alert  `json:"alerts"`
}

// Ring holds the newest samples up to a fixed capacity. It is safe for
// concurrent use.
type Ring struct {
	mu     sync.Mutex
	buf    []Sample
	next   int
	full   bool
	alerts []Alert
}

// NewRing returns a ring of capacity samples (at least one).
func NewRing(capacity int) *Ring {
	return &Ring{buf: make([]Sample, max(capacity, 1))}
}

// Capacity is the number of samples the ring keeps.
func (r *Ring) Capacity() int { return len(r.buf) }

// Add keeps s, dropping the oldest sample when the ring is full, and
// replaces the alerts holding now.
func (r *Ring) Add(s Sample, alerts []Alert) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
	r.alerts = append([]Alert(nil), alerts...)
}

// Samples returns the kept samples, oldest first.
func (r *Ring) Samples() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]Sample(nil), r.buf[:r.next]...)
	}
	out := make([]Sample, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// Alerts returns the alerts that held at the latest sample.
func (r *Ring) Alerts() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert{}, r.alerts...)
}
