package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// HealthTimeout bounds GET /healthz: every check runs at the same time, and
// one that has not answered by then is reported down, so a probe is
// answered within about this long whatever hangs behind it.
const HealthTimeout = 800 * time.Millisecond

// ErrCheckTimeout means a dependency did not answer its health check in
// time (stopped, overloaded, or partitioned away).
var ErrCheckTimeout = errors.New("httpapi: health check timed out")

// BoundChecks returns checks that each answer within timeout whatever the
// dependency does, for /healthz and anything else that probes (metrics):
// each check gets a context with that deadline, and while one run is under
// way, other callers wait for that run instead of starting another, so a
// dependency that ignores its context holds one goroutine, not one per
// probe.
func BoundChecks(checks []HealthCheck, timeout time.Duration) []HealthCheck {
	out := make([]HealthCheck, len(checks))
	for i, c := range checks {
		b := &boundCheck{check: c.Check, timeout: timeout}
		out[i] = HealthCheck{Name: c.Name, Check: b.run}
	}
	return out
}

// boundCheck is one check run at most once at a time.
type boundCheck struct {
	check   func(context.Context) error
	timeout time.Duration

	mu       sync.Mutex
	inflight chan struct{} // closed when the run under way ends
	err      error         // the last finished run's answer
}

func (b *boundCheck) run(ctx context.Context) error {
	b.mu.Lock()
	done := b.inflight
	if done == nil {
		done = make(chan struct{})
		b.inflight = done
		// Detached from ctx: later callers share this run, and it ends
		// at its own deadline, which a check that honours ctx keeps.
		go func() {
			cctx, cancel := context.WithTimeout(context.Background(), b.timeout)
			err := b.check(cctx)
			cancel()
			b.mu.Lock()
			b.err, b.inflight = err, nil
			b.mu.Unlock()
			close(done)
		}()
	}
	b.mu.Unlock()

	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case <-done:
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.err
	case <-t.C:
		return fmt.Errorf("%w after %v", ErrCheckTimeout, b.timeout)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrCheckTimeout, ctx.Err())
	}
}

// health answers without a credential so load balancers can probe it. It
// runs every check at once, each bounded by HealthTimeout, and names each
// dependency "ok" or "down" (503 if any is down), but not why: the reason
// is logged.
func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), HealthTimeout)
	defer cancel()
	errs := make([]error, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Go(func() { errs[i] = c.Check(ctx) })
	}
	wg.Wait()

	out := make(map[string]string, len(h.checks))
	status := http.StatusOK
	for i, c := range h.checks {
		if err := errs[i]; err != nil {
			h.log.Warn("dependency unhealthy", "dependency", c.Name, "err", err)
			out[c.Name] = "down"
			status = http.StatusServiceUnavailable
			continue
		}
		out[c.Name] = "ok"
	}
	writeJSON(w, status, out)
}
