package m2mclient

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/metering"
)

// Meter defaults.
const (
	DefaultMeterBatch = metering.MaxBatchEvents
	DefaultMeterRetry = 200 * time.Millisecond
)

// ErrMeterClosed means Close was called on the Meter.
var ErrMeterClosed = errors.New("m2mclient: meter closed")

// ConnectNATS connects a provider to the hub's NATS with its nkey seed (as
// issued by `hubctl provider add`), using the inbox prefix its permissions
// allow ("_INBOX_<id>").
func ConnectNATS(url, providerID string, seed []byte, opts ...nats.Option) (*nats.Conn, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: nats seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	opts = append([]nats.Option{
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix(metering.InboxPrefix(providerID)),
		nats.Name("m2mhub provider " + providerID),
	}, opts...)
	return nats.Connect(url, opts...)
}

// MeterConfig configures NewMeter.
type MeterConfig struct {
	// Conn is the provider's NATS connection (see ConnectNATS). The
	// caller owns it.
	Conn *nats.Conn
	// ProviderID is the provider's device id: events go to usage.<id>.
	ProviderID string
	// Key signs the events: the provider's registered identity key.
	Key *btcec.PrivateKey
	// HubKey is the pinned hub key receipts are verified against.
	HubKey *btcec.PublicKey
	// MaxBatch bounds events per NATS message (≤ metering.MaxBatchEvents);
	// batches also stay under metering.MaxBatchBytes.
	MaxBatch int
	// EventSignatures makes every event carry its own m2mhubsig, as hubs
	// before the batch signature need; by default a message of several
	// events carries one M2M-Batch-Sig header instead, which the hub
	// checks once per message.
	EventSignatures bool
	// Retry is the pause between publish attempts of an unacknowledged
	// batch.
	Retry time.Duration
	// Window, when set, bounds the events published and not answered
	// yet (by a receipt or an unpaid notice, heard through Receipts,
	// which must be running): Meter waits while publishing a batch would
	// take more than Window events outstanding, so a provider that
	// publishes faster than the hub charges its payers is held back
	// instead of queueing events in front of the hub. An event counts
	// for at most WindowTTL (DefaultMeterWindowTTL) without an answer.
	Window    int
	WindowTTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Meter publishes a provider's signed usage events to the hub and receives
// its receipts and enforcement notices.
type Meter struct {
	cfg MeterConfig
	js  nats.JetStreamContext
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	received []Receipt // verified receipts, for Income
	shares   []Share   // verified share notices, for Income
	// seen holds each receipt and share notice delivered (firstTime):
	// the hub publishes a receipt at least once.
	seen map[noticeKey]bool

	win *window // nil without MeterConfig.Window
}

// NewMeter returns a Meter over cfg.Conn; Close stops its receipt
// subscription.
func NewMeter(cfg MeterConfig) (*Meter, error) {
	if cfg.Conn == nil || cfg.Key == nil || cfg.HubKey == nil || !metering.ValidSubjectToken(cfg.ProviderID) {
		return nil, errors.New("m2mclient: meter needs a connection, a provider id, its key and the hub key")
	}
	if cfg.MaxBatch <= 0 || cfg.MaxBatch > metering.MaxBatchEvents {
		cfg.MaxBatch = DefaultMeterBatch
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultMeterRetry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	js, err := cfg.Conn.JetStream()
	if err != nil {
		return nil, fmt.Errorf("m2mclient: jetstream: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Meter{cfg: cfg, js: js, log: cfg.Logger, ctx: ctx, cancel: cancel}
	if cfg.Window > 0 {
		m.win = newWindow(cfg.Window, cmp.Or(cfg.WindowTTL, DefaultMeterWindowTTL))
	}
	return m, nil
}

// Outstanding is how many events the window counts: published and not
// answered yet. It is 0 without MeterConfig.Window.
func (m *Meter) Outstanding() int {
	if m.win == nil {
		return 0
	}
	return m.win.len()
}

// Close stops the receipt subscriptions and waits for them.
func (m *Meter) Close() error {
	m.cancel()
	m.wg.Wait()
	return nil
}

// Meter signs events (setting their source, spec version and type) and
// publishes them in batches, each with its Nats-Msg-Id (metering.MsgID:
// this provider's id and a hash of the signed bytes), retrying a batch
// unchanged until JetStream acknowledges it: a retry the stream already
// holds is dropped by its dedup window, and one past it by the hub's own
// record of charged events. A message of several
// events carries one batch signature (header M2M-Batch-Sig) instead of one
// signature per event, unless EventSignatures is set; a lone event is
// signed itself. With a Window, each batch first waits for room in it. It
// returns once every batch is acknowledged, or ctx's error.
func (m *Meter) Meter(ctx context.Context, events ...metering.Event) error {
	for i := range events {
		e := &events[i]
		e.Source = m.cfg.ProviderID
		if e.SpecVersion == "" {
			e.SpecVersion = metering.SpecVersion
		}
		if e.Type == "" {
			e.Type = metering.EventType
		}
		e.Sig = ""
		if m.cfg.EventSignatures {
			if err := metering.Sign(e, m.cfg.Key); err != nil {
				return fmt.Errorf("m2mclient: sign event %q: %w", e.ID, err)
			}
		}
	}
	for start := 0; start < len(events); {
		end, body, err := m.batch(events, start)
		if err != nil {
			return err
		}
		var batchSig string
		if events[start].Sig == "" && end-start > 1 {
			if batchSig, err = metering.SignBatch(events[start:end], m.cfg.Key); err != nil {
				return fmt.Errorf("m2mclient: sign batch: %w", err)
			}
		}
		if err := m.publishWindowed(ctx, events[start:end], body, batchSig); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// batch encodes the longest run of events from start that fits a message,
// signing a lone unsigned event on its own.
func (m *Meter) batch(events []metering.Event, start int) (int, []byte, error) {
	end := min(len(events), start+m.cfg.MaxBatch)
	for {
		if end-start == 1 && events[start].Sig == "" {
			if err := metering.Sign(&events[start], m.cfg.Key); err != nil {
				return 0, nil, fmt.Errorf("m2mclient: sign event %q: %w", events[start].ID, err)
			}
		}
		body, err := metering.EncodeBatch(events[start:end])
		if err != nil {
			return 0, nil, fmt.Errorf("m2mclient: encode batch: %w", err)
		}
		if len(body) <= metering.MaxBatchBytes {
			return end, body, nil
		}
		if end-start == 1 {
			return 0, nil, fmt.Errorf("m2mclient: event %q alone exceeds %d bytes", events[start].ID, metering.MaxBatchBytes)
		}
		end = start + (end-start)/2
	}
}

// publishWindowed publishes the batch of events once the window has room
// for them; a batch that fails leaves it.
func (m *Meter) publishWindowed(ctx context.Context, events []metering.Event, body []byte, batchSig string) error {
	if m.win == nil {
		return m.publish(ctx, body, batchSig)
	}
	ids := make([]string, len(events))
	for i := range events {
		ids[i] = events[i].ID
	}
	if err := m.win.acquire(ctx, m.ctx.Done(), ids); err != nil {
		return err
	}
	if err := m.publish(ctx, body, batchSig); err != nil {
		m.win.release(ids)
		return err
	}
	return nil
}

// answered drops ids from the window: a receipt or unpaid notice names
// them.
func (m *Meter) answered(ids []string) {
	if m.win != nil {
		m.win.release(ids)
	}
}

// publish sends one message until JetStream has it. A PubAck marked
// Duplicate counts as stored: the id commits to this provider and to the
// exact bytes, signatures included, so the message the stream already
// holds under it is this one, published before (a retry whose first
// acknowledgement was lost, or a resend after a restart); no other
// provider can compute the id before this one publishes it.
func (m *Meter) publish(ctx context.Context, body []byte, batchSig string) error {
	msg := nats.NewMsg(metering.UsageSubject(m.cfg.ProviderID))
	msg.Data = body
	if batchSig != "" {
		msg.Header.Set(metering.HeaderBatchSig, batchSig)
	}
	msgID := metering.MsgID(m.cfg.ProviderID, body, batchSig)
	for {
		ack, err := m.js.PublishMsg(msg, nats.MsgId(msgID), nats.Context(ctx))
		if err == nil && ack.Stream != metering.UsageStream {
			// The hub consumes only M2M_USAGE: a message stored
			// elsewhere would never be charged.
			return fmt.Errorf("m2mclient: usage stored in stream %q, not %s", ack.Stream, metering.UsageStream)
		}
		if err == nil {
			if ack.Duplicate {
				m.log.Debug("usage batch already stored", "msg_id", msgID, "seq", ack.Sequence)
			}
			return nil
		}
		m.log.Debug("usage batch not acknowledged, retrying", "msg_id", msgID, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("m2mclient: publish usage: %w (last: %v)", ctx.Err(), err)
		case <-m.ctx.Done():
			return ErrMeterClosed
		case <-time.After(m.cfg.Retry):
		}
	}
}

// Receipt is a verified hub receipt for metered events.
type Receipt struct {
	*channel.Receipt
	// Events are the ids the receipt covers (checked against its
	// EventsRoot).
	Events []string
}

// Unpaid is the hub's enforcement notice: Payer will not pay EventIDs
// (Reason: credit-limit, no-channel, policy-refused, no-answer); the
// provider should stop serving it when StopService is set.
type Unpaid struct {
	Payer       string
	EventIDs    []string
	Reason      string
	StopService bool
}

// Share is the hub's notice to a payee of a contract's revenue splits: a
// verified receipt that paid another provider for events the payee has a
// share of, and the payee's share of each. The receipt is the proof the
// charges were paid; Msat, what settlement owes this payee for them.
type Share struct {
	// Receipt pays the provider that metered the events (its Payee);
	// Events are the ids it covers (checked against its EventsRoot).
	Receipt *channel.Receipt
	Events  []string
	// Shares is this payee's share of each event that gives it one, by
	// event id, and Msat their sum.
	Shares map[string]msat.Amount
	Msat   msat.Amount
	// Paid is when the hub marked the events' charges paid, after the
	// receipt: the settlement of the epoch that holds it pays the shares
	// (docs/ev-charging.md, section 6). Zero from a hub that sends none;
	// the receipt's time stands in for it then (SettlesAt).
	Paid time.Time
}

// SettlesAt is the time that decides the epoch whose settlement pays the
// shares: Paid, or the receipt's time when the hub sent no paid time.
func (s Share) SettlesAt() time.Time {
	if s.Paid.IsZero() {
		return s.Receipt.Time
	}
	return s.Paid
}

// Notice is one message from the hub on receipts.<id>: exactly one of
// Receipt, Share, Unpaid and CDR is set.
type Notice struct {
	Receipt *Receipt
	Share   *Share
	Unpaid  *Unpaid
	// CDR is the OCPI CDR (JSON) of an EV session the hub charged
	// against its hold, sent after the session's receipt; CDREvents are
	// the event ids it covers.
	CDR       json.RawMessage
	CDREvents []string
}

// providerMessage mirrors what the hub publishes (docs/metering-charging.md).
type providerMessage struct {
	Kind        string   `json:"kind"`
	Receipt     string   `json:"receipt"`
	Events      []string `json:"events"`
	Payer       string   `json:"payer"`
	EventIDs    []string `json:"event_ids"`
	Reason      string   `json:"reason"`
	StopService string   `json:"stop_service"`
	// Receipts: several receipts in one message (kind "receipts").
	Receipts []paidReceipt `json:"receipts"`
	// CDR: the OCPI CDR of a charging session (kind "cdr").
	CDR json.RawMessage `json:"cdr"`
	// Shares: this payee's shares of the receipt's events, and Paid when
	// the hub marked them paid (kind "share").
	Shares []eventShare `json:"shares"`
	Paid   time.Time    `json:"paid"`
}

// eventShare is one event's share of a "share" message.
type eventShare struct {
	EventID string      `json:"event_id"`
	Msat    msat.Amount `json:"msat"`
}

// paidReceipt is one receipt of a "receipts" message.
type paidReceipt struct {
	Receipt string   `json:"receipt"`
	Events  []string `json:"events"`
}

// Receipts subscribes to receipts.<id> and delivers the hub's notices until
// ctx ends or Close. A receipt that does not verify against the pinned hub
// key, or does not cover the events it lists, is logged and dropped, and so
// is a receipt or share notice delivered before (the hub publishes them at
// least once). The channel is closed when the subscription ends.
func (m *Meter) Receipts(ctx context.Context) (<-chan Notice, error) {
	raw := make(chan *nats.Msg, 1024)
	sub, err := m.cfg.Conn.ChanSubscribe(metering.ReceiptsSubject(m.cfg.ProviderID), raw)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: subscribe receipts: %w", err)
	}
	out := make(chan Notice, 256)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(out)
		defer func() { _ = sub.Unsubscribe() }()
		for {
			var msg *nats.Msg
			select {
			case <-ctx.Done():
				return
			case <-m.ctx.Done():
				return
			case msg = <-raw:
			}
			for _, n := range m.decode(msg.Data) {
				select {
				case out <- n:
				case <-ctx.Done():
					return
				case <-m.ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// decode checks one hub message and returns its notices: one, or one per
// receipt of a "receipts" message. What fails the checks is logged and
// dropped (in a "receipts" message, only the receipt that fails).
func (m *Meter) decode(b []byte) []Notice {
	var pm providerMessage
	if err := json.Unmarshal(b, &pm); err != nil {
		m.log.Warn("hub notice dropped", "err", fmt.Errorf("%w: %v", ErrBadReceipt, err))
		return nil
	}
	switch pm.Kind {
	case "unpaid":
		m.answered(pm.EventIDs)
		return []Notice{{Unpaid: &Unpaid{Payer: pm.Payer, EventIDs: pm.EventIDs, Reason: pm.Reason, StopService: pm.StopService == "true"}}}
	case "receipt":
		pm.Receipts = []paidReceipt{{Receipt: pm.Receipt, Events: pm.Events}}
	case "receipts":
	case "cdr":
		if len(pm.CDR) == 0 {
			m.log.Warn("hub notice dropped", "err", fmt.Errorf("%w: a cdr notice without its CDR", ErrBadReceipt))
			return nil
		}
		return []Notice{{CDR: pm.CDR, CDREvents: pm.Events}}
	case "share":
		sh, err := m.verifyShare(pm)
		if err != nil {
			m.log.Warn("hub notice dropped", "err", err)
			return nil
		}
		if !m.firstTime("share", sh.Receipt) {
			return nil
		}
		m.mu.Lock()
		m.shares = append(m.shares, sh)
		m.mu.Unlock()
		return []Notice{{Share: &sh}}
	default:
		m.log.Warn("hub notice dropped", "err", fmt.Errorf("%w: unknown kind %q", ErrBadReceipt, pm.Kind))
		return nil
	}
	ns := make([]Notice, 0, len(pm.Receipts))
	for _, pr := range pm.Receipts {
		r, err := m.VerifyReceipt(pr.Receipt, pr.Events)
		if err != nil {
			m.log.Warn("hub notice dropped", "err", err)
			continue
		}
		m.answered(r.Events)
		if !m.firstTime("receipt", r.Receipt) {
			continue
		}
		m.mu.Lock()
		m.received = append(m.received, r)
		m.mu.Unlock()
		ns = append(ns, Notice{Receipt: &r})
	}
	return ns
}

// noticeKey names a delivered notice: its kind and its receipt's id.
type noticeKey struct {
	kind    string
	receipt [32]byte
}

// firstTime reports whether the verified notice of kind for r is
// delivered for the first time, and remembers it. The hub publishes a
// receipt (and its share notices) at least once: a hubd that dies after
// publishing it but before marking its charges paid leaves it to another,
// which publishes it again. JetStream drops an identical message within
// its duplicate window, but not one batched with other receipts.
func (m *Meter) firstTime(kind string, r *channel.Receipt) bool {
	k := noticeKey{kind, r.ID()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[k] {
		m.log.Debug("hub notice delivered again, dropped", "kind", kind)
		return false
	}
	if m.seen == nil {
		m.seen = map[noticeKey]bool{}
	}
	m.seen[k] = true
	return true
}

// VerifyReceipt checks a hex receipt as the hub publishes it: signed by the
// pinned hub key, paid to this provider, and covering exactly events. Errors
// wrap ErrBadReceipt.
func (m *Meter) VerifyReceipt(hexReceipt string, events []string) (Receipt, error) {
	r, err := m.signedReceipt(hexReceipt)
	if err != nil {
		return Receipt{}, err
	}
	if r.Payee != m.cfg.ProviderID || !r.CoversEvents(events) {
		return Receipt{}, fmt.Errorf("%w: receipt does not pay %s for the events it lists", ErrBadReceipt, m.cfg.ProviderID)
	}
	return Receipt{Receipt: r, Events: events}, nil
}

// signedReceipt decodes a hex receipt and checks it is signed by the
// pinned hub key. Errors wrap ErrBadReceipt.
func (m *Meter) signedReceipt(hexReceipt string) (*channel.Receipt, error) {
	b, err := hex.DecodeString(hexReceipt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReceipt, err)
	}
	r := new(channel.Receipt)
	if err := r.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	if err := r.VerifyKey(m.cfg.HubKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	return r, nil
}

// verifyShare checks a "share" message: its receipt signed by the pinned
// hub key, paid to another provider, covering exactly its events, and
// every share naming one of them, once, with a non-zero amount. Errors
// wrap ErrBadReceipt.
func (m *Meter) verifyShare(pm providerMessage) (Share, error) {
	r, err := m.signedReceipt(pm.Receipt)
	if err != nil {
		return Share{}, err
	}
	if r.Payee == m.cfg.ProviderID || !r.CoversEvents(pm.Events) || len(pm.Shares) == 0 {
		return Share{}, fmt.Errorf("%w: share notice's receipt does not cover the events it lists", ErrBadReceipt)
	}
	in := make(map[string]bool, len(pm.Events))
	for _, id := range pm.Events {
		in[id] = true
	}
	sh := Share{Receipt: r, Events: pm.Events, Shares: make(map[string]msat.Amount, len(pm.Shares)), Paid: pm.Paid}
	for _, s := range pm.Shares {
		if _, twice := sh.Shares[s.EventID]; !in[s.EventID] || twice || s.Msat == 0 || s.Msat > r.Amount-sh.Msat {
			return Share{}, fmt.Errorf("%w: share of event %q", ErrBadReceipt, s.EventID)
		}
		sh.Shares[s.EventID] = s.Msat
		sh.Msat += s.Msat
	}
	return sh, nil
}

// MeterIncome is what verified receipts paid a provider over a period.
type MeterIncome struct {
	// Gross is the sum of the receipts' amounts: what payers paid for this
	// provider's events. The hub fee of each contract comes off it at
	// settlement (contracts.Price gives the split), and so do the shares its
	// contracts' revenue splits give other payees (Contract.SplitShares).
	Gross    msat.Amount
	Receipts int
	Events   int
	// Shares is what share notices (Notice.Share) whose charges were
	// paid in the period (Share.SettlesAt) owe this provider as a payee
	// of other providers' revenue splits, counted in ShareNotices:
	// settled to it as they are, fee already off, by the epoch that
	// holds that time, as the hub's settlement counts them.
	Shares       msat.Amount
	ShareNotices int
}

// Income sums the verified receipts this Meter received (through Receipts)
// dated in [from, to), and the share notices whose charges were paid in
// it (Share.SettlesAt). It needs no hub query: the admin API is operator-only,
// and a provider's own signed receipts are the proof of its income anyway.
func (m *Meter) Income(from, to time.Time) MeterIncome {
	m.mu.Lock()
	defer m.mu.Unlock()
	var in MeterIncome
	for _, r := range m.received {
		if r.Time.Before(from) || !r.Time.Before(to) {
			continue
		}
		in.Gross += r.Amount
		in.Receipts++
		in.Events += int(r.EventCount)
	}
	for _, sh := range m.shares {
		if at := sh.SettlesAt(); at.Before(from) || !at.Before(to) {
			continue
		}
		in.Shares += sh.Msat
		in.ShareNotices++
	}
	return in
}
