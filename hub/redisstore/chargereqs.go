package redisstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// chargeReqKey holds the event ids of one payment request of provider's
// charges, expiring with the record.
func (s *Store) chargeReqKey(provider string, root hub.Hash) string {
	return s.prefix + "chgr:" + provider + "\x00" + hex.EncodeToString(root[:])
}

// PutChargeRequest records the event ids under (provider, root) for ttl
// (SET … PX).
func (s *Store) PutChargeRequest(ctx context.Context, provider string, root hub.Hash, ids []string, ttl time.Duration) error {
	doc, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("redisstore: encode charge request: %w", err)
	}
	if err := s.rdb.SetArgs(ctx, s.chargeReqKey(provider, root), doc, redis.SetArgs{TTL: ttl}).Err(); err != nil {
		return fmt.Errorf("redisstore: put charge request of %s: %w", provider, err)
	}
	return nil
}

// TakeChargeRequests GETDELs each record in one pipeline: Redis runs each
// GETDEL atomically, so one caller gets a record; Redis expires them.
func (s *Store) TakeChargeRequests(ctx context.Context, provider string, roots []hub.Hash) ([][]string, error) {
	cmds := make([]*redis.StringCmd, len(roots))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range roots {
			cmds[i] = p.GetDel(ctx, s.chargeReqKey(provider, r))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: take charge requests of %s: %w", provider, err)
	}
	out := make([][]string, len(roots))
	for i, c := range cmds {
		doc, err := c.Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("redisstore: take charge request of %s: %w", provider, err)
		}
		if err := json.Unmarshal(doc, &out[i]); err != nil {
			return nil, fmt.Errorf("redisstore: decode charge request of %s: %w", provider, err)
		}
	}
	return out, nil
}
