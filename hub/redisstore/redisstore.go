// Package redisstore is the hub.Store and hub.ChannelStore on Redis, for
// several hubd instances sharing one registry and one set of channels. Every
// Apply, ApplyPayment and ApplyOwed runs as one Lua script, which Redis
// executes atomically, so the checks (audit link, token, key index, channel
// seq, hold, credit limit) and the writes cannot interleave with another
// hubd's. The channel keys are described in channels.go.
//
// Durability: the hub acknowledges an Apply only after Redis has answered
// it, and Redis answers a write before it reaches disk unless the server
// runs with the append-only file on and fsync on every write:
//
//	appendonly yes
//	appendfsync always
//
// The hub requires this configuration for acknowledged writes to survive a
// crash of the Redis host. New checks it with CONFIG GET and logs a warning
// when it is off or cannot be read (managed Redis services often forbid
// CONFIG); it does not refuse to start, because the operator may have
// arranged durability another way.
//
// Keys: everything lives under Config.Prefix: <prefix>devices (hash id ->
// device JSON), <prefix>keyindex (hash hex key -> id), <prefix>audit (list
// of entry JSON; entry n at index n-1), <prefix>head (hex hash of the newest
// entry) and <prefix>tokens (set of spent token ids). On Redis Cluster the
// prefix must contain a hash tag, e.g. "{m2mhub}:", so all keys share a slot
// as the script requires.
package redisstore

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
	"github.com/m2mhub/m2mhub/internal/redisconn"
)

// DefaultPrefix namespaces the store's keys when Config.Prefix is empty.
const DefaultPrefix = "m2mhub:"

// startupTimeout bounds the checks New makes against the server.
const startupTimeout = 5 * time.Second

//go:embed apply.lua
var applySource string

// Config configures a Store.
type Config struct {
	// URL locates the server, e.g. "redis://user:pass@host:6379/0"
	// (rediss:// for TLS).
	URL string
	// Prefix namespaces every key; empty means DefaultPrefix.
	Prefix string
	// Logger receives operational messages, including the durability
	// warning; nil discards them.
	Logger *slog.Logger
}

// Store is a hub.Store backed by Redis. It is safe for concurrent use, and
// several Stores (in several processes) may share one prefix.
type Store struct {
	rdb    *redis.Client
	log    *slog.Logger
	apply  *redis.Script
	chs    channelScripts
	prefix string

	kHead, kAudit, kTokens, kKeyIndex, kDevices string

	closeOnce sync.Once
	closeErr  error
}

var _ hub.Store = (*Store)(nil)

// New connects to cfg.URL, checks that the server answers and whether it
// persists writes durably (logging a warning if not), and returns the store.
func New(cfg Config) (*Store, error) {
	rdb, opts, err := redisconn.New("redisstore", cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := cfg.Prefix
	s := &Store{
		rdb:       rdb,
		log:       log,
		apply:     redis.NewScript(applySource),
		chs:       newChannelScripts(),
		prefix:    p,
		kHead:     p + "head",
		kAudit:    p + "audit",
		kTokens:   p + "tokens",
		kKeyIndex: p + "keyindex",
		kDevices:  p + "devices",
	}

	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	defer cancel()
	if err := s.Healthy(ctx); err != nil {
		s.rdb.Close()
		return nil, err
	}
	s.checkDurability(ctx)
	// Loading the scripts now turns the first EVALSHA of each into a hit.
	for _, sc := range append([]*redis.Script{s.apply}, s.chs.all()...) {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			s.rdb.Close()
			return nil, fmt.Errorf("redisstore: load script: %w", err)
		}
	}
	log.Info("registry store opened", "addr", opts.Addr, "db", opts.DB, "prefix", p)
	return s, nil
}

// checkDurability logs a warning unless the server runs with the AOF on
// and fsync on every write.
func (s *Store) checkDurability(ctx context.Context) {
	cfg, err := s.rdb.ConfigGet(ctx, "append*").Result()
	if err != nil {
		s.log.Warn("cannot read the Redis persistence settings; acknowledged registry writes survive a Redis crash only with appendonly yes and appendfsync always",
			"err", err)
		return
	}
	if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
		s.log.Warn("Redis is not configured for durable writes; acknowledged registry writes may be lost in a Redis crash (want appendonly yes, appendfsync always)",
			"appendonly", cfg["appendonly"], "appendfsync", cfg["appendfsync"])
	}
}

// Healthy reports whether the server answers and can persist: it fails
// when the server's last append-only-file write failed (a full disk), since
// Redis then refuses writes while still answering PING.
func (s *Store) Healthy(ctx context.Context) error {
	info, err := s.rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return fmt.Errorf("redisstore: info: %w", err)
	}
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && k == "aof_last_write_status" && v != "ok" {
			return fmt.Errorf("redisstore: the server's last append-only file write failed (%s)", v)
		}
	}
	return nil
}

// Close closes the connection pool. Calling it again returns the first
// call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.rdb.Close() })
	return s.closeErr
}

// Apply writes ch atomically with one script run. See hub.Store for the
// errors.
func (s *Store) Apply(ctx context.Context, ch hub.Change) error {
	if err := validate(ch); err != nil {
		return err
	}
	entry, err := json.Marshal(ch.Audit)
	if err != nil {
		return fmt.Errorf("redisstore: encode audit entry: %w", err)
	}
	args := []any{
		strconv.FormatUint(ch.Audit.Seq, 10),
		ch.Audit.Prev.String(),
		ch.Audit.Hash.String(),
		entry,
		ch.SpendToken,
		len(ch.Devices),
	}
	for _, d := range ch.Devices {
		doc, err := record.EncodeDevice(d)
		if err != nil {
			return fmt.Errorf("redisstore: %w", err)
		}
		args = append(args, d.ID, doc, 1+len(d.RetiredKeys), d.Key.String())
		for _, k := range d.RetiredKeys {
			args = append(args, k.String())
		}
	}
	args = append(args, len(ch.Remove))
	for _, id := range ch.Remove {
		args = append(args, id)
	}
	keys := []string{s.kHead, s.kAudit, s.kTokens, s.kKeyIndex, s.kDevices}
	res, err := s.apply.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("redisstore: apply audit %d: %w", ch.Audit.Seq, err)
	}
	if len(res) == 0 {
		return fmt.Errorf("redisstore: apply audit %d: empty script reply", ch.Audit.Seq)
	}
	switch res[0] {
	case "ok":
		return nil
	case "audit":
		return fmt.Errorf("redisstore: apply: %w: entry %d does not follow head %s", hub.ErrAuditConflict, ch.Audit.Seq, at(res, 1))
	case "token":
		return fmt.Errorf("redisstore: apply: %w: %s", hub.ErrTokenUsed, ch.SpendToken)
	case "exists":
		return fmt.Errorf("redisstore: apply: %w: key %s is indexed to device %s, not %s", hub.ErrAlreadyExists, at(res, 1), at(res, 2), at(res, 3))
	case "unreadable":
		return fmt.Errorf("redisstore: apply: %w: stored device %s", hub.ErrUnreadable, at(res, 1))
	}
	return fmt.Errorf("redisstore: apply audit %d: unexpected script reply %q", ch.Audit.Seq, res)
}

func at(ss []string, i int) string {
	if i < len(ss) {
		return ss[i]
	}
	return "?"
}

// Device returns the device with the given id, or hub.ErrNotFound.
func (s *Store) Device(ctx context.Context, id string) (hub.Device, error) {
	doc, err := s.rdb.HGet(ctx, s.kDevices, id).Bytes()
	if errors.Is(err, redis.Nil) {
		return hub.Device{}, fmt.Errorf("%w: device %s", hub.ErrNotFound, id)
	}
	if err != nil {
		return hub.Device{}, fmt.Errorf("redisstore: device %s: %w", id, err)
	}
	return decodeDevice(id, doc)
}

// DeviceByKey returns the device whose current or retired key is key, or
// hub.ErrNotFound.
func (s *Store) DeviceByKey(ctx context.Context, key hub.PubKey) (hub.Device, error) {
	id, err := s.rdb.HGet(ctx, s.kKeyIndex, key.String()).Result()
	if errors.Is(err, redis.Nil) {
		return hub.Device{}, fmt.Errorf("%w: key %s", hub.ErrNotFound, key)
	}
	if err != nil {
		return hub.Device{}, fmt.Errorf("redisstore: key index: %w", err)
	}
	// A removal deletes the record and its index entries in one script,
	// so the id the index names is there.
	return s.Device(ctx, id)
}

// Devices returns every device ordered by id.
func (s *Store) Devices(ctx context.Context) ([]hub.Device, error) {
	all, err := s.rdb.HGetAll(ctx, s.kDevices).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: devices: %w", err)
	}
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]hub.Device, 0, len(ids))
	for _, id := range ids {
		d, err := decodeDevice(id, []byte(all[id]))
		if err != nil {
			s.log.Error("device record left out of the list: remove it with hubctl device remove --force", "id", id, "err", err)
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// UnreadableDevices returns the device records that do not decode,
// ordered by id.
func (s *Store) UnreadableDevices(ctx context.Context) ([]hub.UnreadableRecord, error) {
	all, err := s.rdb.HGetAll(ctx, s.kDevices).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: devices: %w", err)
	}
	var out []hub.UnreadableRecord
	for id, doc := range all {
		if _, err := decodeDevice(id, []byte(doc)); err != nil {
			out = append(out, hub.UnreadableRecord{ID: id, Error: err.Error()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AuditHead returns the newest audit entry, or the zero entry when the log
// is empty.
func (s *Store) AuditHead(ctx context.Context) (hub.AuditEntry, error) {
	doc, err := s.rdb.LIndex(ctx, s.kAudit, -1).Bytes()
	if errors.Is(err, redis.Nil) {
		return hub.AuditEntry{}, nil
	}
	if err != nil {
		return hub.AuditEntry{}, fmt.Errorf("redisstore: audit head: %w", err)
	}
	var e hub.AuditEntry
	if err := json.Unmarshal(doc, &e); err != nil {
		return hub.AuditEntry{}, fmt.Errorf("redisstore: decode audit head: %w", err)
	}
	return e, nil
}

// AuditRange returns up to limit entries with Seq >= from, in order. A
// limit below one returns none.
func (s *Store) AuditRange(ctx context.Context, from uint64, limit int) ([]hub.AuditEntry, error) {
	if limit <= 0 || from > math.MaxInt64/2 {
		return nil, nil
	}
	if from == 0 {
		from = 1
	}
	// Entry n sits at list index n-1: the script appends exactly one entry
	// per accepted Seq, starting at 1.
	first := int64(from) - 1
	docs, err := s.rdb.LRange(ctx, s.kAudit, first, first+int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: audit range: %w", err)
	}
	out := make([]hub.AuditEntry, 0, len(docs))
	for _, doc := range docs {
		var e hub.AuditEntry
		if err := json.Unmarshal([]byte(doc), &e); err != nil {
			return nil, fmt.Errorf("redisstore: decode audit entry: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

func decodeDevice(id string, doc []byte) (hub.Device, error) {
	d, err := record.DecodeDevice(id, doc)
	if err != nil {
		return hub.Device{}, fmt.Errorf("redisstore: %w", err)
	}
	return d, nil
}

// validate refuses changes no store should write (hub.Change.Validate).
func validate(ch hub.Change) error {
	if err := ch.Validate(); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	return nil
}
