package charging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/metering"
)

// Rejection reasons of charging; the intake dead-letters an event with one
// of them in its M2M-Reason header.
const (
	RejectUnknownContract = "unknown-contract"
	RejectUnknownDevice   = "unknown-device"
	RejectRevoked         = "revoked"
	RejectFrozen          = "frozen"
	RejectNotPayer        = "not-payer"
	// RejectProvider is the intake's reason for an event of a provider
	// that is not active (metering.ReasonSourceInactive); charging trusts
	// the intake's check and does not refuse with it itself.
	RejectProvider         = metering.ReasonSourceInactive
	RejectPrice            = "unpriceable"
	RejectContractMismatch = "contract-mismatch"
	RejectSecurity         = "security-freeze"
	RejectNoHold           = "no-hold"
	// RejectIDConflict: the event's (provider, id) was charged before
	// for other content. The id is charged once, so this event is not;
	// it is dead-lettered rather than taken for a redelivery.
	RejectIDConflict = "id-conflict"
)

// Unpaid reasons sent to providers in enforcement messages.
const (
	UnpaidCreditLimit   = "credit-limit"
	UnpaidNoChannel     = "no-channel"
	UnpaidPolicyRefused = "policy-refused"
	UnpaidFrozen        = "frozen"
	UnpaidNoAnswer      = "no-answer"
)

// Defaults for Config.
const (
	DefaultFlushInterval  = 20 * time.Millisecond
	DefaultFlushThreshold = msat.Amount(1_000_000)
	DefaultRequestTimeout = 30 * time.Second
	DefaultDeviceTTL      = time.Second
	// MaxSecurityWindow bounds the event times kept per device and per
	// provider for max_event_rate rules, whatever a contract's limit.
	MaxSecurityWindow = 100_000
)

// Usage is one verified usage event as charging sees it: the intake
// has checked its signature, its provider and its plausibility and turned
// its data into a contracts.Usage.
type Usage struct {
	// ID is unique per provider; (Provider, ID) is charged once.
	ID string
	// Provider published the event (its source); Payer is its subject,
	// who pays (the buyer of an energy trade).
	Provider, Payer string
	// Contract is the hash of the contract the event names.
	Contract hub.Hash
	// Time is the event's own time: pricing uses it.
	Time time.Time
	// Usage holds the data fields; Device, Provider, EventTime and
	// CumulativeMB are set by charging, never taken from the provider.
	Usage contracts.Usage
	// Digest identifies the event's content (metering.Digest). A
	// redelivery has the same one; another event reusing the id has not
	// and is refused with RejectIDConflict. Zero when unknown: such an
	// event is compared by payer, contract, time and quantity instead.
	Digest hub.Hash
	// Hold, when set, is the hold the provider asked the payer for at the
	// session's start (the event's "hold" attribute, 32 hex): the event
	// is the session's last, its charge is paid against the hold, and the
	// rest of the hold is released once it is paid.
	Hold *[16]byte
	// Attributes are the event's attributes; a held EV session's CDR
	// takes its location and token from them (see CDR attributes).
	Attributes map[string]string
	// SignedData is the session's signed meter readings
	// (data.signed_readings) as a CDR gives them, and MeterID the
	// meter's serial; UsageOf checked that the event id binds the
	// readings and that each verifies under the meter's key. A held EV
	// session's CDR carries them.
	SignedData *contracts.SignedData
	MeterID    string
}

// Outcome is what charging did with one event: the outcome the intake
// acknowledges or dead-letters (Charged, Duplicate, or a Reject… reason and
// its Detail), and the recorded charge's status and amount.
type Outcome struct {
	metering.Outcome
	// Status and Amount describe the recorded charge.
	Status hub.ChargeStatus
	Amount msat.Amount
}

// Channels is what charging needs from the channel manager.
// *channels.Manager satisfies it.
type Channels interface {
	PayerChannel(ctx context.Context, payer string) (btcwire.OutPoint, error)
	RecordCharges(ctx context.Context, store hub.ChargeStore, cs []hub.Charge) ([]hub.ChargeResult, error)
	ChannelOwed(ctx context.Context, op btcwire.OutPoint) (msat.Amount, bool, error)
	// Channel and Receipts read a channel's stored record and payments'
	// receipts: a payment the hub stored but did not mark its charges
	// paid for (a restart, an instance gone) is found among them.
	Channel(ctx context.Context, op btcwire.OutPoint) (hub.ChannelRecord, error)
	Receipts(ctx context.Context, op btcwire.OutPoint, from uint64, limit int) ([][]byte, error)
	RequestPayment(ctx context.Context, r hub.PaymentRequest) (uint64, error)
	CancelPayment(reqID uint64)
	// Hold, RecordHeldCharge and ReleaseHold charge a session against
	// the hold its provider asked for (see Usage.Hold).
	Hold(ctx context.Context, id [16]byte) (hub.Hold, error)
	RecordHeldCharge(ctx context.Context, store hub.ChargeStore, ch hub.Charge, id [16]byte) (hub.ChargeResult, error)
	ReleaseHold(ctx context.Context, id [16]byte) (msat.Amount, error)
}

// Devices looks registered parties up. *registry.Registry satisfies it.
type Devices interface {
	// Device returns the device with id, or an error wrapping
	// hub.ErrNotFound.
	Device(ctx context.Context, id string) (hub.Device, error)
}

// Freezer freezes a device or provider a security rule caught.
// *registry.Registry satisfies it.
type Freezer interface {
	Freeze(ctx context.Context, id, actor, reason string) (hub.Device, error)
}

// Publisher publishes a message on a subject (NATS in production: the
// receipts.<provider> subjects).
type Publisher interface {
	Publish(ctx context.Context, subject string, data []byte) error
}

// Config configures New.
type Config struct {
	// Contracts and Charges persist contracts and charges. Required.
	Contracts hub.ContractStore
	Charges   hub.ChargeStore
	// Devices looks payers and providers up. Required.
	Devices Devices
	// Channels records owed charges and asks payers to pay. Required.
	Channels Channels
	// Freezer freezes parties that break a contract's security rules.
	// Required.
	Freezer Freezer
	// Publisher delivers receipts and enforcement messages to providers.
	// Required.
	Publisher Publisher

	// FlushInterval is how often owed charges are gathered into payment
	// requests; FlushThreshold flushes a payer earlier once that much is
	// owed to one provider.
	FlushInterval  time.Duration
	FlushThreshold msat.Amount
	// RequestTimeout is how long a payment request waits for the device
	// before its charges are left on credit and the provider told.
	RequestTimeout time.Duration
	// DeviceTTL is how long a looked-up device status is trusted.
	DeviceTTL time.Duration
	// CDRs, when set, keeps the CDR of every EV session paid against its
	// hold (see Usage.Hold); it is published to the provider either way.
	CDRs hub.CDRStore
	// Instance owns this Service's charge claims (claims.go); a fresh
	// random id when empty. Each process needs its own.
	Instance string
	// Observer, when set, sees every event's outcome (metrics).
	Observer Observer
	// Clock drives flushes, timeouts and security windows.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Contracts == nil || c.Charges == nil || c.Devices == nil || c.Channels == nil || c.Freezer == nil || c.Publisher == nil {
		return fmt.Errorf("%w: charging: contracts, charges, devices, channels, freezer and publisher are required", hub.ErrInvalid)
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.FlushThreshold == 0 {
		c.FlushThreshold = DefaultFlushThreshold
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DeviceTTL <= 0 {
		c.DeviceTTL = DefaultDeviceTTL
	}
	if c.Clock == nil {
		c.Clock = clock.NewDefaultClock()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Instance == "" {
		c.Instance = randomID()
	}
	if strings.ContainsRune(c.Instance, '|') {
		return fmt.Errorf("%w: charging: instance %q holds '|'", hub.ErrInvalid, c.Instance)
	}
	return nil
}

// Service is the hub side of metering: it prices verified usage events,
// records them exactly once, gathers each payer's owed charges into one
// payment request per provider and contract at a time, and publishes the
// receipts (or, for charges nobody will pay, an enforcement message) to the
// providers. It owns one goroutine, the flusher, started by Start.
type Service struct {
	cfg   Config
	log   *slog.Logger
	clock clock.Clock

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards the pricing state: caches, security windows, bandwidth
	// volumes, frozen parties. Charge holds it while pricing a batch.
	mu        sync.Mutex
	contracts map[hub.Hash]*contracts.Contract
	devices   map[string]cachedDevice
	windows   map[string]*eventWindow
	volumes   map[volumeKey]contracts.Dec
	// freezes are the freezes the batch being priced asked for; Charge
	// takes them with the lock and makes them durable without it.
	freezes []freeze

	// pay guards the payment side: owed charges waiting for a request and
	// the requests in flight.
	pay      sync.Mutex
	pending  map[payKey]*payGroup
	inflight map[uint64]*payGroup
	busy     map[payKey]bool // keys with a request in flight
	// held is every charge this Service has claimed and not yet seen
	// paid or unpaid for good: queued, asked for, or given up on
	// (claims.go). Its claims are renewed.
	held map[chargeKey]bool
	// sending counts requests on their way (flush); reqSlots bounds them.
	sending  int
	reqSlots chan struct{}
	kick     chan struct{}
	// paidMu guards paidQ, the listener's news for the flusher. It is not
	// pay: the listener is called by a payment holding its channel's
	// lock, which must not wait while the flusher walks its maps.
	paidMu sync.Mutex
	paidQ  []payEvent
	// settling holds a token per settle round the flusher left running
	// (settleAhead at most).
	settling chan struct{}

	startOnce, closeOnce sync.Once
	// scanOnce scans the owed charges nobody holds (a previous run of
	// the hub left them) before the first flush (run or Flush,
	// whichever comes first).
	scanOnce sync.Once
}

// cachedDevice is a registry lookup kept for DeviceTTL.
type cachedDevice struct {
	d     hub.Device
	err   error
	until time.Time
}

var _ hub.ChargeListener = (*Service)(nil)

// New returns a Service; Start runs its flusher and Close stops it. It
// listens to each payment request it sends (hub.PaymentRequest.Listener).
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Service{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock, ctx: ctx, cancel: cancel,
		contracts: map[hub.Hash]*contracts.Contract{},
		devices:   map[string]cachedDevice{},
		windows:   map[string]*eventWindow{},
		volumes:   map[volumeKey]contracts.Dec{},
		pending:   map[payKey]*payGroup{},
		inflight:  map[uint64]*payGroup{},
		busy:      map[payKey]bool{},
		held:      map[chargeKey]bool{},
		reqSlots:  make(chan struct{}, requestParallel),
		kick:      make(chan struct{}, 1),
		settling:  make(chan struct{}, settleAhead),
	}
	return c, nil
}

// Start launches the flusher and the claims' renewal and scan.
func (c *Service) Start() {
	c.startOnce.Do(func() {
		c.wg.Add(2)
		go func() {
			defer c.wg.Done()
			c.run()
		}()
		go func() {
			defer c.wg.Done()
			c.claimLoop()
		}()
	})
}

// Close stops the flusher and waits for it. Owed charges not yet requested
// stay owed in the store, their claims released: another hubd's scan, or
// the next run's, requests them (scanOwed).
func (c *Service) Close() error {
	c.closeOnce.Do(c.cancel)
	c.wg.Wait()
	c.waitSettles()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.releaseClaims(ctx)
	return nil
}

// contract returns the parsed contract with hash h, from the cache or the
// store (contracts are immutable, so a parsed one is kept for good).
func (c *Service) contract(ctx context.Context, h hub.Hash) (*contracts.Contract, error) {
	if k := c.contracts[h]; k != nil {
		return k, nil
	}
	k, err := c.loadContract(ctx, h)
	if err != nil {
		return nil, err
	}
	c.contracts[h] = k
	return k, nil
}

// loadContract reads and checks a stored contract. It touches no cache, so
// it needs no c.mu.
func (c *Service) loadContract(ctx context.Context, h hub.Hash) (*contracts.Contract, error) {
	rec, err := c.cfg.Contracts.Contract(ctx, h)
	if err != nil {
		return nil, err
	}
	k, err := contracts.Parse(rec.Document)
	if err != nil {
		return nil, fmt.Errorf("stored contract %s: %w", h, err)
	}
	if hub.Hash(k.Hash()) != h {
		return nil, fmt.Errorf("charging: stored contract %s hashes to %x", h, k.Hash())
	}
	return k, nil
}

// warm reads the contracts and devices of evs that the caches lack, without
// c.mu, so that intake workers charging at once do not wait on each
// other's store reads; planBatch then finds them cached. A device entry
// set meanwhile (a security freeze) is never overwritten, and a read that
// fails is left for planBatch to meet again.
func (c *Service) warm(ctx context.Context, evs []Usage, now time.Time) {
	hashes := map[hub.Hash]*contracts.Contract{}
	ids := map[string]cachedDevice{}
	c.mu.Lock()
	for i := range evs {
		if c.contracts[evs[i].Contract] == nil {
			hashes[evs[i].Contract] = nil
		}
		for _, id := range []string{evs[i].Payer, evs[i].Provider} {
			if v, ok := c.devices[id]; !ok || !now.Before(v.until) {
				ids[id] = cachedDevice{}
			}
		}
	}
	c.mu.Unlock()
	if len(hashes) == 0 && len(ids) == 0 {
		return
	}
	for h := range hashes {
		if k, err := c.loadContract(ctx, h); err == nil {
			hashes[h] = k
		}
	}
	for id := range ids {
		d, err := c.cfg.Devices.Device(ctx, id)
		if err != nil && !errors.Is(err, hub.ErrNotFound) {
			delete(ids, id)
			continue
		}
		ids[id] = cachedDevice{d: d, err: err, until: now.Add(c.cfg.DeviceTTL)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, k := range hashes {
		if k != nil && c.contracts[h] == nil {
			c.contracts[h] = k
		}
	}
	for id, v := range ids {
		if cur, ok := c.devices[id]; !ok || !now.Before(cur.until) {
			c.devices[id] = v
		}
	}
}

// device returns a registry entry, trusted for DeviceTTL.
func (c *Service) device(ctx context.Context, id string, now time.Time) (hub.Device, error) {
	if v, ok := c.devices[id]; ok && now.Before(v.until) {
		return v.d, v.err
	}
	d, err := c.cfg.Devices.Device(ctx, id)
	if err != nil && !errors.Is(err, hub.ErrNotFound) {
		return d, err // not cached: the registry may recover
	}
	c.devices[id] = cachedDevice{d: d, err: err, until: now.Add(c.cfg.DeviceTTL)}
	return d, err
}

// freeze is a party a security rule caught, to be frozen durably.
type freeze struct{ subject, reason string }

// freeze freezes the parties security rules caught, outside c.mu: a
// freeze is a durable write (the registry's audit log, the channels), and
// holding the lock across it would stall every other intake worker. The
// cache already says frozen (security); it gets the registry's record, or
// is dropped when the freeze failed, so the next batch asks the registry.
func (c *Service) freeze(ctx context.Context, fs []freeze, now time.Time) {
	for _, f := range fs {
		d, err := c.cfg.Freezer.Freeze(ctx, f.subject, "system", f.reason)
		c.mu.Lock()
		if err != nil {
			delete(c.devices, f.subject)
		} else {
			c.devices[f.subject] = cachedDevice{d: d, until: now.Add(c.cfg.DeviceTTL)}
		}
		c.mu.Unlock()
		if err != nil {
			c.log.Error("security freeze failed", "subject", f.subject, "err", err)
		}
	}
}
