package redisshared

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub/webhook"
)

var _ webhook.EndpointStore = (*Store)(nil)

// Endpoints implements webhook.EndpointStore.
func (s *Store) Endpoints(ctx context.Context) ([]webhook.Endpoint, error) {
	m, err := s.rdb.HGetAll(ctx, s.kWebhooks).Result()
	if err != nil {
		return nil, fmt.Errorf("redisshared: webhook endpoints: %w", err)
	}
	out := make([]webhook.Endpoint, 0, len(m))
	for id, v := range m {
		var ep webhook.Endpoint
		if err := json.Unmarshal([]byte(v), &ep); err != nil {
			return nil, fmt.Errorf("redisshared: webhook endpoint %s: %w", id, err)
		}
		out = append(out, ep)
	}
	return out, nil
}

// Endpoint implements webhook.EndpointStore.
func (s *Store) Endpoint(ctx context.Context, id string) (webhook.Endpoint, bool, error) {
	v, err := s.rdb.HGet(ctx, s.kWebhooks, id).Result()
	if errors.Is(err, redis.Nil) {
		return webhook.Endpoint{}, false, nil
	}
	if err != nil {
		return webhook.Endpoint{}, false, fmt.Errorf("redisshared: webhook endpoint: %w", err)
	}
	var ep webhook.Endpoint
	if err := json.Unmarshal([]byte(v), &ep); err != nil {
		return webhook.Endpoint{}, false, fmt.Errorf("redisshared: webhook endpoint %s: %w", id, err)
	}
	return ep, true, nil
}

// PutEndpoint implements webhook.EndpointStore.
func (s *Store) PutEndpoint(ctx context.Context, ep webhook.Endpoint) error {
	v, err := json.Marshal(ep)
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.kWebhooks, ep.ID, v).Err(); err != nil {
		return fmt.Errorf("redisshared: webhook endpoint: %w", err)
	}
	return nil
}

// DeleteEndpoint implements webhook.EndpointStore.
func (s *Store) DeleteEndpoint(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.HDel(ctx, s.kWebhooks, id).Result()
	if err != nil {
		return false, fmt.Errorf("redisshared: webhook endpoint: %w", err)
	}
	return n == 1, nil
}
