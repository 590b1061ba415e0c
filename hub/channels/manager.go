package channels

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Channel manager errors. Callers test them with errors.Is.
var (
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("channels: manager closed")
	// ErrNothingToClaim is returned by Claim when the channel's latest
	// state moves no whole satoshi to the hub, or what it moves would not
	// pay the claim's fee plus a relayable output.
	ErrNothingToClaim = errors.New("channels: nothing worth claiming")
	// ErrChannelState is returned when an operation does not fit the
	// channel's status (claiming a closed channel, for example).
	ErrChannelState = errors.New("channels: channel status does not allow this")
)

// Devices looks registered parties up. *registry.Registry satisfies it.
type Devices interface {
	// Device returns the device with id, or an error wrapping ErrNotFound.
	Device(ctx context.Context, id string) (hub.Device, error)
}

// Sessions finds the live session of a device. *session.Server satisfies it.
type Sessions interface {
	// Session returns the live session of deviceID, if it has one.
	Session(deviceID string) (*session.Session, bool)
}

// Chain is what the channel manager needs from the base chain.
// btcdchain.HubChain satisfies it.
type Chain interface {
	// BlockCount returns the height of the best block.
	BlockCount(ctx context.Context) (int32, error)
	// TxOut looks up an unspent output; an unknown or spent output yields
	// an error wrapping hub.ErrNotFound.
	TxOut(ctx context.Context, op btcwire.OutPoint, includeMempool bool) (hub.TxOut, error)
	// Confirmations returns how many blocks confirm txid (0 in the
	// mempool), or an error wrapping hub.ErrNotFound.
	Confirmations(ctx context.Context, txid chainhash.Hash) (int64, error)
	// SendRawTransaction broadcasts tx and returns its id.
	SendRawTransaction(ctx context.Context, tx *btcwire.MsgTx) (chainhash.Hash, error)
}

// Defaults for Config.
const (
	DefaultMinExpiryDelta  = 144        // one day of blocks
	DefaultMaxExpiryDelta  = 144 * 365  // one year
	DefaultMinCapacity     = 10_000     // sat
	DefaultMaxCapacity     = 16_777_215 // sat, the classic Lightning channel bound
	DefaultSafetyMargin    = 36         // blocks: six hours to get a claim mined
	DefaultCreditLimit     = msat.Amount(10_000)
	DefaultMaxPendingOpens = 3
	DefaultMaxHoldDuration = 24 * time.Hour
	DefaultCaptureTimeout  = 10 * time.Second
	DefaultPayRate         = 200 // payments per second per device
	DefaultPayBurst        = 400
	DefaultFeeRate         = 2 // sat/vB
	DefaultPollInterval    = 5 * time.Second
	DefaultPendingTimeout  = 24 * time.Hour
	DefaultCloseTimeout    = time.Minute
)

// Config configures a Channels manager. Zero values take the
// defaults above.
type Config struct {
	// Store persists channels, holds and receipts. Required.
	Store hub.ChannelStore
	// Devices checks payers and payees. Required.
	Devices Devices
	// Sessions reaches devices that are online. Required.
	Sessions Sessions
	// Chain watches funding and closing transactions and broadcasts.
	// Required.
	Chain Chain
	// HubKey is the hub's identity key. Each channel's hub key is this
	// key tweaked by the channel's pending id (channel.HubChannelPrivKey),
	// so every channel has its own address while the device can still
	// check the key against the hub key it pinned. Required.
	HubKey *btcec.PrivateKey
	// PayoutScript is the hub wallet's pkScript, where the hub's share of
	// a close or claim goes. Required.
	PayoutScript []byte
	// Params is the network. Required.
	Params *chaincfg.Params

	// MinDepth is the confirmations a funding output needs; 1 on regtest
	// and simnet, 3 elsewhere by default.
	MinDepth uint32
	// MinExpiryDelta and MaxExpiryDelta bound a new channel's expiry
	// relative to the current height.
	MinExpiryDelta, MaxExpiryDelta uint32
	// MinCapacity and MaxCapacity bound a new channel's capacity.
	MinCapacity, MaxCapacity btcutil.Amount
	// SafetyMargin is how many blocks before expiry the hub claims a
	// channel it was paid in, so the claim confirms before the device's
	// refund becomes valid.
	SafetyMargin uint32
	// CreditLimit bounds service charged on credit per channel
	// (invariant I1): captures the device did not sign in time.
	CreditLimit msat.Amount
	// MaxPendingOpens bounds a device's offered, unfunded channels.
	MaxPendingOpens int
	// MaxHoldDuration bounds how far in the future a hold may expire.
	MaxHoldDuration time.Duration
	// CaptureTimeout is how long the device has to pay a capture before
	// the hub charges it on credit.
	CaptureTimeout time.Duration
	// PayRate and PayBurst are each device's token bucket for Pay.
	PayRate, PayBurst int
	// PaySlots bounds the devices' own payments worked on at once
	// (DefaultPaySlots); payments answering the hub's charge requests
	// are not counted and never wait for a slot.
	PaySlots int
	// FeeRate is the fee rate of close and claim transactions, sat/vB.
	FeeRate btcutil.Amount
	// PollInterval is how often the chain is polled for funding and
	// closing confirmations and new blocks.
	PollInterval time.Duration
	// PendingTimeout is how long an offer may wait for its funding
	// output before it fails and stops counting as pending.
	PendingTimeout time.Duration
	// CloseTimeout bounds a cooperative close negotiation; until it ends
	// payments on the channel are refused with "closing".
	CloseTimeout time.Duration

	// Relay, when set, reaches devices whose session is on another
	// instance of the hub: notices go there, and a provider's hold
	// messages run there (docs/scaling.md).
	Relay Relay

	// PayObserver, when set, sees every payment's outcome (metrics).
	PayObserver PayObserver

	// Clock drives holds, capture timeouts and polling. Defaults to the
	// wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	switch {
	case c.Store == nil, c.Devices == nil, c.Sessions == nil, c.Chain == nil:
		return fmt.Errorf("%w: channels: store, devices, sessions and chain are required", hub.ErrInvalid)
	case c.HubKey == nil:
		return fmt.Errorf("%w: channels: no hub key", hub.ErrInvalid)
	case len(c.PayoutScript) == 0:
		return fmt.Errorf("%w: channels: no payout script", hub.ErrInvalid)
	case c.Params == nil:
		return fmt.Errorf("%w: channels: no chain params", hub.ErrInvalid)
	}
	if c.MinDepth == 0 {
		c.MinDepth = 3
		if c.Params.GenerateSupported {
			c.MinDepth = 1
		}
	}
	setU32 := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	setU32(&c.MinExpiryDelta, DefaultMinExpiryDelta)
	setU32(&c.MaxExpiryDelta, DefaultMaxExpiryDelta)
	setU32(&c.SafetyMargin, DefaultSafetyMargin)
	setAmt := func(v *btcutil.Amount, d btcutil.Amount) {
		if *v <= 0 {
			*v = d
		}
	}
	setAmt(&c.MinCapacity, DefaultMinCapacity)
	setAmt(&c.MaxCapacity, DefaultMaxCapacity)
	setAmt(&c.FeeRate, DefaultFeeRate)
	setDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setDur(&c.MaxHoldDuration, DefaultMaxHoldDuration)
	setDur(&c.CaptureTimeout, DefaultCaptureTimeout)
	setDur(&c.PollInterval, DefaultPollInterval)
	setDur(&c.PendingTimeout, DefaultPendingTimeout)
	setDur(&c.CloseTimeout, DefaultCloseTimeout)
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt(&c.MaxPendingOpens, DefaultMaxPendingOpens)
	setInt(&c.PayRate, DefaultPayRate)
	setInt(&c.PayBurst, DefaultPayBurst)
	setInt(&c.PaySlots, DefaultPaySlots)
	if c.CreditLimit == 0 {
		c.CreditLimit = DefaultCreditLimit
	}
	if c.MinCapacity <= channel.Reserve || c.MinCapacity > c.MaxCapacity {
		return fmt.Errorf("%w: channels: capacity bounds [%d, %d]", hub.ErrInvalid, c.MinCapacity, c.MaxCapacity)
	}
	if c.MinExpiryDelta > c.MaxExpiryDelta || c.SafetyMargin*2 >= c.MinExpiryDelta {
		return fmt.Errorf("%w: channels: expiry deltas [%d, %d] with safety margin %d",
			hub.ErrInvalid, c.MinExpiryDelta, c.MaxExpiryDelta, c.SafetyMargin)
	}
	if c.Clock == nil {
		c.Clock = clock.NewDefaultClock()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Manager is the hub side of payment channels: it offers channels, watches
// their funding, accepts payments, runs holds, and closes or claims them.
// It receives the channel messages of every session (it is the server's
// Handler) and owns two goroutines of its own, started by Start: the chain
// watcher and the capture timers.
type Manager struct {
	cfg    Config
	store  hub.ChannelStore
	log    *slog.Logger
	clock  clock.Clock
	hubPub hub.PubKey
	// signer signs every payment's receipt under cfg.HubKey.
	signer *channel.ReceiptSigner

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards the maps below, never the channels in them: each cached
	// channel has its own lock, so payments on different channels run in
	// parallel.
	mu        sync.RWMutex
	cache     map[btcwire.OutPoint]*chanEntry
	holdIndex map[[16]byte]btcwire.OutPoint // active holds → channel
	asks      map[[16]byte]*holdAsk         // hold requests waiting for the device
	closed    bool                          // set by Close; no goroutine starts after it
	nextReq   uint64                        // last PaymentRequest id, atomic
	charges   chargeBook                    // payment requests for metered charges
	slots     paySlots                      // admission of the devices' own payments (admit)

	limits sync.Map // device id → *rateLimiter
	payees sync.Map // provider id → time.Time until which it is known active
	// watched are the channels the watcher follows between full scans:
	// offers waiting for funding (by pending id) and closing channels.
	watchMu     sync.Mutex
	watchedPend map[[32]byte]struct{}
	watchedShut map[btcwire.OutPoint]struct{}
	// fundMu serialises funding checks, which run from sessions and from
	// the watcher.
	fundMu sync.Mutex

	// ready is closed when the watcher's first round is over (see Ready).
	ready chan struct{}

	startOnce sync.Once
	closeOnce sync.Once
}

var _ session.Handler = (*Manager)(nil)

// New returns a channel manager. Call Start to run its watchers and
// Close to stop them.
func New(cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:         cfg,
		store:       cfg.Store,
		log:         cfg.Logger,
		clock:       cfg.Clock,
		hubPub:      hub.PubKeyOf(cfg.HubKey.PubKey()),
		signer:      channel.NewReceiptSigner(cfg.HubKey),
		ctx:         ctx,
		cancel:      cancel,
		cache:       make(map[btcwire.OutPoint]*chanEntry),
		holdIndex:   make(map[[16]byte]btcwire.OutPoint),
		watchedPend: make(map[[32]byte]struct{}),
		watchedShut: make(map[btcwire.OutPoint]struct{}),
		asks:        make(map[[16]byte]*holdAsk),
		slots:       paySlots{ch: make(chan struct{}, cfg.PaySlots)},
		ready:       make(chan struct{}),
	}, nil
}

// Start launches the chain watcher, which confirms fundings and closes,
// expires holds and offers, and claims channels nearing expiry.
func (c *Manager) Start() {
	c.startOnce.Do(func() { c.goOwned(c.watch) })
}

// Ready is closed once the watcher's first round after Start is over:
// the active holds of a previous run are cached again and every offer,
// closing channel and open channel's expiry has been looked at once.
// Payments are served before it; it marks the end of the hub's start-up
// work on its channels (storetest.BenchManyChannels waits for it).
func (c *Manager) Ready() <-chan struct{} { return c.ready }

// goOwned runs f on a goroutine Close waits for. It reports false, running
// nothing, once Close has begun.
func (c *Manager) goOwned(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// Close stops the watcher and every capture timer and waits for them.
// Payments in flight on sessions finish on their own goroutines.
func (c *Manager) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel()
	})
	c.wg.Wait()
	return nil
}

// chanEntry is the cached, in-memory view of one channel. Its lock
// serialises everything that changes the channel: payments, holds, freezes,
// closes.
type chanEntry struct {
	// mu is taken by everything that reads or writes the channel.
	// Everything but a payment also takes chargeMu exclusively (lock),
	// while RecordCharges shares chargeMu alone across its store write:
	// charges only add to Owed, so recorders of different batches on the
	// same channel need not wait for each other's durable writes, nor
	// for a payment's (the store lowers Owed itself, ApplyPayment). A
	// payment holds mu only, so a charge batch naming its payer records
	// while the payment commits. rec.Owed is then written by both under
	// owedMu; charging and charged count the batches in flight and done
	// so a payment can tell whether its store's Owed is the latest
	// (settleOwed).
	mu       sync.Mutex
	chargeMu sync.RWMutex
	owedMu   sync.Mutex
	charging int    // charge batches between store write and cache; owedMu
	charged  uint64 // charge batches folded into rec.Owed; owedMu
	rec      hub.ChannelRecord
	out      *channel.Output
	// holds are the channel's active holds; their Remaining is reserved
	// capacity.
	holds map[[16]byte]*hub.Hold
	// asked is, per hold, what captures have asked the device for and
	// it has neither paid nor been charged on credit for.
	asked map[[16]byte]msat.Amount
	// reqs are the PaymentRequests sent for captures, by id, until the
	// device pays them (or pays the credit they were charged on).
	reqs map[uint64]*captureReq
	// closing is the cooperative close being negotiated, if any.
	closing *closeAttempt
}

// lock takes the channel whole: mu, then chargeMu, so no charge is
// being recorded on it either.
func (e *chanEntry) lock() {
	e.mu.Lock()
	e.chargeMu.Lock()
}

// unlock releases lock.
func (e *chanEntry) unlock() {
	e.chargeMu.Unlock()
	e.mu.Unlock()
}

// owedNow is the cached Owed for a holder of mu alone (a payment).
func (e *chanEntry) owedNow() msat.Amount {
	e.owedMu.Lock()
	defer e.owedMu.Unlock()
	return e.rec.Owed
}

// owedMark is what settleOwed compares: the charge batches done and
// whether any is in flight, with the cached Owed, read before a
// payment's store write.
type owedMark struct {
	charged uint64
	busy    bool
	owed    msat.Amount
}

func (e *chanEntry) mark() owedMark {
	e.owedMu.Lock()
	defer e.owedMu.Unlock()
	return owedMark{charged: e.charged, busy: e.charging > 0, owed: e.rec.Owed}
}

// settleOwed moves the cached Owed after a payment of amount whose store
// write returned stored. When no charge batch was in flight or done
// across that write, stored is the latest and is taken (it counts what
// other hubd charged). Otherwise the order of the charges and the
// payment in the store is unknown: the cache keeps the charges and
// lowers Owed by what the payment surely lowered it by, min(Owed before,
// amount) (charges only raise Owed), so it never falls below the
// store's; the next payment with no charge beside it takes the store's.
func (e *chanEntry) settleOwed(m owedMark, amount, stored msat.Amount) {
	e.owedMu.Lock()
	defer e.owedMu.Unlock()
	if !m.busy && e.charging == 0 && e.charged == m.charged {
		e.rec.Owed = stored
		return
	}
	e.rec.Owed -= min(m.owed, amount)
}

// adopt takes fresh, the channel's record as just read from the store,
// unless the cached one is ahead of it. Several hubd share one store: a
// payment taken by another one moves the sequence, a charge it recorded
// raises Owed at the same sequence. e.mu is held, so no local write is
// between its durable write and the cache, and the store can be behind
// the cache only when read before that write.
func (e *chanEntry) adopt(fresh hub.ChannelRecord) {
	if fresh.Seq >= e.rec.Seq {
		e.rec = fresh
	}
}

// reserved is the capacity held by active holds other than except.
func (e *chanEntry) reserved(except *[16]byte) msat.Amount {
	var sum msat.Amount
	for id, h := range e.holds {
		if except != nil && id == *except {
			continue
		}
		sum += h.Remaining()
	}
	return sum
}

// state is the channel's latest acknowledged state.
func (e *chanEntry) state() channel.State {
	return channel.State{ChannelID: e.rec.Funding, Seq: e.rec.Seq, Paid: e.rec.Paid}
}

// free is what a new payment or hold may still use.
func (e *chanEntry) free() msat.Amount {
	used := e.rec.Paid + e.rec.Owed + e.reserved(nil)
	max := e.out.Params().MaxPaid()
	if used >= max {
		return 0
	}
	return max - used
}

// entry returns the cached channel funded by op, loading it from the store
// on first use. It returns an error wrapping ErrNotFound.
func (c *Manager) entry(ctx context.Context, op btcwire.OutPoint) (*chanEntry, error) {
	c.mu.RLock()
	e := c.cache[op]
	c.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	rec, err := c.store.Channel(ctx, op)
	if err != nil {
		return nil, err
	}
	e, err = c.newEntry(ctx, rec)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have := c.cache[op]; have != nil {
		return have, nil
	}
	c.cache[op] = e
	for id := range e.holds {
		c.holdIndex[id] = op
	}
	return e, nil
}

// newEntry builds the cached view of rec: its output (derived once: key
// aggregation and tweaking cost about 0.2 ms) and its active holds.
func (c *Manager) newEntry(ctx context.Context, rec hub.ChannelRecord) (*chanEntry, error) {
	out, err := c.output(rec)
	if err != nil {
		return nil, err
	}
	e := &chanEntry{rec: rec, out: out, holds: map[[16]byte]*hub.Hold{},
		asked: map[[16]byte]msat.Amount{}, reqs: map[uint64]*captureReq{}}
	holds, err := c.store.Holds(ctx, rec.Funding)
	if err != nil {
		return nil, fmt.Errorf("holds of %v: %w", rec.Funding, err)
	}
	for i := range holds {
		if holds[i].Status == hub.HoldActive {
			h := holds[i]
			e.holds[h.ID] = &h
		}
	}
	return e, nil
}

// output derives the channel output of rec.
func (c *Manager) output(rec hub.ChannelRecord) (*channel.Output, error) {
	dev, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		return nil, fmt.Errorf("channel device key: %w", err)
	}
	hk, err := btcec.ParsePubKey(rec.HubKey[:])
	if err != nil {
		return nil, fmt.Errorf("channel hub key: %w", err)
	}
	return channel.NewOutput(channel.Params{DeviceKey: dev, HubKey: hk, Capacity: rec.Capacity, Expiry: rec.Expiry})
}

// hubChannelKey is the private key of the hub's side of rec. The tweak
// comes from the channel's root pending id (RootPendingID): a channel
// created by a settlement rollover has a masked pending id of its own but
// keeps the key of the channel the device first opened, so claims,
// cooperative closes and expiry claims work on it as on the original.
func (c *Manager) hubChannelKey(rec hub.ChannelRecord) (*btcec.PrivateKey, error) {
	root, ok := RootPendingID(rec, c.cfg.HubKey.PubKey())
	if !ok {
		// The identity key changed since the channel was offered; the
		// hub cannot sign for it any more.
		return nil, fmt.Errorf("channels: channel %v: hub key does not derive from the identity key", rec.Funding)
	}
	dev, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		return nil, fmt.Errorf("channel device key: %w", err)
	}
	return channel.HubChannelPrivKey(c.cfg.HubKey, channel.ChannelKeyTweak(dev, root))
}

// refresh replaces e's cached record with the store's when the store holds
// a later state: another hubd on the same store moved the channel while
// its device was connected there (docs/scaling.md). The caller holds e.mu.
func (c *Manager) refresh(ctx context.Context, e *chanEntry) {
	fresh, err := c.store.Channel(ctx, e.rec.Funding)
	if err == nil && fresh.Seq > e.rec.Seq {
		e.rec = fresh
	}
}

// setRecord replaces the cached record of an entry the caller has locked.
func (c *Manager) setRecord(e *chanEntry, rec hub.ChannelRecord) { e.rec = rec }

// putStatus writes rec with a new status and returns it.
func (c *Manager) putStatus(ctx context.Context, rec hub.ChannelRecord, st hub.ChannelStatus) (hub.ChannelRecord, error) {
	rec.Status = st
	rec.UpdatedAt = c.clock.Now().UTC()
	if err := c.store.PutChannel(ctx, rec); err != nil {
		return rec, fmt.Errorf("channel %v → %s: %w", rec.Funding, st, err)
	}
	return rec, nil
}

// ChannelsOf returns a device's channels, in creation order.
func (c *Manager) ChannelsOf(ctx context.Context, deviceID string) ([]hub.ChannelRecord, error) {
	return c.store.ChannelsByDevice(ctx, deviceID)
}

// Channel returns the channel funded by op, or an error wrapping
// ErrNotFound.
func (c *Manager) Channel(ctx context.Context, op btcwire.OutPoint) (hub.ChannelRecord, error) {
	return c.store.Channel(ctx, op)
}

// Exposure is what the hub stands to lose if every device vanished now.
type Exposure struct {
	// Owed is service given on credit, not covered by any signature.
	Owed msat.Amount `json:"owed_msat"`
	// Credit is the sub-satoshi part of every channel's Paid: charged,
	// acknowledged, but not claimable on chain.
	Credit msat.Amount `json:"credit_msat"`
	// Reserved is capacity held by active holds. It is not at risk
	// itself; it is what providers may still deliver against.
	Reserved msat.Amount `json:"reserved_msat"`
	// Channels counts the open (ready or frozen) channels.
	Channels int `json:"channels"`
}

// Exposure sums Owed, sub-satoshi credit and reserved holds over every open
// channel, from the store: one listing of the channels and one of the
// active holds (not a read of each channel's holds, which at 100,000
// channels cost 100,000 round trips to Redis per metrics scrape).
func (c *Manager) Exposure(ctx context.Context) (Exposure, error) {
	recs, err := c.store.Channels(ctx, hub.ChannelReady, hub.ChannelFrozen)
	if err != nil {
		return Exposure{}, err
	}
	holds, err := c.store.ActiveHolds(ctx)
	if err != nil {
		return Exposure{}, err
	}
	var x Exposure
	open := make(map[btcwire.OutPoint]bool, len(recs))
	for _, r := range recs {
		open[r.Funding] = true
		x.Channels++
		x.Owed += r.Owed
		x.Credit += channel.State{Paid: r.Paid}.Credit()
	}
	for _, h := range holds {
		if open[h.Channel] {
			x.Reserved += h.Remaining()
		}
	}
	return x, nil
}

// Freeze stops new payments and holds on every ready channel of deviceID
// (used when the device is revoked). Frozen channels keep their state and
// are settled or claimed later; their active holds are closed.
func (c *Manager) Freeze(ctx context.Context, deviceID string) error {
	recs, err := c.store.ChannelsByDevice(ctx, deviceID)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Status != hub.ChannelReady {
			continue
		}
		e, err := c.entry(ctx, r.Funding)
		if err != nil {
			return err
		}
		e.lock()
		err = c.freezeLocked(ctx, e)
		e.unlock()
		if err != nil {
			return err
		}
	}
	c.log.Info("device channels frozen", "device", deviceID)
	return nil
}

func (c *Manager) freezeLocked(ctx context.Context, e *chanEntry) error {
	if e.rec.Status != hub.ChannelReady {
		return nil
	}
	rec, err := c.putStatus(ctx, e.rec, hub.ChannelFrozen)
	if err != nil {
		return err
	}
	c.setRecord(e, rec)
	c.closeHoldsLocked(ctx, e, hub.HoldReleased, wire.HoldChannelClosed)
	return nil
}

// send delivers msg to deviceID if it is online, here or, through the
// Relay, on another instance. Delivery is best effort: everything the hub
// sends this way is either an answer the device can ask for again or a
// notice whose content is also stored.
func (c *Manager) send(ctx context.Context, deviceID string, msg wire.Message) bool {
	if c.sendHere(ctx, deviceID, msg) {
		return true
	}
	return c.cfg.Relay != nil && c.cfg.Relay.Notify(ctx, deviceID, msg)
}

// sendHere delivers msg to deviceID's session on this instance only: a
// request whose answer this manager waits for (a payment or hold request)
// must reach the device on the instance that waits.
func (c *Manager) sendHere(ctx context.Context, deviceID string, msg wire.Message) bool {
	s, ok := c.cfg.Sessions.Session(deviceID)
	if !ok {
		return false
	}
	if err := s.Send(ctx, msg); err != nil {
		c.log.Debug("send failed", "device", deviceID, "type", uint16(msg.MsgType()), "err", err)
		return false
	}
	return true
}

// sameScript compares two scripts.
func sameScript(a, b []byte) bool { return bytes.Equal(a, b) }
