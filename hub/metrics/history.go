package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/msat"
	dto "github.com/prometheus/client_model/go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/history"
)

// Defaults for HistoryConfig: a sample every 30 s, kept for six hours.
const (
	DefaultHistoryInterval = 30 * time.Second
	DefaultHistoryCapacity = 720
	// MaxHistoryProviders bounds the providers whose income one sample
	// holds (the first by id), so a sample stays small whatever the
	// registry holds.
	MaxHistoryProviders = 32
)

// IncomeReader sums a provider's charges over a time range.
// *charging.Service satisfies it.
type IncomeReader interface {
	Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error)
}

// DeviceLister lists the registry's devices. *registry.Registry satisfies
// it.
type DeviceLister interface {
	Devices(ctx context.Context) ([]hub.Device, error)
}

// HistoryConfig configures NewSampler. Metrics is required; every other
// source is optional.
type HistoryConfig struct {
	Metrics *Metrics
	// Devices lists the devices, whose providers' income is sampled,
	// and Incomes reads it.
	Devices DeviceLister
	Incomes IncomeReader
	// Wallet reads the hub wallet's balance.
	Wallet func(ctx context.Context) (btcutil.Amount, error)

	Interval time.Duration
	Capacity int
	// Now is the clock samples are stamped with; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// Sampler takes a history sample every interval from the hub's own
// metrics (one in-process gather, as a Prometheus scrape would) and keeps
// it in a bounded ring, with the alert conditions that hold. Its methods
// are safe for concurrent use.
type Sampler struct {
	cfg  HistoryConfig
	log  *slog.Logger
	ring *history.Ring

	mu     sync.Mutex // serialises Record
	prev   totals
	since  map[string]time.Time // when each holding alert condition began
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// totals are the counters one sample reads, cumulative since hubd started.
type totals struct {
	time        time.Time
	payments    float64
	paidMsat    float64
	refused     float64
	chargedMsat float64
	latency     []*dto.Bucket
	intakeMsgs  float64
}

// NewSampler returns a sampler; Start runs it.
func NewSampler(cfg HistoryConfig) (*Sampler, error) {
	if cfg.Metrics == nil {
		return nil, fmt.Errorf("%w: history needs the metrics", ErrInvalid)
	}
	if (cfg.Devices == nil) != (cfg.Incomes == nil) {
		return nil, fmt.Errorf("%w: history needs both devices and incomes, or neither", ErrInvalid)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHistoryInterval
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultHistoryCapacity
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sampler{cfg: cfg, log: cfg.Logger, ring: history.NewRing(cfg.Capacity), since: map[string]time.Time{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// The first sample counts from now: the counters start at zero with
	// the process, and anything before the sampler is hubd's start-up.
	s.prev.time = cfg.Now()
	return s, nil
}

// Start takes a sample every interval until Close.
func (s *Sampler) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() {
		t := time.NewTicker(s.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.Record(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("history sample failed", "err", err)
				}
			}
		}
	})
}

// Close stops the sampler and waits for its goroutine.
func (s *Sampler) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	return nil
}

// View returns the kept samples, oldest first, and the alerts that held at
// the latest one.
func (s *Sampler) View() history.View {
	return history.View{
		IntervalSeconds: s.cfg.Interval.Seconds(), Capacity: s.ring.Capacity(),
		Samples: s.ring.Samples(), Alerts: s.ring.Alerts(),
	}
}

// Record takes one sample now. A source that fails leaves its figures
// out of the sample (logged); the counters are always recorded.
func (s *Sampler) Record(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	fams, err := s.cfg.Metrics.reg.Gather()
	if err != nil && len(fams) == 0 {
		return fmt.Errorf("metrics: history: gather: %w", err)
	}
	g := make(gathered, len(fams))
	for _, f := range fams {
		g[f.GetName()] = f
	}
	cur := totals{
		time:        now,
		payments:    g.sum("payments_total"),
		paidMsat:    g.sum("payments_msat_total"),
		refused:     g.sum("payments_refused_total"),
		chargedMsat: g.sum("charged_msat_total"),
		latency:     g.buckets("payment_duration_seconds"),
		intakeMsgs:  g.sum("intake_messages_total"),
	}
	prev := s.prev
	s.prev = cur

	smp := history.Sample{
		Time: now, IntervalSeconds: now.Sub(prev.time).Seconds(),
		Payments:    uint64(cur.payments - prev.payments),
		PaidMsat:    msat.Amount(cur.paidMsat - prev.paidMsat),
		Refused:     uint64(cur.refused - prev.refused),
		ChargedMsat: msat.Amount(cur.chargedMsat - prev.chargedMsat),
		Sessions:    int(g.sum("sessions")),
		Income:      map[string]msat.Amount{},
	}
	delta := bucketDelta(cur.latency, prev.latency)
	smp.LatencyP50Seconds = quantile(0.5, delta)
	smp.LatencyP99Seconds = quantile(0.99, delta)

	var errs []error
	if s.cfg.Incomes != nil {
		errs = append(errs, s.income(ctx, prev.time, now, &smp))
	}
	if s.cfg.Wallet != nil {
		if b, err := s.cfg.Wallet(ctx); err == nil {
			smp.WalletSat = &b
		} else {
			errs = append(errs, fmt.Errorf("wallet: %w", err))
		}
	}
	// IntakeLag's second clause (messages wait and none was handled)
	// looks over one interval.
	s.ring.Add(smp, s.alerts(evalAt{g: g, now: now, intakeStalled: cur.intakeMsgs == prev.intakeMsgs}))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("metrics: history: %w", err)
	}
	return nil
}

// income fills in each provider's income and the hub's fees over the
// charges recorded in [from, to).
func (s *Sampler) income(ctx context.Context, from, to time.Time, smp *history.Sample) error {
	ds, err := s.cfg.Devices.Devices(ctx)
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	var ids []string
	for _, d := range ds {
		if d.HasRole(hub.RoleProvider) {
			ids = append(ids, d.ID)
		}
	}
	slices.Sort(ids)
	if len(ids) > MaxHistoryProviders {
		ids = ids[:MaxHistoryProviders]
	}
	var errs []error
	for _, id := range ids {
		in, err := s.cfg.Incomes.Income(ctx, id, from, to)
		if err != nil {
			errs = append(errs, fmt.Errorf("income of %s: %w", id, err))
			continue
		}
		smp.Income[id] = in.Earned + in.Owed
		smp.FeesMsat += in.Fees
	}
	return errors.Join(errs...)
}

// gathered indexes one gather's families by name (without the namespace).
type gathered map[string]*dto.MetricFamily

func (g gathered) family(name string) *dto.MetricFamily {
	return g[Namespace+"_"+name]
}

// sum adds a counter's or gauge's series matching every label given as
// name, value pairs.
func (g gathered) sum(name string, labels ...string) float64 {
	f := g.family(name)
	if f == nil {
		return 0
	}
	var v float64
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		}
	}
	return v
}

// has reports whether a family has a series matching labels.
func (g gathered) has(name string, labels ...string) bool {
	f := g.family(name)
	if f == nil {
		return false
	}
	return slices.ContainsFunc(f.GetMetric(), func(m *dto.Metric) bool { return hasLabels(m, labels) })
}

func (g gathered) buckets(name string) []*dto.Bucket {
	f := g.family(name)
	if f == nil || len(f.GetMetric()) == 0 || f.GetMetric()[0].Histogram == nil {
		return nil
	}
	return f.GetMetric()[0].Histogram.GetBucket()
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// bucket is one cumulative histogram bucket's count over an interval.
type bucket struct {
	upper float64
	count float64
}

// bucketDelta is the interval's cumulative bucket counts: cur − prev.
func bucketDelta(cur, prev []*dto.Bucket) []bucket {
	out := make([]bucket, len(cur))
	for i, b := range cur {
		out[i] = bucket{upper: b.GetUpperBound(), count: float64(b.GetCumulativeCount())}
		if i < len(prev) {
			out[i].count -= float64(prev[i].GetCumulativeCount())
		}
	}
	return out
}

// quantile estimates the q-quantile from cumulative buckets by linear
// interpolation inside the bucket it falls in, as Prometheus's
// histogram_quantile does; observations past the last bound count at it.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 {
		return 0
	}
	total := bs[len(bs)-1].count
	// Observations above the highest bound are only in the histogram's
	// total count, which the buckets lack: they report at the last bound.
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank {
			if b.count == below {
				return b.upper
			}
			return lower + (b.upper-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.upper, b.count
	}
	return bs[len(bs)-1].upper
}

// rule is one of the hub's alert conditions, evaluated on each sample.
// Names, severities and durations are those of deploy/prometheus/alerts.yml
// (a test holds them equal); the hub cannot see its own absence, so
// HubdDown and HubdUnscraped stay Prometheus's.
type rule struct {
	name, severity, summary string
	hold                    time.Duration
	cond                    func(e evalAt) bool
}

// evalAt is what a rule sees: one gather, its time, and whether the
// intake handled no message since the previous sample.
type evalAt struct {
	g             gathered
	now           time.Time
	intakeStalled bool
}

// highExposureMsat is HighCreditExposure's threshold: 0.01 BTC.
const highExposureMsat = 1e9

func rules() []rule {
	down := func(dep string) func(evalAt) bool {
		return func(e evalAt) bool {
			return e.g.has("dependency_up", "dependency", dep) && e.g.sum("dependency_up", "dependency", dep) == 0
		}
	}
	return []rule{
		{"ChannelNearExpiryUnsettled", "critical", "channels near expiry are still open", time.Hour,
			func(e evalAt) bool { return e.g.sum("channels_near_expiry") > 0 }},
		{"BtcdDown", "critical", "hubd cannot reach btcd", 2 * time.Minute, down("btcd")},
		{"NATSDown", "critical", "hubd lost its NATS connection", 2 * time.Minute, down("nats")},
		{"StoreDown", "critical", "hubd's store does not answer", time.Minute, down("store")},
		{"IntakeLag", "warning", "metering intake is behind", 5 * time.Minute,
			func(e evalAt) bool {
				pending := e.g.sum("intake_pending_messages")
				return pending > 10000 || pending > 0 && e.intakeStalled
			}},
		{"SettlementStuck", "warning", "the latest settlement run has not moved for two hours", 10 * time.Minute,
			func(e evalAt) bool {
				open := 0.0
				for _, st := range []string{"planned", "signing", "signed", "broadcast"} {
					open += e.g.sum("settlement_last_run_state", "state", st)
				}
				updated := e.g.sum("settlement_last_run_updated_timestamp_seconds")
				return open > 0 && float64(e.now.Unix())-updated > 7200
			}},
		{"HighCreditExposure", "warning", "credit exposure is above 0.01 BTC", 10 * time.Minute,
			func(e evalAt) bool {
				return e.g.sum("exposure_owed_msat")+e.g.sum("exposure_credit_msat") > highExposureMsat
			}},
	}
}

// alerts evaluates the rules at e: a condition that holds is pending
// until it has held for its rule's duration, then firing.
func (s *Sampler) alerts(e evalAt) []history.Alert {
	now := e.now
	var out []history.Alert
	for _, r := range rules() {
		if !r.cond(e) {
			delete(s.since, r.name)
			continue
		}
		since, ok := s.since[r.name]
		if !ok {
			since = now
			s.since[r.name] = now
		}
		state := history.StatePending
		if now.Sub(since) >= r.hold {
			state = history.StateFiring
		}
		out = append(out, history.Alert{Name: r.name, Severity: r.severity, Summary: r.summary, State: state, Since: since})
	}
	return out
}
