package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// CDR keys, under the prefix: cdrs (hash: id -> record JSON) and cdrord
// (sorted set of ids scored by the creation time in unix milliseconds).
// Storing one is putcontract.lua's write-once: the same script serves
// both, with other keys.

var _ hub.CDRStore = (*Store)(nil)

func (s *Store) cdrsKey() string     { return s.prefix + "cdrs" }
func (s *Store) cdrOrderKey() string { return s.prefix + "cdrord" }

// PutCDR stores r under its id; an id already there is left as it is.
func (s *Store) PutCDR(ctx context.Context, r hub.CDRRecord) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("redisstore: encode CDR %s: %w", r.ID, err)
	}
	err = putContractScript.Run(ctx, s.rdb, []string{s.cdrsKey(), s.cdrOrderKey()}, r.ID, doc, r.Created.UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("redisstore: put CDR %s: %w", r.ID, err)
	}
	return nil
}

// CDR returns the CDR with id, or hub.ErrNotFound.
func (s *Store) CDR(ctx context.Context, id string) (hub.CDRRecord, error) {
	doc, err := s.rdb.HGet(ctx, s.cdrsKey(), id).Bytes()
	if errors.Is(err, redis.Nil) {
		return hub.CDRRecord{}, fmt.Errorf("%w: CDR %q", hub.ErrNotFound, id)
	}
	if err != nil {
		return hub.CDRRecord{}, fmt.Errorf("redisstore: CDR %q: %w", id, err)
	}
	var r hub.CDRRecord
	if err := json.Unmarshal(doc, &r); err != nil {
		return r, fmt.Errorf("redisstore: decode CDR %q: %w", id, err)
	}
	return r, nil
}

// CDRs lists the CDRs of provider ("" for all), newest (to the
// millisecond) first; CDRs of the same millisecond come in descending id
// order.
func (s *Store) CDRs(ctx context.Context, provider string) ([]hub.CDRRecord, error) {
	ids, err := s.rdb.ZRevRange(ctx, s.cdrOrderKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: CDRs: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	docs, err := s.rdb.HMGet(ctx, s.cdrsKey(), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: CDRs: %w", err)
	}
	var out []hub.CDRRecord
	for i, d := range docs {
		doc, ok := d.(string)
		if !ok {
			return nil, fmt.Errorf("redisstore: CDR %q is indexed but missing", ids[i])
		}
		var r hub.CDRRecord
		if err := json.Unmarshal([]byte(doc), &r); err != nil {
			return nil, fmt.Errorf("redisstore: decode CDR %q: %w", ids[i], err)
		}
		if provider == "" || r.Provider == provider {
			out = append(out, r)
		}
	}
	return out, nil
}
