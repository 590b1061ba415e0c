package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// The settlement lease: <prefix>settle:lease holds '<token>|<instance>'
// and expires (PX) unless renewed; <prefix>settle:token counts
// acquisitions, so every acquisition issues a larger fencing token. Every
// settlement write script starts with fence.lua, which refuses a fenced
// write unless the lease is live and holds the writer's token.

var (
	//go:embed fence.lua
	fenceSource string
	//go:embed putrun.lua
	putRunSource string
	//go:embed leaseacquire.lua
	leaseAcquireSource string
	//go:embed leaserenew.lua
	leaseRenewSource string
)

var (
	putRunScript       = redis.NewScript(fenceSource + putRunSource)
	leaseAcquireScript = redis.NewScript(leaseAcquireSource)
	leaseRenewScript   = redis.NewScript(leaseRenewSource)
)

var _ hub.LeaderLease = (*Store)(nil)

func (s *Store) leaseKey() string      { return s.prefix + "settle:lease" }
func (s *Store) leaseTokenKey() string { return s.prefix + "settle:token" }

func leaseValue(l hub.Leader) string {
	return strconv.FormatUint(l.Token, 10) + "|" + l.Instance
}

func parseLease(v string) (uint64, string, error) {
	tok, inst, ok := strings.Cut(v, "|")
	if !ok {
		return 0, "", fmt.Errorf("redisstore: malformed settlement lease %q", v)
	}
	t, err := strconv.ParseUint(tok, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("redisstore: settlement lease token %q: %w", tok, err)
	}
	return t, inst, nil
}

func checkLease(instance string, ttl time.Duration) error {
	switch {
	case instance == "" || strings.Contains(instance, "|"):
		return fmt.Errorf("redisstore: %w: lease instance %q (non-empty, no '|')", hub.ErrInvalid, instance)
	case ttl < time.Millisecond:
		return fmt.Errorf("redisstore: %w: lease ttl %s below 1ms", hub.ErrInvalid, ttl)
	}
	return nil
}

// Acquire takes the settlement lease; see hub.LeaderLease. The expiry is
// reckoned from before the request, so the holder's view never outlives
// Redis's.
func (s *Store) Acquire(ctx context.Context, instance string, ttl time.Duration) (hub.Leader, error) {
	if err := checkLease(instance, ttl); err != nil {
		return hub.Leader{}, err
	}
	start := time.Now()
	res, err := scriptReply(ctx, s.rdb, leaseAcquireScript, []string{s.leaseKey(), s.leaseTokenKey()},
		instance, ttl.Milliseconds())
	if err != nil {
		return hub.Leader{}, fmt.Errorf("redisstore: acquire settlement lease: %w", err)
	}
	switch {
	case res[0] == "ok" && len(res) == 3:
		tok, err := strconv.ParseUint(res[1], 10, 64)
		if err != nil {
			return hub.Leader{}, fmt.Errorf("redisstore: acquire settlement lease: token %q: %w", res[1], err)
		}
		return hub.Leader{Instance: instance, Token: tok, Expires: start.Add(ttl)}, nil
	case res[0] == "held" && len(res) == 4:
		tok, _ := strconv.ParseUint(res[1], 10, 64)
		ms, _ := strconv.ParseInt(res[3], 10, 64)
		l := hub.Leader{Instance: res[2], Token: tok, Expires: start.Add(time.Duration(ms) * time.Millisecond)}
		return l, fmt.Errorf("redisstore: acquire settlement lease: %w: %s leads with token %d", hub.ErrNotLeader, l.Instance, l.Token)
	}
	return hub.Leader{}, fmt.Errorf("redisstore: acquire settlement lease: unexpected script reply %q", res)
}

// Renew extends l by ttl if it still holds the lease; see hub.LeaderLease.
func (s *Store) Renew(ctx context.Context, l hub.Leader, ttl time.Duration) (hub.Leader, error) {
	if err := checkLease(l.Instance, ttl); err != nil {
		return hub.Leader{}, err
	}
	start := time.Now()
	res, err := scriptReply(ctx, s.rdb, leaseRenewScript, []string{s.leaseKey()}, leaseValue(l), ttl.Milliseconds())
	if err != nil {
		return hub.Leader{}, fmt.Errorf("redisstore: renew settlement lease: %w", err)
	}
	if res[0] != "ok" {
		return hub.Leader{}, fmt.Errorf("redisstore: renew settlement lease of %s token %d: %w: lease is now %q", l.Instance, l.Token, hub.ErrNotLeader, at(res, 1))
	}
	l.Expires = start.Add(ttl)
	return l, nil
}

// Release deletes the lease if l still holds it.
func (s *Store) Release(ctx context.Context, l hub.Leader) error {
	if _, err := scriptReply(ctx, s.rdb, leaseRenewScript, []string{s.leaseKey()}, leaseValue(l), ""); err != nil {
		return fmt.Errorf("redisstore: release settlement lease: %w", err)
	}
	return nil
}

// Leader returns the live settlement lease, or hub.ErrNotFound.
func (s *Store) Leader(ctx context.Context) (hub.Leader, error) {
	start := time.Now()
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, s.leaseKey())
		pttl = p.PTTL(ctx, s.leaseKey())
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return hub.Leader{}, fmt.Errorf("%w: no settlement leader", hub.ErrNotFound)
	}
	if err != nil {
		return hub.Leader{}, fmt.Errorf("redisstore: settlement lease: %w", err)
	}
	tok, inst, err := parseLease(get.Val())
	if err != nil {
		return hub.Leader{}, err
	}
	return hub.Leader{Instance: inst, Token: tok, Expires: start.Add(pttl.Val())}, nil
}
