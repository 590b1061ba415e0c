// Package metrics exports the hub's Prometheus metrics: counters and
// histograms fed by the hub's observer hooks (hub.PayObserver,
// charging.Observer), and gauges read on every scrape from the hub's own
// read methods (sessions, channels, exposure, intake, settlement, health).
// It keeps its own registry, never the process-wide default one, so two
// hubs in one test process do not collide. docs/metrics.md lists every
// metric; deploy/ holds the dashboard and alert rules built on them.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement"
)

// Namespace prefixes every metric name.
const Namespace = "m2mhub"

// Defaults for Config.
const (
	// DefaultExpiryWindow is how close to expiry (in blocks) an open
	// channel counts as near expiry: one day.
	DefaultExpiryWindow = 144
	// DefaultScrapeTimeout bounds the reads one scrape makes.
	DefaultScrapeTimeout = 5 * time.Second
)

// ErrInvalid is returned by New for a configuration it cannot use.
var ErrInvalid = errors.New("metrics: invalid configuration")

// SessionCounter counts live device sessions. *session.Server satisfies it.
type SessionCounter interface {
	Sessions() int
}

// ExposureReader sums what the hub stands to lose. *channels.Manager
// satisfies it.
type ExposureReader interface {
	Exposure(ctx context.Context) (channels.Exposure, error)
}

// ChannelLister lists channels by status. Both hub stores satisfy it.
type ChannelLister interface {
	Channels(ctx context.Context, statuses ...hub.ChannelStatus) ([]hub.ChannelRecord, error)
}

// BlockCounter gives the chain's height. *btcdchain.Client satisfies it.
type BlockCounter interface {
	BlockCount(ctx context.Context) (int32, error)
}

// IntakeStats gives the metering intake's counters. *natsintake.Intake
// satisfies it.
type IntakeStats interface {
	Stats() natsintake.Stats
}

// RunLister lists settlement runs, newest first. Both hub stores and
// *settler.Service's store satisfy it.
type RunLister interface {
	Runs(ctx context.Context, limit int) ([]settlement.Run, error)
}

// HealthCheck is one dependency probe, the same shape as
// httpapi.HealthCheck so hubd converts its /healthz list with a plain
// conversion.
type HealthCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config configures New. Every source is optional: a nil one leaves its
// gauges out of the scrape.
type Config struct {
	Sessions SessionCounter
	Exposure ExposureReader
	Channels ChannelLister
	Chain    BlockCounter
	Intake   IntakeStats
	// IntakeLag returns how many usage messages wait for the intake's
	// consumer (JetStreamLag builds one).
	IntakeLag func(ctx context.Context) (uint64, error)
	Runs      RunLister
	// Leader reads the settlement lease for the settle_leader gauges;
	// optional (without it they are not exported).
	Leader func(ctx context.Context) (LeaderView, error)
	// Health are the /healthz checks, exported as dependency_up.
	Health []HealthCheck

	// ExpiryWindow is the near-expiry distance in blocks.
	ExpiryWindow uint32
	// ScrapeTimeout bounds the reads of one scrape.
	ScrapeTimeout time.Duration
	// Logger receives read failures during scrapes; nil discards them.
	Logger *slog.Logger
	// Counters are the counters the parts above were built with (they
	// feed them as they work, so they exist before the parts and before
	// New); nil makes new ones.
	Counters *Counters
}

// Counters are the hub's counters, fed by the parts as they work. hubd
// builds them first and hands them to the parts, then builds the Metrics
// from them and the finished parts, so no gauge source is bound late. It
// implements channels.PayObserver and charging.Observer; its methods are
// safe for concurrent use.
type Counters struct {
	payments      prometheus.Counter
	paidMsat      prometheus.Counter
	refused       *prometheus.CounterVec
	payDuration   prometheus.Histogram
	eventsCharged *prometheus.CounterVec
	chargedMsat   *prometheus.CounterVec
	duplicates    prometheus.Counter
	rejected      *prometheus.CounterVec
	unpaid        *prometheus.CounterVec
	chargeWait    *prometheus.HistogramVec
}

// Metrics holds the hub's metrics and serves them. Through its Counters
// it implements channels.PayObserver and charging.Observer; its methods
// are safe for concurrent use.
type Metrics struct {
	*Counters
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	scrapeFailures *prometheus.CounterVec
}

var (
	_ channels.PayObserver = (*Counters)(nil)
	_ charging.Observer    = (*Counters)(nil)
	_ channels.PayObserver = (*Metrics)(nil)
	_ charging.Observer    = (*Metrics)(nil)
)

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

// NewCounters builds the hub's counters, every series whose labels are
// known in advance at 0. They count only once New registers them.
func NewCounters() *Counters {
	m := &Counters{}
	m.payments = counter("payments_total", "Payments accepted: durable and acknowledged.")
	m.paidMsat = counter("payments_msat_total", "Millisatoshis moved by accepted payments.")
	m.refused = counterVec("payments_refused_total", "Payments refused, by wire error code.", "code")
	m.payDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "payment_duration_seconds",
		Help: "Time the hub took to check, store and acknowledge an accepted payment.",
		// From the 100 µs signature check to the 25 ms p99 target and
		// past it, for fsync stalls.
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	m.eventsCharged = counterVec("events_charged_total", "Usage events charged, by contract kind and charge status.", "kind", "status")
	m.chargedMsat = counterVec("charged_msat_total", "Millisatoshis charged for usage events, by contract kind.", "kind")
	m.duplicates = counter("events_duplicate_total", "Usage events charged before (exactly-once dedup).")
	m.rejected = counterVec("events_rejected_total", "Usage events refused by charging, by reason.", "reason")
	m.unpaid = counterVec("events_unpaid_total", "Usage events reported unpaid to their provider (enforcement), by reason.", "reason")
	m.chargeWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "charge_wait_seconds",
		Help: "Time a group of owed charges paid by one request waited, by step: owed to requested (request), requested to paid (answer), paid to receipt published (receipt).",
		// From a flush interval to the request timeout.
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30},
	}, []string{"stage"})
	m.zeroLabels()
	return m
}

// New builds the metrics and their registry, with the Go runtime and
// process collectors beside the hub's own.
func New(cfg Config) (*Metrics, error) {
	if cfg.ExpiryWindow == 0 {
		cfg.ExpiryWindow = DefaultExpiryWindow
	}
	if cfg.ScrapeTimeout <= 0 {
		cfg.ScrapeTimeout = DefaultScrapeTimeout
	}
	for _, h := range cfg.Health {
		if h.Name == "" || h.Check == nil {
			return nil, errors.Join(ErrInvalid, errors.New("metrics: health check without name or func"))
		}
	}
	if cfg.Counters == nil {
		cfg.Counters = NewCounters()
	}
	m := &Metrics{Counters: cfg.Counters, cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry()}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.scrapeFailures = counterVec("scrape_read_failures_total", "Reads that failed while collecting gauges, by source.", "source")

	for _, c := range []prometheus.Collector{
		m.payments, m.paidMsat, m.refused, m.payDuration, m.eventsCharged, m.chargedMsat,
		m.duplicates, m.rejected, m.unpaid, m.chargeWait, m.scrapeFailures,
		newStateCollector(m),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	if cfg.Leader != nil {
		if err := m.reg.Register(newLeaderCollector(cfg.Leader)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// zeroLabels creates every counter series whose labels are known in
// advance at 0, so a rate() or a dashboard panel over them has data from
// the first scrape instead of from the first increment.
func (m *Counters) zeroLabels() {
	for _, code := range []wire.ChanCode{
		wire.ChanUnknownChannel, wire.ChanNotReady, wire.ChanFrozen, wire.ChanClosed, wire.ChanStaleState,
		wire.ChanSeqGap, wire.ChanBadAmount, wire.ChanOverCapacity, wire.ChanBadSignature, wire.ChanUnknownPayee,
		wire.ChanNotOwner, wire.ChanHoldExceeded, wire.ChanHoldExpired, wire.ChanHoldUnknown, wire.ChanCreditLimit,
		wire.ChanRateLimited, wire.ChanTooManyPending, wire.ChanBadParams, wire.ChanPolicyRefused, wire.ChanBusy,
		wire.ChanInternal,
	} {
		m.refused.WithLabelValues(string(code))
	}
	for _, kind := range []contracts.Kind{
		contracts.KindEVCharging, contracts.KindToll, contracts.KindBandwidth, contracts.KindEnergy, contracts.KindConditionalRelease,
	} {
		m.chargedMsat.WithLabelValues(string(kind))
		for _, st := range []hub.ChargeStatus{hub.ChargeOwed, hub.ChargePaid, hub.ChargeUnpaid, hub.ChargeHeld} {
			m.eventsCharged.WithLabelValues(string(kind), string(st))
		}
	}
	for _, r := range []string{
		charging.RejectUnknownContract, charging.RejectUnknownDevice, charging.RejectRevoked, charging.RejectFrozen, charging.RejectNotPayer,
		charging.RejectProvider, charging.RejectPrice, charging.RejectContractMismatch, charging.RejectSecurity, charging.RejectNoHold,
		charging.RejectIDConflict, charging.RejectMalformed,
	} {
		m.rejected.WithLabelValues(r)
	}
	for _, r := range []string{charging.UnpaidCreditLimit, charging.UnpaidNoChannel, charging.UnpaidPolicyRefused, charging.UnpaidFrozen, charging.UnpaidNoAnswer} {
		m.unpaid.WithLabelValues(r)
	}
	for _, stage := range []string{"request", "answer", "receipt"} {
		m.chargeWait.WithLabelValues(stage)
	}
}

// Registry is the registry the metrics live in, for tests and for an
// exporter that gathers it with others.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format (mount it at
// /metrics). A failed read during a scrape is logged and counted; the
// other metrics are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// PaymentAccepted counts an accepted payment and its latency.
func (m *Counters) PaymentAccepted(amount msat.Amount, d time.Duration) {
	m.payments.Inc()
	m.paidMsat.Add(float64(amount))
	m.payDuration.Observe(d.Seconds())
}

// PaymentRefused counts a refused payment by code.
func (m *Counters) PaymentRefused(code string) { m.refused.WithLabelValues(code).Inc() }

// EventCharged counts a charged event by contract kind and status. A held
// charge (the start of a conditional release) reserves its amount and
// charges nothing: what the job costs is charged by its end event, so
// counting the hold too would count the same money twice.
func (m *Counters) EventCharged(kind contracts.Kind, status hub.ChargeStatus, amount msat.Amount) {
	m.eventsCharged.WithLabelValues(string(kind), string(status)).Inc()
	if status != hub.ChargeHeld {
		m.chargedMsat.WithLabelValues(string(kind)).Add(float64(amount))
	}
}

// EventDuplicate counts an event charged before.
func (m *Counters) EventDuplicate() { m.duplicates.Inc() }

// EventRejected counts a rejected event by reason.
func (m *Counters) EventRejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// ReceiptPublished observes how long a group of charges waited at each
// step to its receipt.
func (m *Counters) ReceiptPublished(w charging.ChargeWaits) {
	m.chargeWait.WithLabelValues("request").Observe(w.Request.Seconds())
	m.chargeWait.WithLabelValues("answer").Observe(w.Answer.Seconds())
	m.chargeWait.WithLabelValues("receipt").Observe(w.Receipt.Seconds())
}

// EventsUnpaid counts events reported unpaid, by reason.
func (m *Counters) EventsUnpaid(reason string, n int) {
	m.unpaid.WithLabelValues(reason).Add(float64(n))
}
