package metrics_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/history"
	"github.com/m2mhub/m2mhub/hub/metrics"
)

type fixedDevices []hub.Device

func (ds fixedDevices) Devices(context.Context) ([]hub.Device, error) { return ds, nil }

type fixedSessions int

func (n fixedSessions) Sessions() int { return int(n) }

// windowIncomes answers every provider's income as 1 msat per second of
// the window asked for (the hub's fee a tenth of it), and keeps the
// windows, so a test can check that samples cover time without gaps.
type windowIncomes struct{ windows [][2]time.Time }

func (w *windowIncomes) Income(_ context.Context, provider string, from, to time.Time) (charging.Income, error) {
	w.windows = append(w.windows, [2]time.Time{from, to})
	s := msat.Amount(to.Sub(from) / time.Second)
	return charging.Income{Provider: provider, Earned: s, Fees: s / 10}, nil
}

// TestSampler drives the history sampler with a clock of its own: counts
// are per interval, income windows follow each other, the ring keeps its
// capacity, and a dependency that is down is pending, then firing after
// its rule's duration.
func TestSampler(t *testing.T) {
	storeDown := errors.New("store gone")
	m, err := metrics.New(metrics.Config{
		Sessions: fixedSessions(3),
		Health:   []metrics.HealthCheck{{Name: "store", Check: func(context.Context) error { return storeDown }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	start := now
	incomes := &windowIncomes{}
	s, err := metrics.NewSampler(metrics.HistoryConfig{
		Metrics: m, Capacity: 3, Now: func() time.Time { return now },
		Incomes: incomes,
		Devices: fixedDevices{{ID: "gantry", Roles: []hub.Role{hub.RoleProvider}}, {ID: "car", Roles: []hub.Role{hub.RolePayer}},
			{ID: "charger", Roles: []hub.Role{hub.RolePayer, hub.RoleProvider}}},
		Wallet: func(context.Context) (btcutil.Amount, error) { return 250_000, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	for range 4 {
		m.PaymentAccepted(1_000, 2*time.Millisecond)
	}
	m.PaymentRefused("stale_state")
	m.EventCharged(contracts.KindToll, hub.ChargePaid, 500)
	m.EventCharged(contracts.KindConditionalRelease, hub.ChargeHeld, 9_999) // a hold charges nothing
	now = now.Add(30 * time.Second)
	if err := s.Record(ctx); err != nil {
		t.Fatal(err)
	}
	v := s.View()
	if len(v.Samples) != 1 {
		t.Fatalf("%d samples", len(v.Samples))
	}
	got := v.Samples[0]
	if got.Payments != 4 || got.PaidMsat != 4_000 || got.Refused != 1 || got.ChargedMsat != 500 || got.Sessions != 3 ||
		got.IntervalSeconds != 30 || got.WalletSat == nil || *got.WalletSat != 250_000 {
		t.Errorf("first sample %+v", got)
	}
	if got.LatencyP50Seconds <= 0.001 || got.LatencyP50Seconds > 0.0025 || got.LatencyP99Seconds < got.LatencyP50Seconds || got.LatencyP99Seconds > 0.0025 {
		t.Errorf("latency p50 %v p99 %v, want both in the 1-2.5 ms bucket", got.LatencyP50Seconds, got.LatencyP99Seconds)
	}
	if got.Income["gantry"] != 30 || got.Income["charger"] != 30 || len(got.Income) != 2 || got.FeesMsat != 6 {
		t.Errorf("income %v fees %d", got.Income, got.FeesMsat)
	}
	if len(v.Alerts) != 1 || v.Alerts[0].Name != "StoreDown" || v.Alerts[0].State != history.StatePending || !v.Alerts[0].Since.Equal(now) {
		t.Fatalf("alerts after the first sample: %+v", v.Alerts)
	}
	downSince := now

	// Nothing new: the next interval counts nothing; StoreDown (1 m) fires.
	now = now.Add(time.Minute)
	if err := s.Record(ctx); err != nil {
		t.Fatal(err)
	}
	v = s.View()
	last := v.Samples[len(v.Samples)-1]
	if last.Payments != 0 || last.PaidMsat != 0 || last.ChargedMsat != 0 || last.LatencyP50Seconds != 0 || last.Income["gantry"] != 60 {
		t.Errorf("idle interval %+v", last)
	}
	if len(v.Alerts) != 1 || v.Alerts[0].State != history.StateFiring || !v.Alerts[0].Since.Equal(downSince) {
		t.Errorf("alerts after a minute down: %+v", v.Alerts)
	}

	// The ring keeps the newest three, oldest first.
	for range 3 {
		now = now.Add(30 * time.Second)
		if err := s.Record(ctx); err != nil {
			t.Fatal(err)
		}
	}
	v = s.View()
	if len(v.Samples) != 3 || v.Capacity != 3 || !v.Samples[2].Time.Equal(now) || !v.Samples[0].Time.Equal(now.Add(-time.Minute)) {
		t.Errorf("ring: capacity %d, %d samples, first %v last %v (now %v)", v.Capacity, len(v.Samples), v.Samples[0].Time, v.Samples[len(v.Samples)-1].Time, now)
	}
	// Income windows tile the time since the sampler started.
	at := start
	for i, w := range incomes.windows {
		if i%2 == 1 {
			continue // the second provider's copy of the same window
		}
		if !w[0].Equal(at) {
			t.Fatalf("window %d starts %v, want %v", i/2, w[0], at)
		}
		at = w[1]
	}
	if !at.Equal(now) {
		t.Errorf("windows end %v, want %v", at, now)
	}
}

// TestSamplerRefusesHalfIncome checks that providers and incomes come
// together.
func TestSamplerRefusesHalfIncome(t *testing.T) {
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = metrics.NewSampler(metrics.HistoryConfig{Metrics: m, Incomes: &windowIncomes{}})
	if !errors.Is(err, metrics.ErrInvalid) {
		t.Fatalf("err %v", err)
	}
	if _, err := metrics.NewSampler(metrics.HistoryConfig{}); !errors.Is(err, metrics.ErrInvalid) {
		t.Fatalf("without metrics: %v", err)
	}
}

// TestSamplerStartClose checks that the sampler's goroutine samples once
// per interval on its own and stops with Close (goleak in TestMain). The
// bubble's clock is fake: the test waits for the goroutine, not on time.
func TestSamplerStartClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := metrics.New(metrics.Config{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := metrics.NewSampler(metrics.HistoryConfig{Metrics: m, Interval: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		time.Sleep(95 * time.Second)
		synctest.Wait()
		if n := len(s.View().Samples); n != 3 {
			t.Errorf("%d samples after 95 s at 30 s, want 3", n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
