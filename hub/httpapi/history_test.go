package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/history"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/metrics"
)

// mustHistory returns a real history sampler with one sample of two
// payments and a dependency alert pending, so the route's every field is
// there for the spec check.
func mustHistory(t *testing.T) *metrics.Sampler {
	t.Helper()
	m, err := metrics.New(metrics.Config{Health: []metrics.HealthCheck{
		{Name: "btcd", Check: func(context.Context) error { return errors.New("down") }},
	}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := metrics.NewSampler(metrics.HistoryConfig{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	m.PaymentAccepted(1_500, time.Millisecond)
	m.PaymentAccepted(2_500, time.Millisecond)
	if err := s.Record(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHistoryRoute reads GET /v1/history with a read-only credential (the
// spec check of every answer runs in checkedHandler).
func TestHistoryRoute(t *testing.T) {
	a := newFullAPI(t)
	_, ro := a.addCred(t, httpapi.ScopeReadOnly)
	code, body := a.sendAs(t, ro, http.MethodGet, "/v1/history", "")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var v history.View
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Samples) != 1 || v.Samples[0].Payments != 2 || v.Samples[0].PaidMsat != 4_000 {
		t.Errorf("samples %+v", v.Samples)
	}
	if len(v.Alerts) != 1 || v.Alerts[0].Name != "BtcdDown" || v.Alerts[0].State != history.StatePending {
		t.Errorf("alerts %+v", v.Alerts)
	}
	if v.Capacity != metrics.DefaultHistoryCapacity || v.IntervalSeconds != metrics.DefaultHistoryInterval.Seconds() {
		t.Errorf("capacity %d interval %v", v.Capacity, v.IntervalSeconds)
	}
}
