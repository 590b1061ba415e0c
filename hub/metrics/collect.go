package metrics

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// channelStatuses are the statuses the channels gauge reports, so a status
// with no channel shows as 0 rather than vanishing.
func channelStatuses() []hub.ChannelStatus {
	return []hub.ChannelStatus{
		hub.ChannelPending, hub.ChannelReady, hub.ChannelFrozen,
		hub.ChannelClosing, hub.ChannelClosed, hub.ChannelFailed,
	}
}

// runStates are the settlement run states the state gauge reports.
func runStates() []settlement.RunState {
	return []settlement.RunState{
		settlement.RunPlanned, settlement.RunSigning, settlement.RunSigned, settlement.RunBroadcast,
		settlement.RunConfirmed, settlement.RunFailed, settlement.RunReplaced,
	}
}

// stateCollector reads the hub's state on every scrape. Reading on scrape,
// rather than keeping gauges up to date from every code path, keeps the
// hub's hot paths free of metrics work and the figures exactly what the
// store says.
type stateCollector struct {
	m *Metrics

	sessions, channels, nearExpiry, height                  *prometheus.Desc
	owed, credit, reserved                                  *prometheus.Desc
	intakeCounters                                          map[string]*prometheus.Desc
	intakePending                                           *prometheus.Desc
	runEpoch, runState, runFee, runUpdated, runAttempt, dep *prometheus.Desc
}

func newStateCollector(m *Metrics) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	c := &stateCollector{
		m:          m,
		sessions:   d("sessions", "Live authenticated device sessions."),
		channels:   d("channels", "Channels by status.", "status"),
		nearExpiry: d("channels_near_expiry", "Open (ready or frozen) channels whose expiry is within the configured window of blocks."),
		height:     d("chain_height", "Height of the base chain's best block."),
		owed:       d("exposure_owed_msat", "Service given on credit, covered by no device signature, over open channels."),
		credit:     d("exposure_credit_msat", "Sub-satoshi credit of open channels: acknowledged, not claimable on chain."),
		reserved:   d("exposure_reserved_msat", "Capacity reserved by active holds."),
		intakeCounters: map[string]*prometheus.Desc{
			"messages":      d("intake_messages_total", "Usage messages the intake handled to the end."),
			"events":        d("intake_events_total", "Usage events in those messages."),
			"charged":       d("intake_charged_total", "Usage events the intake had charged."),
			"duplicates":    d("intake_duplicates_total", "Usage events charged before."),
			"dead_lettered": d("intake_dead_lettered_total", "Usage events or malformed messages dead-lettered."),
			"malformed":     d("intake_malformed_total", "Usage messages that did not parse."),
			"naks":          d("intake_naks_total", "Usage messages handed back for redelivery."),
			"charge_errors": d("intake_charge_errors_total", "Charge calls that failed (store outage)."),
		},
		intakePending: d("intake_pending_messages", "Usage messages waiting for the intake's consumer (lag)."),
		runEpoch:      d("settlement_last_epoch", "Epoch number of the latest settlement run."),
		runAttempt:    d("settlement_last_attempt", "Attempt number of the latest settlement run."),
		runState:      d("settlement_last_run_state", "1 for the state the latest settlement run is in, 0 for the others.", "state"),
		runFee:        d("settlement_last_run_fee_sat", "Mining fee of the latest settlement run's batch, in satoshis."),
		runUpdated:    d("settlement_last_run_updated_timestamp_seconds", "When the latest settlement run last changed state (Unix time)."),
		dep:           d("dependency_up", "1 when a dependency answers its health check, 0 when not.", "dependency"),
	}
	return c
}

// Describe sends every descriptor, whether its source is configured or not:
// the set of names is fixed, which the deploy files' test relies on.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.sessions, c.channels, c.nearExpiry, c.height, c.owed, c.credit, c.reserved,
		c.intakePending, c.runEpoch, c.runAttempt, c.runState, c.runFee, c.runUpdated, c.dep,
	} {
		ch <- d
	}
	for _, d := range c.intakeCounters {
		ch <- d
	}
}

// Collect reads every configured source under one timeout.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.m.cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ScrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	if cfg.Sessions != nil {
		gauge(c.sessions, float64(cfg.Sessions.Sessions()))
	}
	if cfg.Exposure != nil {
		if x, err := cfg.Exposure.Exposure(ctx); c.ok("exposure", err) {
			gauge(c.owed, float64(x.Owed))
			gauge(c.credit, float64(x.Credit))
			gauge(c.reserved, float64(x.Reserved))
		}
	}
	c.collectChannels(ctx, gauge)
	if cfg.Intake != nil {
		s := cfg.Intake.Stats()
		for name, v := range map[string]uint64{
			"messages": s.Messages, "events": s.Events, "charged": s.Charged, "duplicates": s.Duplicates,
			"dead_lettered": s.DeadLettered, "malformed": s.Malformed, "naks": s.Naks, "charge_errors": s.ChargeErrors,
		} {
			ch <- prometheus.MustNewConstMetric(c.intakeCounters[name], prometheus.CounterValue, float64(v))
		}
	}
	if cfg.IntakeLag != nil {
		if n, err := cfg.IntakeLag(ctx); c.ok("intake_lag", err) {
			gauge(c.intakePending, float64(n))
		}
	}
	if cfg.Runs != nil {
		runs, err := cfg.Runs.Runs(ctx, 1)
		if c.ok("settlement", err) && len(runs) > 0 {
			r := runs[0]
			gauge(c.runEpoch, float64(r.Epoch.Number))
			gauge(c.runAttempt, float64(r.Attempt))
			gauge(c.runFee, float64(r.Fee))
			gauge(c.runUpdated, float64(r.Updated.UnixNano())/1e9)
			for _, st := range runStates() {
				v := 0.0
				if r.State == st {
					v = 1
				}
				gauge(c.runState, v, string(st))
			}
		}
	}
	for _, h := range cfg.Health {
		v := 1.0
		if err := h.Check(ctx); err != nil {
			c.m.log.Warn("dependency unhealthy", "dependency", h.Name, "err", err)
			v = 0
		}
		gauge(c.dep, v, h.Name)
	}
}

// collectChannels reports channels by status and, with a chain, the open
// ones near expiry: one listing of the store serves both.
func (c *stateCollector) collectChannels(ctx context.Context, gauge func(*prometheus.Desc, float64, ...string)) {
	cfg := c.m.cfg
	if cfg.Channels == nil {
		return
	}
	statuses := channelStatuses()
	recs, err := cfg.Channels.Channels(ctx, statuses...)
	if !c.ok("channels", err) {
		return
	}
	count := make(map[hub.ChannelStatus]int, len(statuses))
	for _, r := range recs {
		count[r.Status]++
	}
	for _, st := range statuses {
		gauge(c.channels, float64(count[st]), string(st))
	}
	if cfg.Chain == nil {
		return
	}
	h, err := cfg.Chain.BlockCount(ctx)
	if !c.ok("chain", err) {
		return
	}
	gauge(c.height, float64(h))
	near := 0
	for _, r := range recs {
		open := r.Status == hub.ChannelReady || r.Status == hub.ChannelFrozen
		if open && int64(r.Expiry) <= int64(h)+int64(cfg.ExpiryWindow) {
			near++
		}
	}
	gauge(c.nearExpiry, float64(near))
}

// ok logs and counts a failed read; the scrape goes on without its gauges.
func (c *stateCollector) ok(source string, err error) bool {
	if err == nil {
		return true
	}
	c.m.log.Warn("metrics read failed", "source", source, "err", err)
	c.m.scrapeFailures.WithLabelValues(source).Inc()
	return false
}

// JetStreamLag returns an IntakeLag that asks JetStream how many messages
// of stream the durable consumer has not been delivered yet plus those
// delivered and not acknowledged: the intake's backlog.
func JetStreamLag(js jetstream.JetStream, stream, consumer string) func(ctx context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) {
		cons, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			return 0, fmt.Errorf("metrics: consumer %s/%s: %w", stream, consumer, err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("metrics: consumer %s/%s info: %w", stream, consumer, err)
		}
		return info.NumPending + uint64(info.NumAckPending), nil
	}
}
