package redisshared

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

// SentWindow is how long the outbox remembers a delivered id, so that the
// same event queued again (by another instance, or a publish retried
// after the delivery) is not delivered twice.
const SentWindow = 24 * time.Hour

// Outbox is the webhook.Outbox on Redis that every hubd of a hub shares
// (see the package comment for its keys and leases).
type Outbox struct{ s *Store }

var _ webhook.Outbox = (*Outbox)(nil)

// Put implements webhook.Outbox.
func (o *Outbox) Put(ctx context.Context, es []webhook.Entry) error {
	if len(es) == 0 {
		return nil
	}
	now := time.Now()
	args := make([]any, 0, 2+3*len(es))
	args = append(args, ms(now), ms(now.Add(-SentWindow)))
	for _, e := range es {
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		args = append(args, e.ID, v, ms(e.NextAt))
	}
	s := o.s
	if err := s.put.Run(ctx, s.rdb, []string{s.kOutbox, s.kDue, s.kSent}, args...).Err(); err != nil {
		return fmt.Errorf("redisshared: outbox put: %w", err)
	}
	return nil
}

// Claim implements webhook.Outbox.
func (o *Outbox) Claim(ctx context.Context, now time.Time, lease time.Duration) (webhook.Claim, bool, time.Time, error) {
	var tok [12]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return webhook.Claim{}, false, time.Time{}, err
	}
	s := o.s
	token := hex.EncodeToString(tok[:])
	res, err := s.claim.Run(ctx, s.rdb, []string{s.kDue, s.kOutbox, s.kClaims}, ms(now), ms(now.Add(lease)), token).Slice()
	if err != nil {
		return webhook.Claim{}, false, time.Time{}, fmt.Errorf("redisshared: outbox claim: %w", err)
	}
	if len(res) < 2 {
		return webhook.Claim{}, false, time.Time{}, fmt.Errorf("redisshared: outbox claim: %d results", len(res))
	}
	if res[0] == nil {
		next, _ := res[1].(string)
		if next == "" {
			return webhook.Claim{}, false, time.Time{}, nil
		}
		n, err := strconv.ParseFloat(next, 64)
		if err != nil {
			return webhook.Claim{}, false, time.Time{}, fmt.Errorf("redisshared: outbox claim: due %q: %w", next, err)
		}
		return webhook.Claim{}, false, time.UnixMilli(int64(n)), nil
	}
	v, _ := res[1].(string)
	var e webhook.Entry
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return webhook.Claim{}, false, time.Time{}, fmt.Errorf("redisshared: outbox entry %v: %w", res[0], err)
	}
	stale, _ := res[2].(int64)
	e.MaybeSent = stale == 1
	return webhook.Claim{Entry: e, Token: token}, true, time.Time{}, nil
}

// Done implements webhook.Outbox.
func (o *Outbox) Done(ctx context.Context, c webhook.Claim) error {
	s := o.s
	if err := s.done.Run(ctx, s.rdb, []string{s.kOutbox, s.kDue, s.kClaims, s.kSent}, c.Entry.ID, ms(time.Now())).Err(); err != nil {
		return fmt.Errorf("redisshared: outbox done: %w", err)
	}
	return nil
}

// Retry implements webhook.Outbox.
func (o *Outbox) Retry(ctx context.Context, c webhook.Claim) error {
	v, err := json.Marshal(c.Entry)
	if err != nil {
		return err
	}
	s := o.s
	err = s.retry.Run(ctx, s.rdb, []string{s.kOutbox, s.kDue, s.kClaims}, c.Entry.ID, c.Token, v, ms(c.Entry.NextAt)).Err()
	if err != nil {
		return fmt.Errorf("redisshared: outbox retry: %w", err)
	}
	return nil
}

// Bury implements webhook.Outbox.
func (o *Outbox) Bury(ctx context.Context, c webhook.Claim) error {
	v, err := json.Marshal(c.Entry)
	if err != nil {
		return err
	}
	s := o.s
	err = s.bury.Run(ctx, s.rdb, []string{s.kOutbox, s.kDue, s.kClaims, s.kDead}, c.Entry.ID, c.Token, v).Err()
	if err != nil {
		return fmt.Errorf("redisshared: outbox bury: %w", err)
	}
	return nil
}

// List implements webhook.Outbox.
func (o *Outbox) List(ctx context.Context) (pending, dead []webhook.Entry, err error) {
	s := o.s
	for _, k := range []struct {
		key string
		out *[]webhook.Entry
	}{{s.kOutbox, &pending}, {s.kDead, &dead}} {
		m, err := s.rdb.HGetAll(ctx, k.key).Result()
		if err != nil {
			return nil, nil, fmt.Errorf("redisshared: outbox: %w", err)
		}
		for id, v := range m {
			var e webhook.Entry
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return nil, nil, fmt.Errorf("redisshared: outbox entry %s: %w", id, err)
			}
			*k.out = append(*k.out, e)
		}
	}
	return pending, dead, nil
}

// Redeliver implements webhook.Outbox.
func (o *Outbox) Redeliver(ctx context.Context, id string, now time.Time) (webhook.Entry, error) {
	s := o.s
	for range casRetries {
		old, err := s.rdb.HGet(ctx, s.kDead, id).Result()
		if errors.Is(err, redis.Nil) {
			return webhook.Entry{}, fmt.Errorf("webhook: redeliver: %w: no dead delivery %s", hub.ErrNotFound, id)
		}
		if err != nil {
			return webhook.Entry{}, fmt.Errorf("redisshared: redeliver: %w", err)
		}
		var e webhook.Entry
		if err := json.Unmarshal([]byte(old), &e); err != nil {
			return webhook.Entry{}, fmt.Errorf("redisshared: outbox entry %s: %w", id, err)
		}
		e.Attempts, e.LastErr, e.NextAt = 0, "", now
		v, err := json.Marshal(e)
		if err != nil {
			return webhook.Entry{}, err
		}
		n, err := s.redeliver.Run(ctx, s.rdb, []string{s.kDead, s.kOutbox, s.kDue, s.kClaims}, id, old, v, ms(now)).Int()
		if err != nil {
			return webhook.Entry{}, fmt.Errorf("redisshared: redeliver: %w", err)
		}
		if n == 1 {
			return e, nil
		}
	}
	return webhook.Entry{}, fmt.Errorf("redisshared: redeliver %s: %w", id, errRaced)
}

// Pending implements webhook.Outbox.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	n, err := o.s.rdb.HLen(ctx, o.s.kOutbox).Result()
	if err != nil {
		return 0, fmt.Errorf("redisshared: outbox: %w", err)
	}
	return int(n), nil
}

// Close implements webhook.Outbox; the Store owns the connection.
func (o *Outbox) Close() error { return nil }
