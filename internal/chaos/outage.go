package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/m2mhub/m2mhub/internal/datadir"
)

// Outage is one scripted dependency outage under load: Target ("redis",
// "nats" or "btcd") is stopped with SIGSTOP (Pause) or killed with SIGKILL
// for Down. A killed btcd is hubd's child and hubd starts another by
// itself, so its outage lasts as long as that restart takes.
type Outage struct {
	Target string
	Pause  bool
	Down   time.Duration
}

func (o Outage) String() string {
	how := "killed -9"
	if o.Pause {
		how = "paused"
	}
	return fmt.Sprintf("%s %s for %v", o.Target, how, o.Down)
}

// Outages is the schedule of the hostile-world trial: NATS, Redis and
// btcd each paused for down, then killed -9 and kept down for down.
func Outages(down time.Duration) []Outage {
	var out []Outage
	for _, t := range []string{"nats", "redis", "btcd"} {
		out = append(out, Outage{Target: t, Pause: true, Down: down}, Outage{Target: t, Down: down})
	}
	return out
}

// healthName is the name /healthz gives each outage target.
var healthName = map[string]string{"nats": "nats", "redis": "store", "btcd": "btcd"}

// healthBound is how long /healthz may take to answer while a dependency
// is down: its checks are bounded (800 ms) and the answer within a second
// is the goal; the margin is for a loaded machine.
const healthBound = 2 * time.Second

// outages runs cfg.Outages in order, MinGap apart, while the load runs.
// During each it polls /healthz: the answer must come within healthBound,
// name the target down once it has been down for a second, and after the
// outage the same hubd process must report everything ok again.
func (r *run) outages(ctx context.Context) error {
	for i, o := range r.cfg.Outages {
		pause(ctx, r.cfg.MinGap)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.mu.Lock()
		r.res.Faults++
		r.res.FaultsByTarget[o.Target]++
		r.mu.Unlock()
		r.say("outage %d: %v", i+1, o)
		fmt.Fprintf(r.hubLog, "--- chaos: outage %d: %v at %s\n", i+1, o, time.Now().Format(time.RFC3339Nano))
		hubPid := r.proc.Pid()

		probeCtx, stopProbe := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var seenDown bool
		var slowest time.Duration
		start := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for probeCtx.Err() == nil {
				t0 := time.Now()
				body, err := r.health(probeCtx)
				took := time.Since(t0)
				if probeCtx.Err() != nil {
					return
				}
				slowest = max(slowest, took)
				if err == nil && body[healthName[o.Target]] == "down" {
					seenDown = true
				}
				pause(probeCtx, 250*time.Millisecond)
			}
		}()

		err := r.outage(ctx, o)
		stopProbe()
		wg.Wait()
		if err != nil {
			return err
		}
		// A btcd restart can be quick; only a longer outage must show.
		if !seenDown && (o.Target != "btcd" || o.Pause) && time.Since(start) > time.Second {
			r.problem("outage %d (%v): /healthz never named %s down", i+1, o, healthName[o.Target])
		}
		if slowest > healthBound {
			r.problem("outage %d (%v): /healthz took %v to answer", i+1, o, slowest.Round(time.Millisecond))
		}
		if err := r.waitHealthy(ctx, 2*time.Minute); err != nil {
			r.problem("outage %d (%v): %v", i+1, o, err)
		}
		if r.proc.Pid() != hubPid {
			r.problem("outage %d (%v): hubd was restarted", i+1, o)
		}
		select {
		case <-r.proc.Done():
			return fmt.Errorf("chaos: hubd exited during outage %d (%v); see %s", i+1, o, r.hubLog.Name())
		default:
		}
	}
	return nil
}

// outage takes o.Target down for o.Down and brings it back.
func (r *run) outage(ctx context.Context, o Outage) error {
	if o.Target == "btcd" && !o.Pause {
		return r.killBtcd(ctx)
	}
	var pid int
	switch o.Target {
	case "redis":
		pid = r.redis.pid
	case "nats":
		pid = r.nats.pid
	case "btcd":
		var ok bool
		if pid, ok = readPid(filepath.Join(r.hubDir.Path(datadir.BtcdDir), "btcd.pid")); !ok {
			return fmt.Errorf("chaos: no btcd pid")
		}
	default:
		return fmt.Errorf("chaos: unknown outage target %q", o.Target)
	}
	if o.Pause {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return fmt.Errorf("chaos: pause %s: %w", o.Target, err)
		}
		pause(ctx, o.Down)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			return fmt.Errorf("chaos: resume %s: %w", o.Target, err)
		}
		return ctx.Err()
	}
	c := r.redis
	if o.Target == "nats" {
		c = r.nats
	}
	c.kill()
	pause(ctx, o.Down)
	return c.start(ctx)
}

// health asks hubd's /healthz for its dependencies' states.
func (r *run) health(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.adminAddr+"/healthz", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// 200 or 503, a state per dependency either way.
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("chaos: /healthz: %w", err)
	}
	return body, nil
}

// waitHealthy waits until /healthz reports every dependency ok.
func (r *run) waitHealthy(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last map[string]string
	for time.Now().Before(deadline) {
		body, err := r.health(ctx)
		ok := err == nil && len(body) > 0
		for _, v := range body {
			ok = ok && v == "ok"
		}
		if ok {
			return nil
		}
		last = body
		pause(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("not healthy %v after the outage: %v", within, last)
}

// problem records an inconsistency that fails the run.
func (r *run) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Problems = append(r.res.Problems, fmt.Sprintf(format, args...))
}
