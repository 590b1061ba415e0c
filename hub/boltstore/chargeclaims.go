package boltstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
)

// Charge claims live in memory: one process has the file open, and a
// claim says which live process asks for a charge, so none outlives the
// process (the next one to open the file finds every owed charge free).

// claim is one charge's claim: its owner, the token of the request that
// names it (AskCharges), the payment that paid that request (a call id
// of ApplyPayment, 0 while none has), and when it expires (wall clock).
type claim struct {
	owner  string
	token  string
	paidBy uint64
	until  time.Time
}

// payCalls numbers ApplyPayment's calls, so a fenced payment whose commit
// function runs again (commit.go) recognises its own paid mark.
var payCalls atomic.Uint64

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
		c, ok := s.claims[k]
		switch {
		case !ok || !now.Before(c.until):
			c = claim{owner: owner}
		case c.owner != owner:
			continue
		}
		// A renewal keeps the request the claim names.
		c.until = now.Add(ttl)
		s.claims[k] = c
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

// AskCharges checks and names the claims, and writes the record, inside
// one commit function: payments run in the same group commit, so a
// payment marked paid earlier in the queue is seen here, and one queued
// after finds the new token.
func (s *Store) AskCharges(ctx context.Context, a hub.ChargeAsk) ([]hub.ClaimState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	var rec *chargeReq
	if a.Root != (hub.Hash{}) {
		r, err := newChargeReq(a.Provider, a.Root, a.IDs, a.TTL)
		if err != nil {
			return nil, err
		}
		rec = &r
	}
	out := make([]hub.ClaimState, len(a.IDs))
	err := s.commit.do(func(tx *bolt.Tx) error {
		if !s.askClaims(a, out) || rec == nil {
			return nil
		}
		return rec.put(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: ask charges of %s: %w", a.Provider, err)
	}
	return out, nil
}

// askClaims fills out with each claim's state and, when all are
// hub.ClaimAsked, makes each name a.Token.
func (s *Store) askClaims(a hub.ChargeAsk, out []hub.ClaimState) bool {
	now := time.Now()
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	ok := true
	for i, id := range a.IDs {
		c, live := s.claims[a.Provider+"\x00"+id]
		switch {
		case !live || !now.Before(c.until) || c.owner != a.Owner:
			out[i], ok = hub.ClaimLost, false
		case c.paidBy != 0:
			out[i], ok = hub.ClaimPaid, false
		default:
			out[i] = hub.ClaimAsked
		}
	}
	if !ok {
		return false
	}
	for _, id := range a.IDs {
		k := a.Provider + "\x00" + id
		c := s.claims[k]
		c.token = a.Token
		s.claims[k] = c
	}
	return true
}

// payFenced checks that every claim of f names its request (or was marked
// paid by this same call, call, in an earlier run of its commit function)
// and marks them paid by call; it returns hub.ErrChargeFenced otherwise,
// changing nothing.
func (s *Store) payFenced(f *hub.ChargeFence, call uint64) error {
	now := time.Now()
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	for _, id := range f.IDs {
		c, live := s.claims[f.Provider+"\x00"+id]
		if !live || !now.Before(c.until) || c.owner != f.Owner || c.token != f.Token ||
			(c.paidBy != 0 && c.paidBy != call) {
			return fmt.Errorf("%w: %d charges of %s", hub.ErrChargeFenced, len(f.IDs), f.Provider)
		}
	}
	for _, id := range f.IDs {
		k := f.Provider + "\x00" + id
		c := s.claims[k]
		c.paidBy = call
		s.claims[k] = c
	}
	return nil
}

// unpayFenced undoes payFenced's marks of call, after its payment failed
// to commit.
func (s *Store) unpayFenced(f *hub.ChargeFence, call uint64) {
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	for _, id := range f.IDs {
		k := f.Provider + "\x00" + id
		if c, ok := s.claims[k]; ok && c.paidBy == call {
			c.paidBy = 0
			s.claims[k] = c
		}
	}
}
