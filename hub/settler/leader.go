package settler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// DefaultLeaseTTL is how long the settlement lease lives unless renewed;
// it is renewed every third of that. A killed leader is replaced within
// about one TTL.
const DefaultLeaseTTL = 10 * time.Second

// Leadership is this instance's view of the settlement lease, for hubctl
// info and /metrics.
type Leadership struct {
	// Instance is this instance's id; Leading whether it holds the lease.
	Instance string `json:"instance"`
	Leading  bool   `json:"leading"`
	// Leader is the live lease (whoever holds it); zero when none.
	Leader hub.Leader `json:"leader"`
}

// held is a lease this instance holds, as of its last acquisition or
// renewal.
type held struct {
	l hub.Leader
}

// leased reports whether the service is elected (Config.Lease set);
// without a lease it always leads and writes unfenced.
func (s *Service) leased() bool { return s.cfg.Lease != nil }

// fenced returns ctx carrying this instance's fencing token, or an error
// wrapping hub.ErrNotLeader (naming the leader) when it does not hold a
// live lease. Every settlement write goes through it, so the store refuses
// a write made after the lease was lost, even one already under way.
func (s *Service) fenced(ctx context.Context) (context.Context, error) {
	if !s.leased() {
		return ctx, nil
	}
	h := s.lease.Load()
	if h == nil || !s.clock.Now().Before(h.l.Expires) {
		return nil, s.notLeader(ctx)
	}
	return hub.WithFence(ctx, h.l.Token), nil
}

func (s *Service) notLeader(ctx context.Context) error {
	l, err := s.cfg.Lease.Leader(ctx)
	if err != nil {
		return fmt.Errorf("%w: %s does not hold the settlement lease and no instance does (%w)", hub.ErrNotLeader, s.cfg.Instance, err)
	}
	return fmt.Errorf("%w: the settlement leader is %s (token %d, lease until %s)", hub.ErrNotLeader,
		l.Instance, l.Token, l.Expires.UTC().Format(time.RFC3339Nano))
}

// Leadership returns this instance's view of the lease.
func (s *Service) Leadership(ctx context.Context) (Leadership, error) {
	if !s.leased() {
		return Leadership{Instance: s.cfg.Instance, Leading: true}, nil
	}
	out := Leadership{Instance: s.cfg.Instance}
	if h := s.lease.Load(); h != nil && s.clock.Now().Before(h.l.Expires) {
		out.Leading, out.Leader = true, h.l
		return out, nil
	}
	l, err := s.cfg.Lease.Leader(ctx)
	switch {
	case errors.Is(err, hub.ErrNotFound):
		return out, nil
	case err != nil:
		return out, err
	}
	out.Leader = l
	return out, nil
}

// keepLease takes the lease when it is free and renews it while held,
// every third of the TTL; an acquisition wakes the loop so a new leader
// resumes the run at once.
func (s *Service) keepLease() {
	ttl := s.cfg.LeaseTTL
	t := s.clock.TickAfter(ttl / 3) // Start made the first step
	for {
		select {
		case <-s.ctx.Done():
			if h := s.lease.Swap(nil); h != nil {
				// Hand over at once on a clean stop. A run under
				// way has stopped (Close waits for it first).
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if err := s.cfg.Lease.Release(ctx, h.l); err != nil {
					s.log.Warn("settlement lease release", "err", err)
				}
				cancel()
			}
			return
		case <-t:
		}
		s.leaseStep(ttl)
		t = s.clock.TickAfter(ttl / 3)
	}
}

func (s *Service) leaseStep(ttl time.Duration) {
	ctx, cancel := context.WithTimeout(s.ctx, ttl/3)
	defer cancel()
	if h := s.lease.Load(); h != nil {
		l, err := s.cfg.Lease.Renew(ctx, h.l, ttl)
		if err == nil {
			s.lease.Store(&held{l: l})
			return
		}
		if !errors.Is(err, hub.ErrNotLeader) && s.clock.Now().Before(h.l.Expires) {
			// Redis unreachable: keep the lease until it expires
			// locally; the fencing check guards the store anyway.
			s.log.Warn("settlement lease renewal", "err", err)
			return
		}
		s.lease.Store(nil)
		s.log.Warn("settlement leadership lost", "instance", s.cfg.Instance, "token", h.l.Token, "err", err)
	}
	l, err := s.cfg.Lease.Acquire(ctx, s.cfg.Instance, ttl)
	if err != nil {
		if !errors.Is(err, hub.ErrNotLeader) && s.ctx.Err() == nil {
			s.log.Warn("settlement lease", "err", err)
		}
		return
	}
	s.lease.Store(&held{l: l})
	s.log.Info("settlement leadership acquired", "instance", s.cfg.Instance, "token", l.Token, "expires", l.Expires)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
