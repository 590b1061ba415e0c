package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub/metrics"
)

// TestMetricsPprof: Go's profiler is on the metrics listener only with
// --metrics-pprof; without it the path is not found. With it the mutex
// profile is sampled (an unsampled one says "sampling period=0" and holds
// nothing).
func TestMetricsPprof(t *testing.T) {
	// The rates are the process's: put them back for the other tests.
	defer runtime.SetMutexProfileFraction(runtime.SetMutexProfileFraction(-1))
	defer runtime.SetBlockProfileRate(0)
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
		get := func(path string) (int, string) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				st.stopAll()
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(body)
		}
		code, body := get("/debug/pprof/goroutine?debug=1")
		_, mutex := get("/debug/pprof/mutex?debug=1")
		st.stopAll()
		switch {
		case on && (code != http.StatusOK || !strings.Contains(body, "goroutine profile")):
			t.Errorf("with --metrics-pprof: %d %.80q", code, body)
		case on && !strings.Contains(mutex, fmt.Sprintf("sampling period=%d\n", pprofMutexFraction)):
			t.Errorf("with --metrics-pprof the mutex profile is not sampled: %.120q", mutex)
		case !on && code != http.StatusNotFound:
			t.Errorf("without --metrics-pprof: %d, want 404", code)
		}
	}
	if cfg.MetricsPprof {
		t.Error("--metrics-pprof is on by default")
	}
}
