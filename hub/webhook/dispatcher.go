package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lightningnetwork/lnd/clock"
	bolt "go.etcd.io/bbolt"
)

// Delivery headers; docs/webhooks.md specifies them. The first three are
// the Standard Webhooks ones (standardwebhooks.com), so its libraries
// verify a delivery; the last two are m2mhub's own.
const (
	HeaderID         = "webhook-id"
	HeaderTimestamp  = "webhook-timestamp"
	HeaderSignature  = "webhook-signature"
	HeaderEvent      = "M2M-Webhook-Event"
	HeaderRedelivery = "M2M-Webhook-Redelivery"
)

// SecretPrefix starts every signing secret; the rest is the HMAC key in
// standard base64.
const SecretPrefix = "whsec_"

// Event types.
const (
	EventReceipt    = "receipt"
	EventUnpaid     = "unpaid"
	EventSettlement = "settlement"
	// EventCDR carries the OCPI CDR of an EV session paid against its
	// hold (charging.ProviderMsgCDR).
	EventCDR = "cdr"
)

// Defaults for Config.
const (
	DefaultWorkers     = 4
	DefaultMaxAttempts = 12
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Hour
	DefaultTimeout     = 10 * time.Second
)

// ErrClosed is returned by Enqueue once Close has begun.
var ErrClosed = errors.New("webhook: dispatcher closed")

var (
	bucketOutbox = []byte("outbox")
	bucketDead   = []byte("dead")
)

// EndpointSource gives the endpoints to deliver to. *Endpoints satisfies
// it.
type EndpointSource interface {
	// For returns the endpoints of provider, every one for "".
	For(provider string) []Endpoint
	// Endpoint returns one endpoint, if it still exists.
	Endpoint(id string) (Endpoint, bool)
}

// Config configures New.
type Config struct {
	// OutboxPath is the bbolt file of pending deliveries (in the data
	// dir). Required.
	OutboxPath string
	// Endpoints resolves providers to endpoints. Required.
	Endpoints EndpointSource
	// Policy is the address policy of deliveries: the client dials only
	// the addresses it allows, checked after DNS resolution.
	Policy AddressPolicy
	// Workers is how many deliveries are in flight at once.
	Workers int
	// MaxAttempts bounds the attempts of one delivery; after the last
	// failure it moves to the outbox's dead bucket.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (full jitter over [d/2, d]).
	MinBackoff, MaxBackoff time.Duration
	// Clock schedules retries. Defaults to the wall clock.
	Clock  clock.Clock
	Logger *slog.Logger
}

// delivery is one event for one endpoint, as the outbox keeps it.
type delivery struct {
	ID       string          `json:"id"`
	Endpoint string          `json:"endpoint"`
	Event    string          `json:"event"`
	Body     json.RawMessage `json:"body"`
	Attempts int             `json:"attempts"`
	NextAt   time.Time       `json:"next_at"`
	LastErr  string          `json:"last_error,omitempty"`
	// maybeSent: loaded from disk at start, so an attempt may have
	// reached the receiver before the crash; sent as a redelivery.
	maybeSent bool
}

// Dispatcher delivers queued events. It owns a scheduler goroutine and
// Workers delivery goroutines, started by Start and stopped by Close.
type Dispatcher struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger
	clock  clock.Clock
	db     *bolt.DB

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	work   chan *delivery
	kick   chan struct{}

	mu       sync.Mutex
	pending  map[string]*delivery // in the outbox, not in flight
	inflight map[string]bool
	closed   bool

	startOnce, closeOnce sync.Once
}

// New opens the outbox and loads the deliveries a previous process left.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.OutboxPath == "" || cfg.Endpoints == nil {
		return nil, errors.New("webhook: outbox path and endpoints are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(cfg.OutboxPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("webhook: outbox %s: %w", cfg.OutboxPath, err)
	}
	d := &Dispatcher{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock, db: db, client: cfg.Policy.Client(DefaultTimeout),
		work: make(chan *delivery), kick: make(chan struct{}, 1),
		pending: map[string]*delivery{}, inflight: map[string]bool{},
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketDead); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketOutbox)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var dl delivery
			if err := json.Unmarshal(v, &dl); err != nil {
				return fmt.Errorf("delivery %s: %w", k, err)
			}
			dl.maybeSent = true
			d.pending[dl.ID] = &dl
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("webhook: outbox %s: %w", cfg.OutboxPath, err)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Start runs the scheduler and the workers.
func (d *Dispatcher) Start() {
	d.startOnce.Do(func() {
		d.wg.Add(1 + d.cfg.Workers)
		go func() {
			defer d.wg.Done()
			d.schedule()
		}()
		for range d.cfg.Workers {
			go func() {
				defer d.wg.Done()
				d.worker()
			}()
		}
	})
}

// Close stops the goroutines, waits for them (a POST in flight is
// cancelled and stays in the outbox) and closes the outbox.
func (d *Dispatcher) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.cancel()
		d.wg.Wait()
		err = d.db.Close()
	})
	return err
}

// Pending returns how many deliveries wait in the outbox, in flight
// included.
func (d *Dispatcher) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending) + len(d.inflight)
}

// DeliveryID is the id of event body for an endpoint: a hash, so the same
// event queued twice (a publish retried) is one delivery with one id, and
// stable across retries and restarts.
func DeliveryID(endpointID, event string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(endpointID + "\x00" + event + "\x00"))
	h.Write(body)
	return "whd_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Sign returns the Standard Webhooks signature header value of delivery
// id's body sent at timestamp ts (Unix seconds, as sent in
// HeaderTimestamp): "v1," + base64(HMAC-SHA256(key, id + "." + ts + "." +
// body)), where key is the base64 decoding of the secret after its
// "whsec_" prefix. It fails only for a secret that is not of that form.
func Sign(secret, id, ts string, body []byte) (string, error) {
	key, err := SecretKey(secret)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// SecretKey returns the HMAC key of a "whsec_" secret.
func SecretKey(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	key, err := base64.StdEncoding.DecodeString(rest)
	if !ok || err != nil || len(key) == 0 {
		return nil, fmt.Errorf("webhook: secret is not %s and a base64 key", SecretPrefix)
	}
	return key, nil
}

// Enqueue queues body (a JSON document) as event for every endpoint of
// provider ("" for all endpoints). The deliveries are durable when it
// returns nil.
func (d *Dispatcher) Enqueue(ctx context.Context, provider, event string, body []byte) error {
	if !json.Valid(body) {
		return fmt.Errorf("webhook: %s body is not JSON", event)
	}
	eps := d.cfg.Endpoints.For(provider)
	if len(eps) == 0 {
		return nil
	}
	now := d.clock.Now().UTC()
	dls := make([]*delivery, 0, len(eps))
	for _, ep := range eps {
		dls = append(dls, &delivery{
			ID: DeliveryID(ep.ID, event, body), Endpoint: ep.ID, Event: event, Body: body, NextAt: now,
		})
	}
	return d.put(dls...)
}

// put writes deliveries to the outbox (one already there is kept as is:
// one delivery per event) and schedules them.
func (d *Dispatcher) put(dls ...*delivery) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for _, dl := range dls {
			if b.Get([]byte(dl.ID)) != nil {
				continue // queued before: one delivery per event
			}
			v, err := json.Marshal(dl)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(dl.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("webhook: outbox: %w", err)
	}
	for _, dl := range dls {
		if _, ok := d.pending[dl.ID]; !ok && !d.inflight[dl.ID] {
			d.pending[dl.ID] = dl
		}
	}
	d.wake()
	return nil
}

func (d *Dispatcher) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// schedule hands due deliveries to the workers and sleeps until the next
// one is due or a new one arrives.
func (d *Dispatcher) schedule() {
	for {
		now := d.clock.Now()
		d.mu.Lock()
		var due *delivery
		var next time.Time
		for _, dl := range d.pending {
			if !dl.NextAt.After(now) {
				if due == nil || dl.NextAt.Before(due.NextAt) {
					due = dl
				}
			} else if next.IsZero() || dl.NextAt.Before(next) {
				next = dl.NextAt
			}
		}
		if due != nil {
			delete(d.pending, due.ID)
			d.inflight[due.ID] = true
		}
		d.mu.Unlock()

		if due != nil {
			select {
			case d.work <- due:
				continue
			case <-d.ctx.Done():
				return
			}
		}
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = d.clock.TickAfter(next.Sub(now))
		}
		select {
		case <-d.ctx.Done():
			return
		case <-d.kick:
		case <-timer:
		}
	}
}

func (d *Dispatcher) worker() {
	for {
		select {
		case <-d.ctx.Done():
			return
		case dl := <-d.work:
			d.finish(dl, d.send(dl))
		}
	}
}

// errGone marks a delivery whose endpoint was removed.
var errGone = errors.New("webhook: endpoint removed")

// send makes one attempt.
func (d *Dispatcher) send(dl *delivery) error {
	ep, ok := d.cfg.Endpoints.Endpoint(dl.Endpoint)
	if !ok {
		return errGone
	}
	ts := strconv.FormatInt(d.clock.Now().Unix(), 10)
	sig, err := Sign(ep.Secret, dl.ID, ts, dl.Body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(d.ctx, http.MethodPost, ep.URL, bytes.NewReader(dl.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "m2mhub-webhook/1")
	req.Header.Set(HeaderID, dl.ID)
	req.Header.Set(HeaderEvent, dl.Event)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderRedelivery, strconv.FormatBool(dl.Attempts > 0 || dl.maybeSent))
	req.Header.Set(HeaderSignature, sig)
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook: %s answered %s", ep.URL, resp.Status)
	}
	return nil
}

// finish records an attempt's outcome: delivered (or endpoint gone)
// deliveries leave the outbox, failed ones are rescheduled or, after the
// last attempt, moved to the dead bucket.
func (d *Dispatcher) finish(dl *delivery, sendErr error) {
	if sendErr != nil && d.ctx.Err() != nil {
		// Cancelled by Close: not an attempt; it stays in the outbox.
		return
	}
	key := []byte(dl.ID)
	dead := false
	if sendErr != nil && !errors.Is(sendErr, errGone) {
		dl.Attempts++
		dl.LastErr = sendErr.Error()
		dead = dl.Attempts >= d.cfg.MaxAttempts
		dl.NextAt = d.clock.Now().UTC().Add(d.backoff(dl.Attempts))
		d.log.Warn("webhook delivery failed", "id", dl.ID, "endpoint", dl.Endpoint, "attempt", dl.Attempts, "dead", dead, "err", sendErr)
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		if sendErr == nil || errors.Is(sendErr, errGone) {
			return b.Delete(key)
		}
		v, err := json.Marshal(dl)
		if err != nil {
			return err
		}
		if dead {
			if err := tx.Bucket(bucketDead).Put(key, v); err != nil {
				return err
			}
			return b.Delete(key)
		}
		return b.Put(key, v)
	})
	if err != nil {
		d.log.Error("webhook outbox update", "id", dl.ID, "err", err)
	}
	d.mu.Lock()
	delete(d.inflight, dl.ID)
	if sendErr != nil && !errors.Is(sendErr, errGone) && !dead {
		d.pending[dl.ID] = dl
	}
	d.mu.Unlock()
	d.wake()
}

// backoff is the wait after attempt n (from 1): MinBackoff doubled per
// attempt, capped at MaxBackoff, drawn uniformly from its upper half so
// receivers that failed together are not retried together.
func (d *Dispatcher) backoff(n int) time.Duration {
	b := d.cfg.MinBackoff
	for i := 1; i < n && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.MaxBackoff)
	return b/2 + rand.N(b/2+1)
}
