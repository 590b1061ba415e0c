package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub/metrics"
)

// TestMetricsPprof: Go's profiler is on the metrics listener only with
// --metrics-pprof; without it the path is not found.
func TestMetricsPprof(t *testing.T) {
	cfg, err := loadConfig([]string{"--datadir", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		st := &stack{log: slog.New(slog.DiscardHandler)}
		addr, err := serveMetrics("127.0.0.1:0", on, cfg.HTTP.limits(true), m, st)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			st.stopAll()
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		st.stopAll()
		switch {
		case on && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile")):
			t.Errorf("with --metrics-pprof: %s %.80q", resp.Status, body)
		case !on && resp.StatusCode != http.StatusNotFound:
			t.Errorf("without --metrics-pprof: %s, want 404", resp.Status)
		}
	}
	if cfg.MetricsPprof {
		t.Error("--metrics-pprof is on by default")
	}
}
