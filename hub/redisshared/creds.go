package redisshared

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
)

var _ httpapi.CredStore = (*Store)(nil)

// Add implements httpapi.CredStore: the credential (its token's SHA-256,
// never the token) is stored with an index by hash, in one script.
func (s *Store) Add(ctx context.Context, c httpapi.Credential) error {
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	n, err := s.addCred.Run(ctx, s.rdb, []string{s.kCreds, s.kCredHash}, c.ID, c.Hash, v).Int()
	if err != nil {
		return fmt.Errorf("redisshared: add credential: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: credential %s", hub.ErrAlreadyExists, c.ID)
	}
	return nil
}

// ByHash implements httpapi.CredStore.
func (s *Store) ByHash(ctx context.Context, sum string) (httpapi.Credential, error) {
	id, err := s.rdb.HGet(ctx, s.kCredHash, sum).Result()
	if errors.Is(err, redis.Nil) {
		return httpapi.Credential{}, fmt.Errorf("%w: credential", hub.ErrNotFound)
	}
	if err != nil {
		return httpapi.Credential{}, fmt.Errorf("redisshared: credential: %w", err)
	}
	c, _, err := s.cred(ctx, id)
	return c, err
}

func (s *Store) cred(ctx context.Context, id string) (httpapi.Credential, string, error) {
	v, err := s.rdb.HGet(ctx, s.kCreds, id).Result()
	if errors.Is(err, redis.Nil) {
		return httpapi.Credential{}, "", fmt.Errorf("%w: credential %s", hub.ErrNotFound, id)
	}
	if err != nil {
		return httpapi.Credential{}, "", fmt.Errorf("redisshared: credential: %w", err)
	}
	var c httpapi.Credential
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return httpapi.Credential{}, "", fmt.Errorf("redisshared: credential %s: %w", id, err)
	}
	return c, v, nil
}

// List implements httpapi.CredStore: oldest first (ties by id).
func (s *Store) List(ctx context.Context) ([]httpapi.Credential, error) {
	m, err := s.rdb.HGetAll(ctx, s.kCreds).Result()
	if err != nil {
		return nil, fmt.Errorf("redisshared: credentials: %w", err)
	}
	out := make([]httpapi.Credential, 0, len(m))
	for id, v := range m {
		var c httpapi.Credential
		if err := json.Unmarshal([]byte(v), &c); err != nil {
			return nil, fmt.Errorf("redisshared: credential %s: %w", id, err)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Revoke implements httpapi.CredStore, as a compare-and-set of the
// credential's JSON so two instances revoking at once record one time.
func (s *Store) Revoke(ctx context.Context, id string, t time.Time) (httpapi.Credential, error) {
	for range casRetries {
		c, old, err := s.cred(ctx, id)
		if err != nil {
			return httpapi.Credential{}, err
		}
		if c.Revoked != nil {
			return c, fmt.Errorf("%w: credential %s", hub.ErrRevoked, id)
		}
		c.Revoked = &t
		v, err := json.Marshal(c)
		if err != nil {
			return httpapi.Credential{}, err
		}
		n, err := s.casCred.Run(ctx, s.rdb, []string{s.kCreds}, id, old, v).Int()
		if err != nil {
			return httpapi.Credential{}, fmt.Errorf("redisshared: revoke credential: %w", err)
		}
		if n == 1 {
			return c, nil
		}
	}
	return httpapi.Credential{}, fmt.Errorf("redisshared: revoke credential %s: %w", id, errRaced)
}
