package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
)

// /healthz answers with every dependency named, whatever hangs: a check
// that ignores its context (a stopped btcd behind a client without
// deadlines) and one that waits for its context are reported down at the
// deadline, and repeated probes of a hung check do not start one more run
// each.
func TestHealthAnswersWhateverHangs(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var stuckRuns atomic.Int32
	store, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{
		Registry: reg, Token: token,
		Info: testInfo,
		Health: []httpapi.HealthCheck{
			{Name: "store", Check: func(context.Context) error { return nil }},
			{Name: "nats", Check: func(context.Context) error { return errors.New("not connected") }},
			{Name: "btcd", Check: func(context.Context) error {
				stuckRuns.Add(1)
				<-release // ignores its context
				return nil
			}},
			{Name: "redis", Check: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, h))
	defer srv.Close()

	for probe := range 3 {
		done := make(chan struct{})
		var status int
		var got map[string]string
		go func() {
			defer close(done)
			resp, err := http.Get(srv.URL + "/healthz")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			status = resp.StatusCode
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Error(err)
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("probe %d: /healthz still unanswered after 10 s", probe)
		}
		if status != http.StatusServiceUnavailable {
			t.Fatalf("probe %d: status %d, want 503", probe, status)
		}
		want := map[string]string{"store": "ok", "nats": "down", "btcd": "down", "redis": "down"}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("probe %d: %v, want %v", probe, got, want)
			}
		}
	}
	if n := stuckRuns.Load(); n != 1 {
		t.Fatalf("the hung check was started %d times, want once", n)
	}
}
