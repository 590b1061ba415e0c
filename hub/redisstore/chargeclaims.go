package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

//go:embed chargeclaim.lua
var chargeClaimSource string

var chargeClaimScript = redis.NewScript(chargeClaimSource)

// chargeClaimKey holds the owner of the claim on one charge, expiring
// with the claim.
func (s *Store) chargeClaimKey(provider, eventID string) string {
	return s.prefix + "chgc:" + chargeID(provider, eventID)
}

// ClaimCharges claims the charges in one script run (SET … PX where the
// key is absent or the owner's): Redis runs it atomically and expires the
// claims.
func (s *Store) ClaimCharges(ctx context.Context, provider string, ids []string, owner string, ttl time.Duration) ([]bool, error) {
	if owner == "" || ttl < time.Millisecond {
		return nil, fmt.Errorf("redisstore: %w: a charge claim needs an owner and a ttl of 1 ms or more", hub.ErrInvalid)
	}
	out, err := s.claimScript(ctx, provider, ids, owner, strconv.FormatInt(ttl.Milliseconds(), 10))
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim charges of %s: %w", provider, err)
	}
	return out, nil
}

// ReleaseCharges deletes the owner's claims in one script run.
func (s *Store) ReleaseCharges(ctx context.Context, provider string, ids []string, owner string) error {
	if _, err := s.claimScript(ctx, provider, ids, owner, ""); err != nil {
		return fmt.Errorf("redisstore: release charges of %s: %w", provider, err)
	}
	return nil
}

func (s *Store) claimScript(ctx context.Context, provider string, ids []string, owner, ttl string) ([]bool, error) {
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.chargeClaimKey(provider, id)
	}
	res, err := scriptReply(ctx, s.rdb, chargeClaimScript, keys, owner, ttl)
	if err != nil {
		return nil, err
	}
	if len(res) != len(ids) {
		return nil, fmt.Errorf("script reply of %d for %d charges", len(res), len(ids))
	}
	for i, r := range res {
		out[i] = r == "1"
	}
	return out, nil
}
