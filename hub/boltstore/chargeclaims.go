package boltstore

import (
	"context"
	"fmt"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// Charge claims live in memory: one process has the file open, and a
// claim says which live process asks for a charge, so none outlives the
// process (the next one to open the file finds every owed charge free).

// claim is one charge's claim: its owner and when it expires (wall clock).
type claim struct {
	owner string
	until time.Time
}

// claimSweep is how many claims are kept at least before the expired
// ones are dropped; after a sweep the next comes at twice the claims
// left, so sweeping costs O(1) a claim however many are live.
const claimSweep = 4096

// ClaimCharges claims the charges under the store's claims lock.
func (s *Store) ClaimCharges(ctx context.Context, provider string, ids []string, owner string, ttl time.Duration) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if owner == "" || ttl <= 0 {
		return nil, fmt.Errorf("boltstore: %w: a charge claim needs an owner and a ttl", hub.ErrInvalid)
	}
	now := time.Now()
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	if s.claims == nil {
		s.claims = map[string]claim{}
	}
	if len(s.claims) >= max(claimSweep, s.claimsSweepAt) {
		for k, c := range s.claims {
			if !now.Before(c.until) {
				delete(s.claims, k)
			}
		}
		s.claimsSweepAt = 2 * len(s.claims)
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		k := provider + "\x00" + id
		if c, ok := s.claims[k]; ok && c.owner != owner && now.Before(c.until) {
			continue
		}
		s.claims[k] = claim{owner: owner, until: now.Add(ttl)}
		out[i] = true
	}
	return out, nil
}

// ReleaseCharges drops the owner's claims.
func (s *Store) ReleaseCharges(ctx context.Context, provider string, ids []string, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	for _, id := range ids {
		k := provider + "\x00" + id
		if c, ok := s.claims[k]; ok && c.owner == owner {
			delete(s.claims, k)
		}
	}
	return nil
}
