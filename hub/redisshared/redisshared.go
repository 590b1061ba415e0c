// Package redisshared keeps on Redis what the hubd instances of one hub
// share besides the hub store (hub/redisstore): the admin API's scoped
// credentials (httpapi.CredStore), the webhook endpoints
// (webhook.EndpointStore) and the webhook delivery outbox
// (webhook.Outbox). It uses the same server and key prefix as the hub
// store, under keys of its own:
//
//	<prefix>creds          hash  credential id -> credential JSON (token SHA-256 only)
//	<prefix>credhash       hash  token SHA-256 -> credential id
//	<prefix>webhooks       hash  endpoint id -> endpoint JSON (with its secret)
//	<prefix>wh:outbox      hash  delivery id -> entry JSON (pending)
//	<prefix>wh:due         zset  delivery id, scored by due time (Unix ms)
//	<prefix>wh:claims      hash  delivery id -> claim token
//	<prefix>wh:dead        hash  delivery id -> entry JSON (out of attempts)
//	<prefix>wh:sent        zset  delivery id, scored by delivery time: made in the last SentWindow
//
// The outbox gives each delivery to one instance with a lease: Claim
// moves the earliest due entry's score to the end of its lease and
// records a fresh token, in one script, so two instances never claim the
// same entry at once; Retry and Bury only act for the current token; an
// instance that dies holding a claim leaves the entry due at the end of
// the lease, when any instance claims it again (marked as a redelivery).
// A Redis stream with a consumer group (XAUTOCLAIM of stale pending
// entries) gives the same exclusivity, but not what a webhook outbox
// also needs: a retry due in an hour with backoff, a lookup by delivery
// id to keep one delivery per event, and a list of pending and dead
// deliveries for hubctl. A sorted set by due time gives all three, and
// its lease is the same XAUTOCLAIM idle time, in one structure.
package redisshared

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/internal/redisconn"
)

// DefaultPrefix is the hub store's (redisstore.DefaultPrefix).
const DefaultPrefix = "m2mhub:"

// Config configures New.
type Config struct {
	// URL locates the server, as for redisstore.
	URL string
	// Prefix namespaces the keys; empty means DefaultPrefix. On Redis
	// Cluster it must hold a hash tag, as redisstore's does.
	Prefix string
	Logger *slog.Logger
}

// Store is the shared admin state on Redis. Its Outbox is a
// webhook.Outbox; Store itself is an httpapi.CredStore and a
// webhook.EndpointStore.
type Store struct {
	rdb *redis.Client
	log *slog.Logger

	kCreds, kCredHash, kWebhooks         string
	kOutbox, kDue, kClaims, kDead, kSent string
	addCred, casCred, claim, retry, bury *redis.Script
	put, done, redeliver                 *redis.Script
}

//go:embed claim.lua
var claimSource string

// New connects to cfg.URL and checks the server answers.
func New(ctx context.Context, cfg Config) (*Store, error) {
	rdb, opts, err := redisconn.New("redisshared", cfg.URL)
	if err != nil {
		return nil, err
	}
	p := cfg.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		rdb: rdb, log: log,
		kCreds: p + "creds", kCredHash: p + "credhash", kWebhooks: p + "webhooks",
		kOutbox: p + "wh:outbox", kDue: p + "wh:due", kClaims: p + "wh:claims", kDead: p + "wh:dead", kSent: p + "wh:sent",
		addCred:   redis.NewScript(addCredSource),
		casCred:   redis.NewScript(casSource),
		claim:     redis.NewScript(claimSource),
		retry:     redis.NewScript(retrySource),
		bury:      redis.NewScript(burySource),
		put:       redis.NewScript(putSource),
		done:      redis.NewScript(doneSource),
		redeliver: redis.NewScript(redeliverSource),
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		_ = s.rdb.Close()
		return nil, fmt.Errorf("redisshared: %s: %w", opts.Addr, err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Store) Close() error { return s.rdb.Close() }

// Healthy pings the server on the store's own connection, for /healthz:
// the shared state has its own pool, so its check is its own.
func (s *Store) Healthy(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisshared: ping: %w", err)
	}
	return nil
}

// Outbox returns the webhook outbox on this store; closing it is a no-op
// (Close closes the store).
func (s *Store) Outbox() *Outbox { return &Outbox{s: s} }

var errRaced = errors.New("redisshared: changed concurrently")

// casRetries bounds the read-compare-write loops.
const casRetries = 16

func ms(t time.Time) int64 { return t.UnixMilli() }
