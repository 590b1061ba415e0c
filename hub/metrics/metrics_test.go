package metrics_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/goleak"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/metrics"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lazyHub reads the harness's current instances on every scrape: the
// metrics exist before the hub that feeds them, as in hubd.
type lazyHub struct{ h *hubtest.Hub }

func (l lazyHub) Sessions() int { return l.h.Server().Sessions() }
func (l lazyHub) Exposure(ctx context.Context) (channels.Exposure, error) {
	return l.h.Channels().Exposure(ctx)
}
func (l lazyHub) Channels(ctx context.Context, st ...hub.ChannelStatus) ([]hub.ChannelRecord, error) {
	return l.h.Store().Channels(ctx, st...)
}
func (l lazyHub) Runs(ctx context.Context, limit int) ([]settlement.Run, error) {
	return l.h.Store().Runs(ctx, limit)
}
func (l lazyHub) BlockCount(ctx context.Context) (int32, error) { return l.h.Chain().BlockCount(ctx) }

// scrape fetches /metrics and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	var p expfmt.TextParser
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// value returns the value of the sample of family name whose labels
// include want (pairs), summed over every match; histograms give their
// sample count.
func value(mf map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := mf[name]
	if f == nil {
		return 0
	}
	sum := 0.0
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// tollContract prices every passage of a car at 1000 msat.
const tollContract = `{"kind":"toll","version":1,"id":"metrics-toll","currency":"msat","fee":{"bps":"100"},` +
	`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000"}}}`

// TestMetricsMoveAfterPayment scrapes a real in-process hub (btcd regtest,
// bbolt, BOLT 8 sessions, embedded NATS with the intake) before and after
// payments and metered events: counters and the latency histogram move by
// exactly what happened, and the gauges read the hub's state.
func TestMetricsMoveAfterPayment(t *testing.T) {
	var l lazyHub
	var intake *natsintake.Intake
	lag := func(ctx context.Context) (uint64, error) { return 0, nil }
	m, err := metrics.New(metrics.Config{
		Sessions: &l, Exposure: &l, Channels: &l, Chain: &l, Runs: &l,
		ExpiryWindow: hubtest.DefaultExpiryDelta + 10, // the test channel counts as near expiry
		Health: []metrics.HealthCheck{
			{Name: "btcd", Check: func(ctx context.Context) error { _, err := l.BlockCount(ctx); return err }},
			{Name: "nats", Check: func(context.Context) error { return context.Canceled }}, // always down
		},
		Intake:    intakeRef{&intake},
		IntakeLag: func(ctx context.Context) (uint64, error) { return lag(ctx) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := hubtest.Start(t, hubtest.Config{Channels: func(c *channels.Config) { c.PayObserver = m }})
	l.h = h
	met := h.StartMetering(t, hubtest.MeteringConfig{Charging: func(c *charging.Config) { c.Observer = m }})
	intake = met.Intake
	lag = metrics.JetStreamLag(met.JS, metering.UsageStream, natsintake.DefaultConsumer)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	ctx := t.Context()

	prov := met.AddProvider(t)
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	d := h.NewDevice(t, h.Dial(t, devKey), devKey, m2mclient.DeviceConfig{})
	ch := h.OpenChannel(t, d, btcutil.Amount(100_000))
	h.WaitSession(t, devID)

	before := scrape(t, srv.URL)
	if got := value(before, "m2mhub_sessions"); got != 1 {
		t.Fatalf("sessions %v, want 1", got)
	}
	if got := value(before, "m2mhub_channels", "status", "ready"); got != 1 {
		t.Fatalf("ready channels %v, want 1", got)
	}
	if _, err := d.Pay(ctx, ch.ID, prov.ID, 1_500, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pay(ctx, ch.ID, prov.ID, 1_000, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pay(ctx, ch.ID, devID, 1_000, ""); err == nil { // a payer is no payee
		t.Fatal("paid a device that is not a provider")
	}

	mid := scrape(t, srv.URL)
	for _, c := range []struct {
		name  string
		delta float64
	}{
		{"m2mhub_payments_total", 2},
		{"m2mhub_payments_msat_total", 2_500},
		{"m2mhub_payment_duration_seconds", 2},
		{"m2mhub_payments_refused_total", 1},
	} {
		if got := value(mid, c.name) - value(before, c.name); got != c.delta {
			t.Errorf("%s moved by %v, want %v", c.name, got, c.delta)
		}
	}
	if bad := value(mid, "m2mhub_payments_refused_total", "code", "unknown-payee"); bad != 1 {
		t.Errorf("refused with unknown-payee: %v", bad)
	}

	// Three toll passages metered by the provider, charged to the payer.
	k := met.PublishContract(t, []byte(tollContract))
	hash := k.Hash()
	meter := met.NewMeter(t, prov, m2mclient.MeterConfig{})
	now := time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano)
	var evs []metering.Event
	for _, id := range []string{"p1", "p2", "p3"} {
		evs = append(evs, metering.Event{ID: id, Subject: devID, Time: now, Data: metering.Data{
			Contract: hex.EncodeToString(hash[:]), Quantity: "1", Unit: "passage", VehicleClass: "car",
		}})
	}
	if err := meter.Meter(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, 20*time.Second, "events charged", func() bool { return met.Intake.Stats().Charged >= 3 })
	// Two of them again in another message (past JetStream's dedup), one
	// naming an unknown contract, one for a payer without a channel.
	_, poorID := h.EnrolDevice(t, hub.RolePayer)
	bad, unpaid := evs[0], evs[0]
	bad.ID, bad.Data.Contract = "p4", strings.Repeat("ab", 32)
	unpaid.ID, unpaid.Subject = "p5", poorID
	if err := meter.Meter(ctx, evs[1], evs[2], bad, unpaid); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, 20*time.Second, "events handled", func() bool { return met.Intake.Stats().Events >= 7 })
	// A settlement run as the settlement service stores it.
	run := settlement.NewRun(settlement.Epoch{Number: 7}, 1, time.Now().UTC())
	run.State, run.Fee = settlement.RunBroadcast, 1_234
	if err := h.Store().PutRun(ctx, *run); err != nil {
		t.Fatal(err)
	}

	hubtest.WaitFor(t, 20*time.Second, "passages paid", func() bool {
		rec, err := h.Store().Channel(ctx, ch.ID)
		return err == nil && rec.Paid == 5_500
	})

	// The passages' receipt is published after their payment.
	var after map[string]*dto.MetricFamily
	hubtest.WaitFor(t, 20*time.Second, "receipt waits observed", func() bool {
		after = scrape(t, srv.URL)
		return value(after, "m2mhub_charge_wait_seconds", "stage", "receipt") > value(before, "m2mhub_charge_wait_seconds", "stage", "receipt")
	})
	for _, stage := range []string{"request", "answer"} {
		if got, want := value(after, "m2mhub_charge_wait_seconds", "stage", stage), value(after, "m2mhub_charge_wait_seconds", "stage", "receipt"); got != want || got < 1 {
			t.Errorf("%s waits observed %v times, receipts %v", stage, got, want)
		}
	}
	if got := value(after, "m2mhub_payments_total") - value(before, "m2mhub_payments_total"); got < 3 {
		t.Errorf("payments moved by %v, want at least 3", got)
	}
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"m2mhub_payments_msat_total", nil, 5_500}, // the passages too
		{"m2mhub_events_charged_total", []string{"kind", "toll"}, 4},
		{"m2mhub_charged_msat_total", []string{"kind", "toll"}, 4_000},
		{"m2mhub_events_charged_total", []string{"kind", "toll", "status", "unpaid"}, 1},
		{"m2mhub_events_duplicate_total", nil, 2},
		{"m2mhub_events_rejected_total", []string{"reason", charging.RejectUnknownContract}, 1},
		{"m2mhub_events_unpaid_total", []string{"reason", charging.UnpaidNoChannel}, 1},
		{"m2mhub_intake_charged_total", nil, 4},
		{"m2mhub_intake_duplicates_total", nil, 2},
	} {
		if got := value(after, c.name, c.labels...) - value(before, c.name, c.labels...); got != c.delta {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.delta)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"m2mhub_sessions", nil, 1},
		{"m2mhub_channels", []string{"status", "ready"}, 1},
		{"m2mhub_channels_near_expiry", nil, 1},
		{"m2mhub_exposure_credit_msat", nil, 500}, // 5,500 msat paid: 500 below a satoshi
		{"m2mhub_dependency_up", []string{"dependency", "btcd"}, 1},
		{"m2mhub_dependency_up", []string{"dependency", "nats"}, 0},
		{"m2mhub_settlement_last_epoch", nil, 7},
		{"m2mhub_settlement_last_run_fee_sat", nil, 1_234},
		{"m2mhub_settlement_last_run_state", []string{"state", "broadcast"}, 1},
		{"m2mhub_settlement_last_run_state", nil, 1}, // one state at a time
	} {
		if got := value(after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if value(after, "m2mhub_chain_height") < 432 { // regtest mined past taproot activation
		t.Errorf("chain height %v", value(after, "m2mhub_chain_height"))
	}
	if _, ok := after["m2mhub_intake_pending_messages"]; !ok {
		t.Error("no intake lag gauge")
	}
	checkDeployFiles(t, m, after)
}

// intakeRef reads the intake started after the metrics were built.
type intakeRef struct{ in **natsintake.Intake }

func (r intakeRef) Stats() natsintake.Stats {
	if *r.in == nil {
		return natsintake.Stats{}
	}
	return (*r.in).Stats()
}
