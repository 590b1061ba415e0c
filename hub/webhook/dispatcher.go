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
	// EventShare tells a revenue split's payee of a receipt that paid
	// charges it has a share of (charging.ProviderMsgShare).
	EventShare = "share"
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

// DefaultPollInterval is Config.PollInterval's default.
const DefaultPollInterval = time.Second

// EndpointSource gives the endpoints to deliver to. *Endpoints satisfies
// it.
type EndpointSource interface {
	// For returns the endpoints of provider, every one for "".
	For(ctx context.Context, provider string) ([]Endpoint, error)
	// Endpoint returns one endpoint; ok is false when it no longer
	// exists.
	Endpoint(ctx context.Context, id string) (ep Endpoint, ok bool, err error)
}

// Config configures New.
type Config struct {
	// Outbox keeps the pending deliveries. When nil, New opens a
	// BoltOutbox at OutboxPath, which is then required.
	Outbox Outbox
	// OutboxPath is the bbolt file of pending deliveries (in the data
	// dir), used when Outbox is nil.
	OutboxPath string
	// Endpoints resolves providers to endpoints. Required.
	Endpoints EndpointSource
	// Policy is the address policy of deliveries: the client dials only
	// the addresses it allows, checked after DNS resolution.
	Policy AddressPolicy
	// Workers is how many deliveries are in flight at once.
	Workers int
	// MaxAttempts bounds the attempts of one delivery; after the last
	// failure it moves to the outbox's dead set.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (full jitter over [d/2, d]).
	MinBackoff, MaxBackoff time.Duration
	// Lease is how long a claimed delivery stays with its claimer before
	// it is due again for any instance sharing the outbox. The POST's
	// timeout is the lesser of DefaultTimeout and half the lease, so a
	// live claimer finishes first. Zero means 3 × DefaultTimeout.
	Lease time.Duration
	// PollInterval bounds how long an idle worker waits before looking at
	// the outbox again: another instance sharing it may have queued a
	// delivery, or a claim may have run out. Zero means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Clock schedules retries. Defaults to the wall clock.
	Clock  clock.Clock
	Logger *slog.Logger
}

// Dispatcher delivers queued events. It owns Workers delivery goroutines,
// started by Start and stopped by Close; each claims a due delivery from
// the outbox, POSTs it and records the outcome.
type Dispatcher struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger
	clock  clock.Clock
	outbox Outbox
	owned  bool // New opened the outbox; Close closes it

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	mu     sync.Mutex
	closed bool

	startOnce, closeOnce sync.Once
}

// New opens the outbox (when not given one).
func New(cfg Config) (*Dispatcher, error) {
	if (cfg.Outbox == nil && cfg.OutboxPath == "") || cfg.Endpoints == nil {
		return nil, errors.New("webhook: an outbox and endpoints are required")
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
	if cfg.Lease <= 0 {
		cfg.Lease = 3 * DefaultTimeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock, outbox: cfg.Outbox,
		client: cfg.Policy.Client(min(DefaultTimeout, cfg.Lease/2)),
		kick:   make(chan struct{}, 1),
	}
	if d.outbox == nil {
		o, err := OpenBoltOutbox(cfg.OutboxPath)
		if err != nil {
			return nil, err
		}
		d.outbox, d.owned = o, true
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Start runs the workers.
func (d *Dispatcher) Start() {
	d.startOnce.Do(func() {
		d.wg.Add(d.cfg.Workers)
		for range d.cfg.Workers {
			go func() {
				defer d.wg.Done()
				d.worker()
			}()
		}
	})
}

// Close stops the goroutines, waits for them (a POST in flight is
// cancelled and stays claimed in the outbox until its lease runs out)
// and closes the outbox if New opened it.
func (d *Dispatcher) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.cancel()
		d.wg.Wait()
		if d.owned {
			err = d.outbox.Close()
		}
	})
	return err
}

// Pending returns how many deliveries wait in the outbox, in flight
// included (-1 when the outbox cannot be read).
func (d *Dispatcher) Pending() int {
	n, err := d.outbox.Pending(context.Background())
	if err != nil {
		return -1
	}
	return n
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
	eps, err := d.cfg.Endpoints.For(ctx, provider)
	if err != nil {
		return err
	}
	if len(eps) == 0 {
		return nil
	}
	now := d.clock.Now().UTC()
	es := make([]Entry, 0, len(eps))
	for _, ep := range eps {
		es = append(es, Entry{
			ID: DeliveryID(ep.ID, event, body), Endpoint: ep.ID, Event: event, Body: body, NextAt: now,
		})
	}
	return d.put(ctx, es...)
}

// put writes deliveries to the outbox (one already there is kept as is:
// one delivery per event) and wakes a worker.
func (d *Dispatcher) put(ctx context.Context, es ...Entry) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := d.outbox.Put(ctx, es); err != nil {
		return fmt.Errorf("webhook: outbox: %w", err)
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

// worker claims due deliveries and sends them; with none due it sleeps
// until the next one is due, one is queued here, or PollInterval has
// passed (another instance may have queued one, or a claim run out).
func (d *Dispatcher) worker() {
	for {
		now := d.clock.Now()
		c, ok, next, err := d.outbox.Claim(d.ctx, now, d.cfg.Lease)
		if d.ctx.Err() != nil {
			return
		}
		if err != nil {
			d.log.Error("webhook outbox claim", "err", err)
		}
		if ok {
			d.wake() // there may be more due: let another worker look
			d.finish(c, d.send(c.Entry))
			continue
		}
		wait := d.cfg.PollInterval
		if !next.IsZero() && next.Sub(now) < wait {
			wait = max(next.Sub(now), 0)
		}
		select {
		case <-d.ctx.Done():
			return
		case <-d.kick:
		case <-d.clock.TickAfter(wait):
		}
	}
}

// errGone marks a delivery whose endpoint was removed.
var errGone = errors.New("webhook: endpoint removed")

// send makes one attempt.
func (d *Dispatcher) send(dl Entry) error {
	ep, ok, err := d.cfg.Endpoints.Endpoint(d.ctx, dl.Endpoint)
	if err != nil {
		return err
	}
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
	req.Header.Set(HeaderRedelivery, strconv.FormatBool(dl.Attempts > 0 || dl.MaybeSent))
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
// last attempt, moved to the dead set.
func (d *Dispatcher) finish(c Claim, sendErr error) {
	if sendErr != nil && d.ctx.Err() != nil {
		// Cancelled by Close: not an attempt. It stays claimed until its
		// lease runs out, then any instance sends it again.
		return
	}
	// The outcome is written even while Close runs: a POST that was
	// answered must leave the outbox.
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	var err error
	if sendErr == nil || errors.Is(sendErr, errGone) {
		err = d.outbox.Done(ctx, c)
	} else {
		dl := &c.Entry
		dl.Attempts++
		dl.LastErr = sendErr.Error()
		dead := dl.Attempts >= d.cfg.MaxAttempts
		dl.NextAt = d.clock.Now().UTC().Add(d.backoff(dl.Attempts))
		d.log.Warn("webhook delivery failed", "id", dl.ID, "endpoint", dl.Endpoint, "attempt", dl.Attempts, "dead", dead, "err", sendErr)
		if dead {
			err = d.outbox.Bury(ctx, c)
		} else {
			err = d.outbox.Retry(ctx, c)
		}
	}
	if err != nil {
		d.log.Error("webhook outbox update", "id", c.Entry.ID, "err", err)
	}
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
