package redisstore

import (
	"context"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// chargeReqKey holds the event ids of one payment request of provider's
// charges, expiring with the record.
func (s *Store) chargeReqKey(provider string, root hub.Hash) string {
	return s.prefix + "chgr:" + provider + "\x00" + hex.EncodeToString(root[:])
}

//go:embed chargeask.lua
var chargeAskSource string

var chargeAskScript = redis.NewScript(chargeAskSource)

// AskCharges checks and names the claims and records the request in one
// script run (chargeask.lua): Redis runs it atomically, as it does the
// fenced payment that checks them.
func (s *Store) AskCharges(ctx context.Context, a hub.ChargeAsk) ([]hub.ClaimState, error) {
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	keys := make([]string, 0, 1+len(a.IDs))
	var doc []byte
	if a.Root != (hub.Hash{}) {
		if a.TTL < time.Millisecond {
			return nil, fmt.Errorf("redisstore: %w: a charge request needs a ttl of 1 ms or more", hub.ErrInvalid)
		}
		var err error
		if doc, err = json.Marshal(a.IDs); err != nil {
			return nil, fmt.Errorf("redisstore: encode charge request: %w", err)
		}
		keys = append(keys, s.chargeReqKey(a.Provider, a.Root))
	} else {
		keys = append(keys, s.chargeClaimKey(a.Provider, a.IDs[0]))
	}
	for _, id := range a.IDs {
		keys = append(keys, s.chargeClaimKey(a.Provider, id))
	}
	res, err := scriptReply(ctx, s.rdb, chargeAskScript, keys,
		a.Owner, a.Token, string(doc), strconv.FormatInt(a.TTL.Milliseconds(), 10))
	if err != nil {
		return nil, fmt.Errorf("redisstore: ask charges of %s: %w", a.Provider, err)
	}
	if len(res) != len(a.IDs) {
		return nil, fmt.Errorf("redisstore: ask charges of %s: script reply of %d for %d charges", a.Provider, len(res), len(a.IDs))
	}
	out := make([]hub.ClaimState, len(res))
	for i, r := range res {
		switch r {
		case "a":
			out[i] = hub.ClaimAsked
		case "p":
			out[i] = hub.ClaimPaid
		default:
			out[i] = hub.ClaimLost
		}
	}
	return out, nil
}

// ChargeRequests GETs each record in one pipeline.
func (s *Store) ChargeRequests(ctx context.Context, provider string, roots []hub.Hash) ([][]string, error) {
	return s.chargeRequests(ctx, provider, roots, "read", func(p redis.Pipeliner, k string) *redis.StringCmd { return p.Get(ctx, k) })
}

// TakeChargeRequests GETDELs each record in one pipeline: Redis runs each
// GETDEL atomically, so one caller gets a record; Redis expires them.
func (s *Store) TakeChargeRequests(ctx context.Context, provider string, roots []hub.Hash) ([][]string, error) {
	return s.chargeRequests(ctx, provider, roots, "take", func(p redis.Pipeliner, k string) *redis.StringCmd { return p.GetDel(ctx, k) })
}

// chargeRequests runs cmd on each root's record key in one pipeline and
// decodes the records; verb names the operation in errors.
func (s *Store) chargeRequests(ctx context.Context, provider string, roots []hub.Hash, verb string,
	cmd func(redis.Pipeliner, string) *redis.StringCmd) ([][]string, error) {
	cmds := make([]*redis.StringCmd, len(roots))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range roots {
			cmds[i] = cmd(p, s.chargeReqKey(provider, r))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: %s charge requests of %s: %w", verb, provider, err)
	}
	out := make([][]string, len(roots))
	for i, c := range cmds {
		doc, err := c.Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("redisstore: %s charge request of %s: %w", verb, provider, err)
		}
		if err := json.Unmarshal(doc, &out[i]); err != nil {
			return nil, fmt.Errorf("redisstore: decode charge request of %s: %w", provider, err)
		}
	}
	return out, nil
}
