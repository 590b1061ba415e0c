package m2mclient

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
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Device errors. Callers test them with errors.Is; hub refusals come as
// *ChannelError (errors.As).
var (
	// ErrOffline means the Device has no session (NewDevice was given
	// none): only local operations (Balance, History, Refund) work.
	ErrOffline = errors.New("m2mclient: device has no hub session")
	// ErrNotReady means the channel is not in a state that allows the
	// operation (not funded yet, closing, closed).
	ErrNotReady = errors.New("m2mclient: channel not ready")
	// ErrBadOffer means the hub offered a channel whose key or script does
	// not derive from the pinned hub key and the device's own terms; the
	// device must not fund it.
	ErrBadOffer = errors.New("m2mclient: hub offer does not verify")
	// ErrBadReceipt means the hub acknowledged a payment with a receipt
	// that does not verify or does not describe the payment.
	ErrBadReceipt = errors.New("m2mclient: bad receipt")
	// ErrBadProposal means the hub's close transaction does not pay the
	// device what it is owed; the device did not sign it.
	ErrBadProposal = errors.New("m2mclient: close proposal refused")
	// ErrDeviceClosed means Close was called.
	ErrDeviceClosed = errors.New("m2mclient: device closed")
)

// Channel error codes the hub sends (docs/protocol.md has the meaning of
// each). They are the Code of a *ChannelError.
const (
	CodeUnknownChannel  = string(wire.ChanUnknownChannel)
	CodeNotReady        = string(wire.ChanNotReady)
	CodeFrozen          = string(wire.ChanFrozen)
	CodeChannelClosed   = string(wire.ChanClosed)
	CodeStaleState      = string(wire.ChanStaleState)
	CodeSeqGap          = string(wire.ChanSeqGap)
	CodeBadAmount       = string(wire.ChanBadAmount)
	CodeOverCapacity    = string(wire.ChanOverCapacity)
	CodeBadSignature    = string(wire.ChanBadSignature)
	CodeUnknownPayee    = string(wire.ChanUnknownPayee)
	CodeHoldExceeded    = string(wire.ChanHoldExceeded)
	CodeHoldExpired     = string(wire.ChanHoldExpired)
	CodeHoldUnknown     = string(wire.ChanHoldUnknown)
	CodeCreditLimit     = string(wire.ChanCreditLimit)
	CodeRateLimited     = string(wire.ChanRateLimited)
	CodeFundingMismatch = string(wire.ChanFundingMismatch)
	CodePolicyRefused   = string(wire.ChanPolicyRefused)
	CodeBusy            = string(wire.ChanBusy)
	CodeHoldActive      = string(wire.ChanHoldActive)
	CodeCreditOwed      = string(wire.ChanCreditOwed)
	CodeClosing         = string(wire.ChanClosing)
	CodePayerOffline    = string(wire.ChanPayerOffline)
	CodeHoldIDInUse     = string(wire.ChanHoldIDInUse)
	CodeMalformed       = string(wire.ChanMalformed)
	CodeCloseUnknown    = string(wire.ChanCloseUnknown)
	CodeRequestUnknown  = string(wire.ChanRequestUnknown)
)

// Refusals a *ChannelError matches with errors.Is, one per code whose
// reaction differs from a plain failure. ErrTemporary matches every code
// after which the same request may succeed unchanged later
// (wire.ChanCode.Retryable); nothing else is worth retrying as it is.
var (
	// ErrTemporary: retry the same request after a backoff.
	ErrTemporary = errors.New("m2mclient: temporary refusal")
	// ErrBusy: the hub is overloaded (temporary).
	ErrBusy = errors.New("m2mclient: hub busy")
	// ErrRateLimited: the device sent too many requests (temporary).
	ErrRateLimited = errors.New("m2mclient: rate limited")
	// ErrClosing: a cooperative close of the channel is being
	// negotiated; payments resume if it fails (temporary).
	ErrClosing = errors.New("m2mclient: channel closing")
	// ErrHoldActive: a close was refused because holds are active;
	// they must be released or expire first.
	ErrHoldActive = errors.New("m2mclient: channel has active holds")
	// ErrCreditOwed: a close was refused because the hub gave service
	// on credit that no signed state covers yet; any payment on the
	// channel pays it down.
	ErrCreditOwed = errors.New("m2mclient: credit owed on channel")
	// ErrPayerOffline: a hold request found the payer without a session
	// (temporary).
	ErrPayerOffline = errors.New("m2mclient: payer offline")
)

// codeErrors maps the codes above to their sentinel.
var codeErrors = map[string]error{
	CodeBusy: ErrBusy, CodeRateLimited: ErrRateLimited, CodeClosing: ErrClosing,
	CodeHoldActive: ErrHoldActive, CodeCreditOwed: ErrCreditOwed, CodePayerOffline: ErrPayerOffline,
}

// ChannelError is a hub's refusal of a channel operation. Test for it with
// errors.As, or for its kind with errors.Is (ErrTemporary, ErrClosing …).
type ChannelError struct {
	Code    string
	Message string
}

// Error describes the refusal.
func (e *ChannelError) Error() string {
	return fmt.Sprintf("m2mclient: hub refused: %s: %s", e.Code, e.Message)
}

// Is matches the sentinel of e's code, and ErrTemporary for every code
// after which retrying unchanged may succeed.
func (e *ChannelError) Is(target error) bool {
	if target == ErrTemporary {
		return e.Temporary()
	}
	s, ok := codeErrors[e.Code]
	return ok && s == target
}

// Temporary reports whether the same request may succeed when sent again
// unchanged after a pause (docs/protocol.md, the code table).
func (e *ChannelError) Temporary() bool { return wire.ChanCode(e.Code).Retryable() }

// DefaultRequestTimeout bounds a wait for the hub's answer when the
// caller's context has no deadline.
const DefaultRequestTimeout = 30 * time.Second

// DeviceConfig configures NewDevice.
type DeviceConfig struct {
	// Key is the device's identity key, the one its Session proves.
	Key *btcec.PrivateKey
	// HubKey is the hub's pinned identity key. Channel keys the hub offers
	// and receipts it signs are checked against it.
	HubKey *btcec.PublicKey
	// Params is the bitcoin network (funding addresses are encoded for
	// it).
	Params *chaincfg.Params
	// Store keeps the device's channels. Nil selects a FileStore in Dir.
	Store ChannelStore
	// Dir is the FileStore's directory when Store is nil.
	Dir string
	// Policy bounds what the device signs.
	Policy Policy
	// AutoAuthorize signs every hold the hub forwards that Policy allows.
	AutoAuthorize bool
	// OnHold, when set, decides holds Policy allows (AutoAuthorize is then
	// ignored). It runs on its own goroutine and must return promptly;
	// the provider is waiting.
	OnHold func(HoldRequest) bool
	// OnPaymentRequest, when set, decides payment requests that do not
	// capture a hold the device signed; without it they are paid whenever
	// Policy allows. Captures are paid when they fit their hold and
	// Policy, without asking.
	OnPaymentRequest func(PaymentRequest) bool
	// MaxCloseFee bounds the part of a cooperative close's fee the device
	// accepts to pay (only when the hub's own share cannot cover it).
	// Zero means DefaultMaxCloseFee.
	MaxCloseFee btcutil.Amount
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock drives the policy window and hold expiry. Defaults to the
	// wall clock.
	Clock clock.Clock
	// Router, when set, is the Router of the Session that a Provider of
	// the same identity also uses (a prosumer). Nil gives the Device a
	// Router of its own, and the Device must then be the only consumer
	// of the Session.
	Router *Router
	// OnSettle, when set, may veto a settlement proposal that passed every
	// check (see settle.go); returning false refuses it with
	// "settle-refused". It runs on its own goroutine and must return
	// promptly: the hub's round is waiting.
	OnSettle func(SettleProposal) bool
	// Earnings, when set, returns what this device earned as a provider
	// in the epoch, after fees and the shares its contracts' revenue
	// splits pay others, plus its own shares of other providers' charges
	// (Meter.Income's Shares), as its own records (for example the
	// receipts its Provider received) justify, for the hub's Earned
	// figure to be checked against. Nil means a payer-only device: it
	// expects to have earned nothing.
	Earnings func(ctx context.Context, epoch uint64) (msat.Amount, error)
}

// DefaultMaxCloseFee is the default DeviceConfig.MaxCloseFee.
const DefaultMaxCloseFee btcutil.Amount = 5000

// devChannel is one channel in memory.
type devChannel struct {
	// op serialises the operations that talk to the hub about this
	// channel (pay, close): each signs on top of the previous state, and
	// the hub's answers are matched by channel. Payments the hub asked
	// for take it first (opLock).
	op opLock

	mu  sync.Mutex // guards st; held across Save so saves stay ordered
	st  *ChannelState
	out *channel.Output
	// auths counts the holds authorised on the channel by this process;
	// authsAsked is its value when the device last asked for the hub's
	// state (ChannelSync or Pay), so a ChannelState answering that request
	// knows which holds the hub had the chance to see (see syncHolds).
	auths, authsAsked uint64
	// synced says the device compared its record with the hub's state
	// (a ChannelState it checked) since this process loaded the record,
	// or created the record itself. A record loaded from the store may
	// miss a pending state lost with the writes a power loss undid (see
	// FileStore), so a Pay on it asks the hub first. Guarded by mu.
	synced bool
}

// waitKey names what a waiting call expects an answer about.
type waitKey struct {
	kind    byte // 'r' req id, 'p' pending id, 'c' channel, 'h' hold id
	req     uint64
	pending [32]byte
	chanID  btcwire.OutPoint
	hold    [16]byte
}

// waiters routes hub answers to the calls waiting for them. The Device and
// the Provider of one Session share their Router's.
type waiters struct {
	mu sync.Mutex
	m  map[waitKey]chan wire.Message
}

func (w *waiters) add(k waitKey) (<-chan wire.Message, func()) {
	ch := make(chan wire.Message, 4)
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[waitKey]chan wire.Message)
	}
	w.m[k] = ch
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		if w.m[k] == ch {
			delete(w.m, k)
		}
		w.mu.Unlock()
	}
}

// deliver hands msg to the waiter under k, reporting whether there was one.
// It never blocks: a waiter gets at most a few answers and reads them.
func (w *waiters) deliver(k waitKey, msg wire.Message) bool {
	w.mu.Lock()
	ch, ok := w.m[k]
	w.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case ch <- msg:
	default:
	}
	return true
}

// deliverError routes a ChannelError by the ids it carries, most specific
// first.
func (w *waiters) deliverError(e *wire.ChannelError) bool {
	switch {
	case e.ReqID != nil && w.deliver(waitKey{kind: 'r', req: *e.ReqID}, e):
	case e.PendingID != nil && w.deliver(waitKey{kind: 'p', pending: *e.PendingID}, e):
	case e.HoldID != nil && w.deliver(waitKey{kind: 'h', hold: *e.HoldID}, e):
	case e.ChanID != nil && w.deliver(waitKey{kind: 'c', chanID: *e.ChanID}, e):
	default:
		return false
	}
	return true
}

// Device is the payer side of m2mhub channels: it opens and funds channels,
// pays within its Policy, answers the hub's hold and payment requests, and
// closes or refunds channels. Its state lives in a ChannelStore so that it
// survives restarts; every signature is saved before it is sent.
type Device struct {
	cfg     DeviceConfig
	s       *Session
	log     *slog.Logger
	limiter *Limiter
	w       *waiters
	// receipts checks the receipts of the device's payments against
	// cfg.HubKey.
	receipts *channel.ReceiptVerifier

	// r reads the Session (nil offline); ownRouter means the Device
	// created it and closes it; detach stops its handler.
	r         *Router
	ownRouter bool
	detach    func()
	// ownStore is the FileStore the Device made from cfg.Dir, which
	// Close closes (a Store given in the config is the caller's).
	ownStore *FileStore
	// unhook stops the resynchronisation at each reconnect.
	unhook func()

	// settle remembers the proposals signed and not yet done, by channel
	// (see settle.go). Nothing in it is secret: the nonces are gone.
	settleMu sync.Mutex
	settle   map[btcwire.OutPoint]signedSettle

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	chans   map[[32]byte]*devChannel // by pending id
	byID    map[btcwire.OutPoint]*devChannel
	nextReq uint64
	// closedHolds are the holds the hub reported closed; ids are random
	// and never reused, so a hold listed in a later-applied ChannelState
	// is not brought back (see syncHolds).
	closedHolds map[[16]byte]bool
}

// NewDevice loads the device's channels from the store and, when s is not
// nil, starts serving the hub's messages on s; Close stops it. The Device
// reads s through cfg.Router, or a Router of its own when that is nil. With
// a nil session the Device works offline: Balance, History and Refund need no hub, which is what a
// device whose hub has vanished needs.
func NewDevice(s *Session, cfg DeviceConfig) (*Device, error) {
	switch {
	case cfg.Key == nil || cfg.HubKey == nil || cfg.Params == nil:
		return nil, errors.New("m2mclient: device key, hub key and chain params are required")
	case cfg.Store == nil && cfg.Dir == "":
		return nil, errors.New("m2mclient: a store or a directory is required")
	}
	if s != nil && !s.deviceKey.PubKey().IsEqual(cfg.Key.PubKey()) {
		return nil, errors.New("m2mclient: device key differs from the session's")
	}
	// A FileStore holds no open file before its first save, so the
	// returns below need not close it.
	var own *FileStore
	if cfg.Store == nil {
		fs, err := NewFileStore(cfg.Dir)
		if err != nil {
			return nil, err
		}
		cfg.Store, own = fs, fs
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.MaxCloseFee == 0 {
		cfg.MaxCloseFee = DefaultMaxCloseFee
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Device{
		cfg: cfg, s: s, log: cfg.Logger, limiter: NewLimiter(cfg.Policy, cfg.Clock), ownStore: own,
		receipts: channel.NewReceiptVerifier(cfg.HubKey),
		ctx:      ctx, cancel: cancel,
		chans: make(map[[32]byte]*devChannel), byID: make(map[btcwire.OutPoint]*devChannel),
		settle:      make(map[btcwire.OutPoint]signedSettle),
		closedHolds: make(map[[16]byte]bool),
		w:           new(waiters),
		// Request ids only need to be unique among this process's
		// outstanding requests; starting from the clock keeps a restarted
		// device from matching a stale answer to a new request.
		nextReq: uint64(cfg.Clock.Now().UnixNano()),
	}
	states, err := cfg.Store.Load(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	for i := range states {
		if err := d.addChannel(&states[i], false); err != nil {
			cancel()
			return nil, err
		}
	}
	if s != nil {
		r, owned, err := routerFor(s, cfg.Router)
		if err != nil {
			cancel()
			return nil, err
		}
		d.r, d.ownRouter, d.w = r, owned, &r.w
		d.detach = r.attach(d.handle)
		// Learn the hub's state of every channel now and after each
		// reconnect, so a device restored from an older copy of its
		// store resumes without first failing a payment, and finish
		// the closes a lost connection interrupted.
		d.unhook = s.onConnect(func() { d.spawn(d.atConnect) })
		if s.Connected() {
			d.spawn(d.atConnect)
		}
	}
	return d, nil
}

// atConnect resumes what a lost connection interrupted: it asks for the
// hub's state of every ready channel and sends the close signature of
// every closing one again.
func (d *Device) atConnect() {
	d.requestSync()
	d.resendCloseSigns()
}

// Close stops serving the hub's messages and waits for the handlers under
// way, and closes the FileStore it made from DeviceConfig.Dir. It does not
// close the Session, which the caller owns, nor a Router or Store passed
// in DeviceConfig.
func (d *Device) Close() error {
	// Detach first: once it returns no handler can spawn another
	// goroutine, so the wait below is final.
	if d.detach != nil {
		d.detach()
	}
	if d.unhook != nil {
		d.unhook()
	}
	d.cancel()
	d.wg.Wait()
	var errs []error
	if d.ownRouter {
		errs = append(errs, d.r.Close())
	}
	if d.ownStore != nil {
		errs = append(errs, d.ownStore.Close())
	}
	return errors.Join(errs...)
}

// addChannel indexes a loaded or new channel record; created says this
// process made it (see devChannel.synced).
func (d *Device) addChannel(st *ChannelState, created bool) error {
	out, err := channel.NewOutput(st.Params(d.cfg.Key.PubKey()))
	if err != nil {
		return fmt.Errorf("m2mclient: channel %x: %w", st.PendingID, err)
	}
	c := &devChannel{st: st, out: out, synced: created}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.chans[st.PendingID] = c
	if st.Funding != (btcwire.OutPoint{}) {
		d.byID[st.Funding] = c
	}
	return nil
}

func (d *Device) channel(id btcwire.OutPoint) (*devChannel, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrUnknownChannel, id)
	}
	return c, nil
}

// channelCopy returns a snapshot of the channel's record.
func (d *Device) channelCopy(id btcwire.OutPoint) (*ChannelState, error) {
	c, err := d.channel(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.clone(), nil
}

// save persists c.st; c.mu must be held.
func (d *Device) save(ctx context.Context, c *devChannel) error {
	return d.cfg.Store.Save(context.WithoutCancel(ctx), *c.st)
}

// savePending writes c.st with a pending payment, deferring its fsync when
// the store can (DeferredSaver); the caller calls done once, as
// DeferredSaver says. c.mu must be held.
func (d *Device) savePending(ctx context.Context, c *devChannel) (done func(sync bool) error, err error) {
	if ds, ok := d.cfg.Store.(DeferredSaver); ok {
		return ds.SaveDeferred(context.WithoutCancel(ctx), *c.st)
	}
	if err := d.save(ctx, c); err != nil {
		return nil, err
	}
	return func(bool) error { return nil }, nil
}

func (d *Device) reqID() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextReq++
	return d.nextReq
}

// send writes msg to the hub.
func (d *Device) send(ctx context.Context, msg wire.Message) error {
	if d.s == nil {
		return ErrOffline
	}
	return d.s.Send(ctx, msg)
}

// await waits for one answer on ch, bounded by ctx (or
// DefaultRequestTimeout when ctx has no deadline), by Close and by the
// loss of the connection the request went out on: the hub answers on that
// connection only, so the wait ends with an error wrapping ErrNotConnected
// and the caller's retry (or the resynchronisation at reconnect) resolves
// what the answer would have.
func (d *Device) await(ctx context.Context, ch <-chan wire.Message) (wire.Message, error) {
	if d.s == nil {
		return await(ctx, d.ctx, ch)
	}
	return awaitConn(ctx, d.ctx, d.r, d.s.lost(), ch)
}

// errConnLost ends a wait whose connection dropped.
var errConnLost = fmt.Errorf("%w: connection lost while waiting for the hub", ErrNotConnected)

func await(ctx, owner context.Context, ch <-chan wire.Message) (wire.Message, error) {
	return awaitConn(ctx, owner, nil, nil, ch)
}

// awaitConn is await that also ends when life's connection does, once r
// has dispatched every message read from it. A nil life never ends.
func awaitConn(ctx, owner context.Context, r *Router, life *connLife, ch <-chan wire.Message) (wire.Message, error) {
	var lost <-chan struct{}
	if life != nil {
		lost = life.done
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRequestTimeout)
		defer cancel()
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("m2mclient: waiting for the hub: %w", ctx.Err())
	case <-owner.Done():
		return nil, ErrDeviceClosed
	case <-lost:
		// An answer read before the loss still counts.
		if err := r.caughtUp(ctx, life.queued); err != nil {
			return nil, fmt.Errorf("m2mclient: waiting for the hub: %w", err)
		}
		select {
		case m := <-ch:
			return m, nil
		default:
			return nil, errConnLost
		}
	}
}

// asError turns a hub ChannelError into the caller's *ChannelError.
func asError(m *wire.ChannelError) *ChannelError {
	return &ChannelError{Code: string(m.Code), Message: m.Message}
}

// handle takes the hub's messages that are not answers to a waiting call
// (the Router delivers those). Requests (holds, payment requests,
// settlement proposals) get a goroutine each, because answering them may
// itself wait for the hub.
func (d *Device) handle(msg wire.Message) bool {
	switch m := msg.(type) {
	case *wire.ChannelClosed:
		d.markClosed(m)
	case *wire.HoldRequest:
		d.spawn(func() { d.onHoldRequest(m) })
	case *wire.PaymentRequest:
		d.spawn(func() { d.onPaymentRequest(m) })
	case *wire.HoldClosed:
		d.onHoldClosed(m)
	case *wire.SettleProposal:
		d.spawn(func() { d.onSettleProposal(m) })
	case *wire.SettleDone:
		d.spawn(func() { d.onSettleDone(m) })
	case *wire.ChannelError:
		if m.Code == wire.ChanCloseUnknown {
			d.onCloseUnknown(m)
			return true
		}
		return d.onHoldAuthorizeRefused(m)
	case *wire.ChannelState:
		d.onChannelState(m)
	default:
		return false
	}
	return true
}

// spawn runs f on a goroutine the Device owns.
func (d *Device) spawn(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// PendingChannel is a channel the hub offered: pay exactly Capacity to
// Address (or PkScript), then call Funded.
type PendingChannel struct {
	PendingID [32]byte
	Address   btcutil.Address
	PkScript  []byte
	Capacity  btcutil.Amount
	Expiry    uint32
	MinDepth  uint32
}

// OpenChannel asks the hub for a channel of capacity expiring at block
// expiryHeight. It checks the offer before returning it: the hub's channel
// key must be the pinned hub key tweaked for this device and offer, and the
// script to fund must be the one those keys and terms derive, so a hub (or
// anyone in between) cannot make the device fund an output it could not
// refund. The offer is saved before it is returned. Errors: *ChannelError,
// ErrBadOffer, or a transport or context error.
func (d *Device) OpenChannel(ctx context.Context, capacity btcutil.Amount, expiryHeight uint32) (*PendingChannel, error) {
	req := d.reqID()
	ch, done := d.w.add(waitKey{kind: 'r', req: req})
	defer done()
	if err := d.send(ctx, &wire.OpenChannel{ReqID: req, Capacity: capacity, Expiry: expiryHeight}); err != nil {
		return nil, fmt.Errorf("m2mclient: open channel: %w", err)
	}
	msg, err := d.await(ctx, ch)
	if err != nil {
		return nil, err
	}
	var offer *wire.ChannelOffer
	switch m := msg.(type) {
	case *wire.ChannelError:
		return nil, asError(m)
	case *wire.ChannelOffer:
		offer = m
	default:
		return nil, fmt.Errorf("%w: unexpected answer %v", wire.ErrProtocol, msg.MsgType())
	}
	if offer.Capacity != capacity || offer.Expiry != expiryHeight {
		return nil, fmt.Errorf("%w: offer for %d sat expiring at %d, asked %d sat at %d",
			ErrBadOffer, offer.Capacity, offer.Expiry, capacity, expiryHeight)
	}
	tweak := channel.ChannelKeyTweak(d.cfg.Key.PubKey(), offer.PendingID)
	want, err := channel.HubChannelPubKey(d.cfg.HubKey, tweak)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	if offer.HubChanKey == nil || !offer.HubChanKey.IsEqual(want) {
		return nil, fmt.Errorf("%w: hub channel key is not the pinned key tweaked for this offer", ErrBadOffer)
	}
	st := &ChannelState{
		PendingID: offer.PendingID, HubKey: want, Capacity: capacity, Expiry: expiryHeight,
		MinDepth: offer.MinDepth, Status: StatusOffered,
	}
	out, err := channel.NewOutput(st.Params(d.cfg.Key.PubKey()))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	if !bytes.Equal(out.PkScript(), offer.PkScript) {
		return nil, fmt.Errorf("%w: script to fund differs from the channel's", ErrBadOffer)
	}
	addr, err := out.Address(d.cfg.Params)
	if err != nil {
		return nil, err
	}
	// The hub offers a pending channel of the same terms again instead
	// of a new one (its first offer may have been lost with the
	// connection). Known and still offered, it is returned as it is;
	// known and already funded, it must not be funded twice.
	d.mu.Lock()
	known, ok := d.chans[offer.PendingID]
	d.mu.Unlock()
	if ok {
		known.mu.Lock()
		status := known.st.Status
		known.mu.Unlock()
		if status != StatusOffered {
			return nil, fmt.Errorf("%w: the hub offered channel %x again, which this device has %s", ErrBadOffer, offer.PendingID[:8], status)
		}
	} else {
		if err := d.cfg.Store.Save(ctx, *st); err != nil {
			return nil, err
		}
		if err := d.addChannel(st, true); err != nil {
			return nil, err
		}
	}
	return &PendingChannel{
		PendingID: offer.PendingID, Address: addr, PkScript: out.PkScript(),
		Capacity: capacity, Expiry: expiryHeight, MinDepth: offer.MinDepth,
	}, nil
}

// Channel is a snapshot of one channel.
type Channel struct {
	ID        btcwire.OutPoint
	PendingID [32]byte
	Capacity  btcutil.Amount
	Expiry    uint32
	Status    ChannelStatus
	Seq       uint64
	Paid      msat.Amount
	CloseTx   *chainhash.Hash
}

func snapshot(st *ChannelState) *Channel {
	return &Channel{
		ID: st.Funding, PendingID: st.PendingID, Capacity: st.Capacity, Expiry: st.Expiry,
		Status: st.Status, Seq: st.Seq, Paid: st.Paid, CloseTx: st.CloseTx,
	}
}

// Funded tells the hub that outpoint pays the offered channel and waits
// until the hub reports it ready (funding confirmed at the offer's depth),
// bounded by ctx. The outpoint is saved first, so Refund works from here on
// even if the hub never answers. Calling Funded again after a timeout
// resumes the wait. Errors: ErrUnknownChannel, *ChannelError (e.g.
// "funding-mismatch"), or a transport or context error.
func (d *Device) Funded(ctx context.Context, pendingID [32]byte, outpoint btcwire.OutPoint) (*Channel, error) {
	d.mu.Lock()
	c, ok := d.chans[pendingID]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: pending %x", ErrUnknownChannel, pendingID)
	}
	c.mu.Lock()
	switch {
	case c.st.Status == StatusReady && c.st.Funding == outpoint:
		defer c.mu.Unlock()
		return snapshot(c.st), nil
	case c.st.Status != StatusOffered && c.st.Status != StatusFunded,
		c.st.Status == StatusFunded && c.st.Funding != outpoint:
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: channel is %s", ErrNotReady, c.st.Status)
	}
	c.st.Funding, c.st.Status = outpoint, StatusFunded
	err := d.save(ctx, c)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.byID[outpoint] = c
	d.mu.Unlock()

	ch, done := d.w.add(waitKey{kind: 'p', pending: pendingID})
	defer done()
	if err := d.send(ctx, &wire.ChannelFunded{PendingID: pendingID, Outpoint: outpoint}); err != nil {
		return nil, fmt.Errorf("m2mclient: channel funded: %w", err)
	}
	msg, err := d.await(ctx, ch)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *wire.ChannelError:
		return nil, asError(m)
	case *wire.ChannelReady:
		if m.Outpoint != outpoint || m.Capacity != c.st.Capacity || m.Expiry != c.st.Expiry {
			return nil, fmt.Errorf("%w: ready for %v %d sat expiry %d", ErrBadOffer, m.Outpoint, m.Capacity, m.Expiry)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Status = StatusReady
	if err := d.save(ctx, c); err != nil {
		return nil, err
	}
	return snapshot(c.st), nil
}

// Funder pays an address from a wallet; *btcdchain.Wallet satisfies it.
type Funder interface {
	// Send pays amount to to and returns the transaction id.
	Send(ctx context.Context, to btcutil.Address, amount btcutil.Amount) (chainhash.Hash, error)
}

// TxLookup returns a transaction by id, from the mempool or the chain. With
// a *btcdchain.Client c:
//
//	func(ctx context.Context, id chainhash.Hash) (*wire.MsgTx, error) {
//		info, err := c.GetTx(ctx, id)
//		return info.Tx, err
//	}
type TxLookup func(ctx context.Context, txid chainhash.Hash) (*btcwire.MsgTx, error)

// FundAndOpen opens a channel, pays it from funder, finds the funding
// output in the transaction (lookup) and waits for the hub's ChannelReady,
// bounded by ctx. The caller mines or waits for the confirmations.
func (d *Device) FundAndOpen(ctx context.Context, funder Funder, lookup TxLookup,
	capacity btcutil.Amount, expiryHeight uint32) (*Channel, error) {

	pc, err := d.OpenChannel(ctx, capacity, expiryHeight)
	if err != nil {
		return nil, err
	}
	txid, err := funder.Send(ctx, pc.Address, capacity)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: fund channel: %w", err)
	}
	tx, err := lookup(ctx, txid)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: fund channel: %w", err)
	}
	for i, out := range tx.TxOut {
		if out.Value == int64(capacity) && bytes.Equal(out.PkScript, pc.PkScript) {
			return d.Funded(ctx, pc.PendingID, btcwire.OutPoint{Hash: txid, Index: uint32(i)})
		}
	}
	return nil, fmt.Errorf("m2mclient: funding tx %s has no output paying the channel", txid)
}

// Channels returns a snapshot of every channel the device knows.
func (d *Device) Channels() []*Channel {
	d.mu.Lock()
	cs := make([]*devChannel, 0, len(d.chans))
	for _, c := range d.chans {
		cs = append(cs, c)
	}
	d.mu.Unlock()
	out := make([]*Channel, 0, len(cs))
	for _, c := range cs {
		c.mu.Lock()
		out = append(out, snapshot(c.st))
		c.mu.Unlock()
	}
	return out
}

// Balance is what a channel holds, as the device's records say.
type Balance struct {
	Capacity btcutil.Amount
	// Paid is the latest acknowledged cumulative payment.
	Paid msat.Amount
	// Unconfirmed is a signed payment the hub has not acknowledged yet
	// (zero without one); the hub may hold its signature.
	Unconfirmed msat.Amount
	// Reserved is what active holds can still capture.
	Reserved msat.Amount
	// Available is what the device can still pay: the channel's maximum
	// less Paid, Unconfirmed and Reserved.
	Available msat.Amount
}

// Balance returns the channel's balance from the local records; it needs
// no hub. It returns an error wrapping ErrUnknownChannel.
func (d *Device) Balance(chanID btcwire.OutPoint) (Balance, error) {
	st, err := d.channelCopy(chanID)
	if err != nil {
		return Balance{}, err
	}
	b := Balance{Capacity: st.Capacity, Paid: st.Paid}
	if st.Pending != nil {
		b.Unconfirmed = st.Pending.Amount
	}
	now := d.cfg.Clock.Now()
	for _, h := range st.Holds {
		if now.Before(h.Expires) {
			b.Reserved += h.Max - h.Captured
		}
	}
	maxPaid := st.Params(d.cfg.Key.PubKey()).MaxPaid()
	if used := b.Paid + b.Unconfirmed + b.Reserved; used < maxPaid {
		b.Available = maxPaid - used
	}
	return b, nil
}

// History returns the channel's receipts from the local store, oldest
// first.
func (d *Device) History(ctx context.Context, chanID btcwire.OutPoint) ([]*channel.Receipt, error) {
	if _, err := d.channel(chanID); err != nil {
		return nil, err
	}
	return d.cfg.Store.Receipts(ctx, chanID)
}

// markClosed records a close the hub reported.
func (d *Device) markClosed(m *wire.ChannelClosed) {
	c, err := d.channel(m.ChanID)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Status == StatusClosed {
		return
	}
	txid := m.Txid
	c.st.Status, c.st.CloseTx = StatusClosed, &txid
	if err := d.save(d.ctx, c); err != nil {
		d.log.Error("saving closed channel", "chan", m.ChanID, "err", err)
	}
}
