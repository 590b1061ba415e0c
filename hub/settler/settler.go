package settler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// Settlement errors. Callers test them with errors.Is.
var (
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("settler: closed")
	// ErrPending is returned when an epoch cannot be planned yet:
	// the previous epoch's run has not reached broadcast, so the balances
	// it carries are not final.
	ErrPending = errors.New("settler: previous settlement not broadcast")
	// ErrRefused is what a Cosigners implementation returns when a
	// device refuses to co-sign (wire code "settle-refused").
	ErrRefused = errors.New("settler: device refused the settlement")
)

// Store is what the settlement service needs from the hub's store:
// epochs and runs, channel receipts, and charges for the hub's fees.
// Both hub stores satisfy it.
type Store interface {
	hub.SettlementStore
	// Channels returns every channel whose status is one of statuses.
	Channels(ctx context.Context, statuses ...hub.ChannelStatus) ([]hub.ChannelRecord, error)
	// Receipts returns up to limit stored receipts of a channel with
	// Seq >= from, in order.
	Receipts(ctx context.Context, op btcwire.OutPoint, from uint64, limit int) ([][]byte, error)
	// ChargesByProvider returns a provider's charges recorded in
	// [from, to), oldest first.
	ChargesByProvider(ctx context.Context, provider string, from, to time.Time) ([]hub.Charge, error)
	// ChargesPaid returns every charge whose paid time is in [from, to),
	// oldest paid first.
	ChargesPaid(ctx context.Context, from, to time.Time) ([]hub.Charge, error)
}

// Channels is what the settlement service needs from the channel
// manager. *channels.Manager satisfies it.
type Channels interface {
	// CutOpen runs cut with every open channel locked and returns them.
	CutOpen(ctx context.Context, cut func() error) ([]hub.Settleable, error)
	// OpenChannels returns every ready or frozen channel.
	OpenChannels(ctx context.Context) ([]hub.Settleable, error)
	// Channel returns a channel by funding outpoint, or ErrNotFound.
	Channel(ctx context.Context, op btcwire.OutPoint) (hub.ChannelRecord, error)
	// SettleKey returns the hub's private key of a channel.
	SettleKey(rec hub.ChannelRecord) (*btcec.PrivateKey, error)
	// Rollover stores a run and moves channels to their next outputs.
	Rollover(ctx context.Context, st hub.SettlementStore, r settlement.Run, pairs []hub.RolloverPair) ([]hub.ChannelRecord, error)
}

// Chain is what the settlement service needs from the base chain.
// btcdchain.HubChain satisfies it.
type Chain interface {
	// BlockCount returns the height of the best block.
	BlockCount(ctx context.Context) (int32, error)
	// GetTx returns a transaction from the mempool or the best chain, or
	// an error wrapping hub.ErrNotFound.
	GetTx(ctx context.Context, txid chainhash.Hash) (hub.TxInfo, error)
	// SendRawTransaction broadcasts tx.
	SendRawTransaction(ctx context.Context, tx *btcwire.MsgTx) (chainhash.Hash, error)
}

// CosignRequest is the hub's side of one device's cooperative signing: the
// fields of the SettleProposal wire message.
type CosignRequest struct {
	Epoch uint64
	// Channel is the channel's current funding outpoint.
	Channel btcwire.OutPoint
	// Template is the one-input, one-output transaction the device signs
	// (settlement.PlannedTx.CoopTemplate).
	Template     *btcwire.MsgTx
	NextCapacity int64
	NextExpiry   uint32
	// Spent is what the device paid in the epoch on this channel; Earned
	// what it earned as a provider, after fees (carried balances
	// included).
	Spent, Earned msat.Amount
	HubNonce      [musig2.PubNonceSize]byte
}

// CosignReply is the device's answer: the SettleSign wire message.
type CosignReply struct {
	DeviceNonce [musig2.PubNonceSize]byte
	PartialSig  [32]byte
}

// Done tells a device its channel moved: the SettleDone wire message.
type Done struct {
	Epoch        uint64
	Old, Next    btcwire.OutPoint
	NextCapacity int64
	NextExpiry   uint32
	Txid         chainhash.Hash
}

// Cosigners reaches devices for the cooperative round. The session-based
// implementation sends SettleProposal and waits for SettleSign; tests may
// sign in-process with the devices' keys.
type Cosigners interface {
	// Online reports whether deviceID can take part in a round now.
	Online(deviceID string) bool
	// Cosign asks deviceID to co-sign req and returns its nonce and
	// partial signature. It returns ErrRefused when the device
	// refuses, ctx's error on timeout, or a transport error.
	Cosign(ctx context.Context, deviceID string, req CosignRequest) (CosignReply, error)
	// Done tells deviceID, best effort, that its channel moved.
	Done(ctx context.Context, deviceID string, d Done)
}

// PayoutAddresses gives the on-chain payout script of a participant paid
// outside a channel (a provider without one, or earnings of an absent
// prosumer). A nil script with a nil error means none is registered: the
// earnings are carried.
type PayoutAddresses interface {
	PayoutScript(ctx context.Context, deviceID string) ([]byte, error)
}

// NonceUse is one public MuSig2 nonce the hub generated and the message it
// was generated for, reported to Config.NonceObserver.
type NonceUse struct {
	Channel btcwire.OutPoint
	Nonce   [musig2.PubNonceSize]byte
	Msg     [32]byte
}

// Defaults for Config.
const (
	DefaultRoundTimeout    = 30 * time.Second
	DefaultConfirmations   = 3
	DefaultCPFPAfter       = 3 // blocks without a confirmation before a fee bump
	DefaultSettleFeeRate   = settlement.FeeRate(2000)
	DefaultSettlePoll      = 5 * time.Second
	DefaultRoundWorkers    = 64
	DefaultReorgWatch      = 100 // blocks after confirmation a run is still watched
	defaultReceiptPage     = 1000
	defaultMaxRoundsPerRun = 8
)

// Config configures a Service. Zero values take the defaults.
type Config struct {
	// Store persists epochs and runs and holds receipts and charges.
	// Required.
	Store Store
	// Channels is the channel manager. Required.
	Channels Channels
	// Chain broadcasts and watches the batches. Required.
	Chain Chain
	// Cosigners runs the cooperative round with online devices.
	// Required.
	Cosigners Cosigners
	// Payouts gives payout scripts; nil carries every payout.
	Payouts PayoutAddresses
	// AuditHead returns the audit log head anchored with the receipts
	// root; nil anchors zeros.
	AuditHead func(ctx context.Context) ([32]byte, error)

	// RevenueScript receives the hub's revenue in every batch. Required.
	RevenueScript []byte
	// RevenueKey, when set, is the key of RevenueScript (a BIP 86
	// taproot output of it): the hub bumps a stuck batch by spending its
	// revenue output in a child paying CPFPFeeRate (CPFP). Without it no
	// fee bump is made.
	RevenueKey *btcec.PrivateKey

	FeeRate     settlement.FeeRate
	CPFPFeeRate settlement.FeeRate
	// CPFPAfter is how many blocks a batch may wait unconfirmed before
	// the child is sent; zero means DefaultCPFPAfter and a negative
	// value bumps at the first check (regtest mines every relayable
	// transaction, so tests cannot make a batch wait).
	CPFPAfter int
	// CutRule is the settlement period; zero settles on demand only.
	CutRule settlement.CutRule
	// RoundTimeout bounds each device's answer in the cooperative round.
	RoundTimeout time.Duration
	// RoundWorkers bounds the devices asked at once.
	RoundWorkers int
	// Confirmations a batch needs before its run is confirmed.
	Confirmations uint32
	// ExpiryMargin settles a channel whatever its value when its expiry
	// is this close.
	ExpiryMargin uint32
	// PollInterval is how often the chain is checked and the cut rule
	// evaluated.
	PollInterval time.Duration

	Clock  clock.Clock
	Logger *slog.Logger

	// NonceObserver, when set, sees every public nonce the hub generates
	// and the message it signs with it (tests check no nonce signs two
	// messages).
	NonceObserver func(NonceUse)
	// Lease, when set, elects the one instance of the hubs sharing the
	// store that runs settlement: only the holder polls, cuts and drives
	// runs, and every settlement write carries its fencing token
	// (hub.WithFence), so a former leader's writes are refused with
	// hub.ErrFenced. Nil: this instance always leads (one hub).
	Lease hub.LeaderLease
	// Instance names this instance in the lease. Required with Lease.
	Instance string
	// LeaseTTL is the lease's lifetime; zero means DefaultLeaseTTL.
	LeaseTTL time.Duration

	// AfterState, when set, runs after every durable state change of a
	// run; an error stops the run there, as a crash would (tests).
	AfterState func(settlement.Run) error
}

func (c *Config) setDefaults() error {
	switch {
	case c.Store == nil, c.Channels == nil, c.Chain == nil, c.Cosigners == nil:
		return fmt.Errorf("%w: settlement: store, channels, chain and cosigners are required", hub.ErrInvalid)
	case len(c.RevenueScript) == 0:
		return fmt.Errorf("%w: settlement: no revenue script", hub.ErrInvalid)
	}
	if c.RevenueKey != nil {
		out := txscript.ComputeTaprootKeyNoScript(c.RevenueKey.PubKey())
		want, err := txscript.PayToTaprootScript(out)
		if err != nil || !bytes.Equal(want, c.RevenueScript) {
			return fmt.Errorf("%w: settlement: revenue key does not own the revenue script", hub.ErrInvalid)
		}
	}
	if c.FeeRate <= 0 {
		c.FeeRate = DefaultSettleFeeRate
	}
	if c.CPFPFeeRate <= 0 {
		c.CPFPFeeRate = 5 * c.FeeRate
	}
	if c.CPFPAfter == 0 {
		c.CPFPAfter = DefaultCPFPAfter
	}
	if c.RoundTimeout <= 0 {
		c.RoundTimeout = DefaultRoundTimeout
	}
	if c.RoundWorkers <= 0 {
		c.RoundWorkers = DefaultRoundWorkers
	}
	if c.Confirmations == 0 {
		c.Confirmations = DefaultConfirmations
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultSettlePoll
	}
	if c.Lease != nil && c.Instance == "" {
		return fmt.Errorf("%w: settlement: a lease needs an instance id", hub.ErrInvalid)
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Clock == nil {
		c.Clock = clock.NewDefaultClock()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Service runs the hub's settlement: it cuts epochs (on the CutRule and
// on demand), plans each epoch's batch from the store, runs the
// cooperative round, persists the signed batch before broadcasting it,
// moves the channels to their next outputs, and follows the batch until it
// is confirmed, bumping its fee and surviving reorgs. Every step is a
// durable state of a settlement.Run, so a restarted hub resumes where the
// last one stopped and an epoch settles once; see docs/settlement-run.md.
type Service struct {
	cfg   Config
	store Store
	log   *slog.Logger
	clock clock.Clock

	// mu serialises every step of every run: one run moves at a time,
	// whether driven by the loop, by Settle or by Begin's goroutine.
	mu sync.Mutex
	// busy is set while this process drives a run from its cut (or
	// resumption) to broadcast, so a request arriving meanwhile is
	// answered ErrRunOpen at once instead of waiting on mu and then
	// cutting another epoch. It is taken before mu, never while
	// holding it and waiting. Across processes the store's CutEpoch
	// refuses a cut while the previous run is open.
	busy atomic.Bool
	// sentAt is the height at which each batch transaction was first seen
	// broadcast by this process, and bumped the CPFP child of each; both are
	// rebuilt after a restart (a restart delays a bump, never repeats a
	// settlement).
	sentAt map[chainhash.Hash]uint32
	bumped map[chainhash.Hash]*chainhash.Hash // nil: no bump possible
	// told are the epochs whose devices this process has told their
	// channels moved (Cosigners.Done): at its broadcast, or when it
	// follows a run another process broadcast (a leader killed before
	// telling them, on another instance).
	told map[uint64]bool

	// lease is the settlement lease this instance holds (nil: none);
	// wake makes the loop poll at once (after an acquisition).
	lease atomic.Pointer[held]
	wake  chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// New returns a settlement service. Call Start to run its loop,
// or drive it with Settle and Poll.
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg: cfg, store: cfg.Store, log: cfg.Logger, clock: cfg.Clock,
		sentAt: make(map[chainhash.Hash]uint32), bumped: make(map[chainhash.Hash]*chainhash.Hash),
		told: make(map[uint64]bool),
		wake: make(chan struct{}, 1),
		ctx:  ctx, cancel: cancel,
	}, nil
}

// Start launches the loop: every PollInterval it resumes an unfinished
// run, follows broadcast and confirmed batches, and cuts the epoch when
// the CutRule says so.
func (s *Service) Start() {
	s.startOnce.Do(func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.loop()
		}()
		if s.leased() {
			// Try once before the loop starts, so a lone hub (or
			// the first of several) leads as soon as Start returns.
			s.leaseStep(s.cfg.LeaseTTL)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.keepLease()
			}()
		}
	})
}

// Close stops the loop and waits for it; a run in progress stops at its
// last durable state and resumes at the next start.
func (s *Service) Close() error {
	s.closeOnce.Do(s.cancel)
	s.wg.Wait()
	return nil
}

func (s *Service) loop() {
	t := s.clock.TickAfter(0)
	// The first poll runs at once: drop the wake-up of a lease taken in
	// Start.
	select {
	case <-s.wake:
	default:
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t:
		case <-s.wake:
		}
		if err := s.Poll(s.ctx); err != nil && s.ctx.Err() == nil && !errors.Is(err, hub.ErrNotLeader) {
			s.log.Warn("settlement poll", "err", err)
		}
		t = s.clock.TickAfter(s.cfg.PollInterval)
	}
}

// Settle cuts the open epoch now and runs its settlement up to broadcast,
// after finishing any run left unfinished, and returns the new run. It
// returns an error wrapping ErrRunOpen while another run is under way
// (driven by this process, or not settled yet in the store).
func (s *Service) Settle(ctx context.Context) (settlement.Run, error) {
	if s.ctx.Err() != nil {
		return settlement.Run{}, ErrClosed
	}
	ctx, err := s.fenced(ctx)
	if err != nil {
		return settlement.Run{}, err
	}
	if !s.busy.CompareAndSwap(false, true) {
		return settlement.Run{}, fmt.Errorf("%w: this hub is driving a run", hub.ErrRunOpen)
	}
	defer s.busy.Store(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resume(ctx); err != nil {
		return settlement.Run{}, err
	}
	return s.cutAndRun(ctx)
}

// Begin cuts the open epoch now, stores its run and returns it as soon as
// it is durable: planned, with the rest of the run (signing round,
// broadcast) going on in the background, or empty when the epoch has
// nothing to settle on chain. It returns an error wrapping ErrRunOpen
// while another run is under way, including one left unfinished (the loop
// resumes that one), without waiting for it.
func (s *Service) Begin(ctx context.Context) (settlement.Run, error) {
	if s.ctx.Err() != nil {
		return settlement.Run{}, ErrClosed
	}
	ctx, err := s.fenced(ctx)
	if err != nil {
		return settlement.Run{}, err
	}
	runCtx, err := s.fenced(s.ctx)
	if err != nil {
		return settlement.Run{}, err
	}
	if !s.busy.CompareAndSwap(false, true) {
		return settlement.Run{}, fmt.Errorf("%w: this hub is driving a run", hub.ErrRunOpen)
	}
	s.mu.Lock()
	r, chans, err := s.cut(ctx)
	s.mu.Unlock()
	if err != nil || r.State != settlement.RunPlanned {
		s.busy.Store(false)
		if err != nil {
			return settlement.Run{}, err
		}
		return *r, nil
	}
	started := *r
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		// Free before mu: whoever takes mu next finds no run driven.
		defer s.busy.Store(false)
		// The service's context, not the request's: the run outlives
		// the answer. Close stops it at its last durable state.
		if _, err := s.drive(runCtx, r, chans); err != nil && s.ctx.Err() == nil {
			s.log.Warn("settlement run stopped; the loop resumes it", "epoch", r.Epoch.Number, "err", err)
		}
	}()
	return started, nil
}

// Poll runs one step of the loop: resume an unfinished run, follow the
// chain, and cut the epoch if the CutRule is due. Following does not
// depend on the resumption: a run that cannot go on never hides another
// run's confirmation.
func (s *Service) Poll(ctx context.Context) error {
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only the leader polls; the fencing token is taken under mu, so a
	// poll after a lost lease writes nothing.
	ctx, err := s.fenced(ctx)
	if err != nil {
		return err
	}
	var resumeErr error
	if s.busy.CompareAndSwap(false, true) {
		resumeErr = s.resume(ctx)
		s.busy.Store(false)
	}
	if err := s.follow(ctx); err != nil {
		return errors.Join(resumeErr, err)
	}
	if resumeErr != nil {
		return resumeErr
	}
	open, err := s.openEpoch(ctx)
	if err != nil {
		return err
	}
	height, err := s.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return err
	}
	if !s.cfg.CutRule.Due(open, s.clock.Now(), uint32(height)) || !s.busy.CompareAndSwap(false, true) {
		return nil
	}
	defer s.busy.Store(false)
	_, err = s.cutAndRun(ctx)
	if errors.Is(err, hub.ErrRunOpen) {
		// Another hub sharing the store runs the previous epoch.
		return nil
	}
	return err
}

// Run returns the latest run of an epoch, or ErrNotFound.
func (s *Service) Run(ctx context.Context, epoch uint64) (settlement.Run, error) {
	return s.store.Run(ctx, epoch)
}

// openEpoch returns the open epoch, storing the first one if there is
// none yet.
func (s *Service) openEpoch(ctx context.Context) (settlement.Epoch, error) {
	open, err := s.store.OpenEpoch(ctx)
	if !errors.Is(err, hub.ErrNotFound) {
		return open, err
	}
	height, err := s.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return settlement.Epoch{}, err
	}
	// The first epoch opens now, and holds every payment made before
	// too (settlement.Epoch.From), so a hub that ran before settlement
	// was switched on settles its history.
	first := settlement.FirstEpoch(cutTime(s.clock.Now()), uint32(height))
	if err := s.store.CutEpoch(ctx, settlement.Epoch{}, first); err != nil && !errors.Is(err, hub.ErrEpochConflict) {
		return settlement.Epoch{}, err
	}
	return s.store.OpenEpoch(ctx)
}

// cutTime truncates a cut to the millisecond, the precision of receipt
// times, so a receipt's epoch is decided by the same numbers everywhere.
func cutTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// cutAndRun cuts the open epoch with every channel locked and runs the
// closed epoch up to broadcast (or records it empty).
func (s *Service) cutAndRun(ctx context.Context) (settlement.Run, error) {
	r, chans, err := s.cut(ctx)
	if err != nil {
		return settlement.Run{}, err
	}
	if r.State != settlement.RunPlanned {
		return *r, nil
	}
	return s.drive(ctx, r, chans)
}

// cut cuts the open epoch with every channel locked and stores the closed
// epoch's first run: planned, or empty when its plan has no transaction
// (then it is final: nothing is signed, broadcast or announced). The store
// refuses the cut with ErrRunOpen while the previous run is open.
func (s *Service) cut(ctx context.Context) (*settlement.Run, []hub.Settleable, error) {
	open, err := s.openEpoch(ctx)
	if err != nil {
		return nil, nil, err
	}
	height, err := s.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return nil, nil, err
	}
	var closed settlement.Epoch
	chans, err := s.cfg.Channels.CutOpen(ctx, func() error {
		c, next, err := open.Cut(cutAt(s.clock.Now(), open), max(uint32(height), open.StartHeight))
		if err != nil {
			return err
		}
		closed = c
		return s.store.CutEpoch(ctx, c, next)
	})
	if err != nil {
		return nil, nil, err
	}
	s.log.Info("epoch cut", "epoch", closed.Number, "end", closed.End, "height", closed.EndHeight, "channels", len(chans))
	r := settlement.NewRun(closed, 1, s.clock.Now().UTC())
	// Plan once before anything is announced: an epoch with nothing to
	// move on chain is recorded empty and no planned run is ever seen.
	p, err := s.prepare(ctx, closed, chans)
	if err != nil {
		return nil, nil, err
	}
	if len(p.plan.Txs) == 0 {
		if err := s.empty(ctx, r, p); err != nil {
			return nil, nil, err
		}
		return r, nil, nil
	}
	if err := s.put(ctx, *r); err != nil {
		return nil, nil, err
	}
	return r, chans, nil
}

// cutAt is the time of a cut of open at now: truncated to the millisecond,
// the precision of receipt times, so a receipt's epoch is decided by the
// same numbers everywhere, and never before the epoch's start.
func cutAt(now time.Time, open settlement.Epoch) time.Time {
	t := cutTime(now)
	if t.Before(open.Start) {
		return open.Start
	}
	return t
}

// empty records r, whose plan has no transaction, as empty with its
// closing: the balances carry into the next epoch, nothing goes on chain.
func (s *Service) empty(ctx context.Context, r *settlement.Run, p *prepared) error {
	closing, _, err := p.el.ledger.Close(p.plan.Settled)
	if err != nil {
		return fmt.Errorf("close epoch %d: %w", r.Epoch.Number, err)
	}
	r.Anchor, r.Closing, r.Fee, r.Txs = p.anchor, closing, 0, nil
	if err := s.transition(ctx, r, settlement.RunEmpty); err != nil {
		return err
	}
	s.log.Info("settlement empty: nothing to settle on chain", "epoch", r.Epoch.Number,
		"receipts", p.el.receipts, "carried", len(p.plan.Carried))
	return nil
}

// resume finishes the latest closed epoch's run if it stopped before
// broadcast (a crash, or a closed epoch whose run was never stored).
func (s *Service) resume(ctx context.Context) error {
	eps, err := s.store.Epochs(ctx, 2)
	if err != nil {
		return err
	}
	var closed *settlement.Epoch
	for i := range eps {
		if !eps[i].Open() {
			closed = &eps[i]
			break
		}
	}
	if closed == nil {
		return nil
	}
	r, err := s.store.Run(ctx, closed.Number)
	switch {
	case errors.Is(err, hub.ErrNotFound):
		// Crashed between the cut and the first run record.
		r = *settlement.NewRun(*closed, 1, s.clock.Now().UTC())
		if err := s.put(ctx, r); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	switch {
	case r.State.Settled():
		return nil
	case r.State.Final():
		s.log.Warn("settlement run is final without settling; starting a new attempt",
			"epoch", r.Epoch.Number, "attempt", r.Attempt, "state", r.State, "error", r.Error)
		r = *settlement.NewRun(r.Epoch, r.Attempt+1, s.clock.Now().UTC())
		if err := s.put(ctx, r); err != nil {
			return err
		}
	}
	s.log.Info("resuming settlement run", "epoch", r.Epoch.Number, "attempt", r.Attempt, "state", r.State)
	var chans []hub.Settleable
	if r.State != settlement.RunSigned {
		// Nothing was broadcast: plan again from the store with fresh
		// nonces. The ledger is by receipt time, so it is the same
		// ledger the first attempt built.
		if chans, err = s.cfg.Channels.OpenChannels(ctx); err != nil {
			return err
		}
	}
	_, err = s.drive(ctx, &r, chans)
	return err
}

// put stores r and runs the AfterState hook.
func (s *Service) put(ctx context.Context, r settlement.Run) error {
	if err := s.store.PutRun(ctx, r); err != nil {
		return fmt.Errorf("store run %d/%d %s: %w", r.Epoch.Number, r.Attempt, r.State, err)
	}
	return s.after(r)
}

func (s *Service) after(r settlement.Run) error {
	if s.cfg.AfterState != nil {
		return s.cfg.AfterState(r)
	}
	return nil
}

// transition moves r to state to and stores it.
func (s *Service) transition(ctx context.Context, r *settlement.Run, to settlement.RunState) error {
	if err := r.Transition(to, s.clock.Now().UTC()); err != nil {
		return err
	}
	return s.put(ctx, *r)
}

// drive moves r from planned, signing or signed to broadcast.
func (s *Service) drive(ctx context.Context, r *settlement.Run, chans []hub.Settleable) (settlement.Run, error) {
	if r.State == settlement.RunSigning {
		// The nonces of the interrupted round are gone with the
		// process; a new round draws new ones.
		if err := s.transition(ctx, r, settlement.RunPlanned); err != nil {
			return *r, err
		}
	}
	if r.State == settlement.RunPlanned {
		if err := s.planAndSign(ctx, r, chans); err != nil {
			return *r, err
		}
	}
	if r.State == settlement.RunSigned {
		if err := s.broadcast(ctx, r); err != nil {
			return *r, err
		}
	}
	return *r, nil
}
