package m2mclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// ErrHoldRefused means the payer (or the hub) refused a hold; the error
// also carries the *ChannelError with the reason when the hub gave one.
var ErrHoldRefused = errors.New("m2mclient: hold refused")

// receiptBuffer is how many verified receipts wait for the provider before
// newer ones are dropped (and logged).
const receiptBuffer = 256

// ProviderConfig configures NewProvider.
type ProviderConfig struct {
	// HubKey is the hub's pinned identity key; receipts are verified
	// against it.
	HubKey *btcec.PublicKey
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock turns hold durations into expiry times. Defaults to the wall
	// clock.
	Clock clock.Clock
	// Router, when set, is the Router of the Session that a Device of the
	// same identity also uses (a prosumer). Nil gives the Provider a
	// Router of its own, and the Provider must then be the only consumer
	// of the Session.
	Router *Router
}

// Provider is the service side: it asks payers for holds through the hub,
// captures what it metered, releases the rest, and receives the hub's
// receipts for payments made to it.
type Provider struct {
	cfg ProviderConfig
	s   *Session
	log *slog.Logger
	w   *waiters

	r         *Router
	ownRouter bool
	detach    func()

	receipts chan *channel.Receipt
	errs     chan *HoldError

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewProvider starts serving the hub's messages on s; Close stops it. The
// Provider reads s through cfg.Router, or a Router of its own when that is
// nil.
func NewProvider(s *Session, cfg ProviderConfig) (*Provider, error) {
	if s == nil || cfg.HubKey == nil {
		return nil, errors.New("m2mclient: provider needs a session and the hub key")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	r, owned, err := routerFor(s, cfg.Router)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Provider{
		cfg: cfg, s: s, log: cfg.Logger, w: &r.w, r: r, ownRouter: owned,
		receipts: make(chan *channel.Receipt, receiptBuffer),
		errs:     make(chan *HoldError, receiptBuffer),
		ctx:      ctx, cancel: cancel,
	}
	p.detach = r.attach(p.handle)
	p.wg.Add(1)
	go p.run()
	return p, nil
}

// Close stops serving the hub's messages and closes the Receipts channel.
// It does not close the Session, nor a Router passed in ProviderConfig.
func (p *Provider) Close() error {
	p.cancel()
	p.wg.Wait()
	if p.ownRouter {
		return p.r.Close()
	}
	return nil
}

// Receipts delivers the verified receipts of payments made to this
// provider. Receipts that fail verification are logged and dropped. The
// channel is closed by Close or when the session ends.
func (p *Provider) Receipts() <-chan *channel.Receipt { return p.receipts }

// VerifyReceipt checks that r is signed by the pinned hub key. It returns an
// error wrapping channel.ErrBadSignature, channel.ErrBadReceipt or
// channel.ErrNotParticipant.
func (p *Provider) VerifyReceipt(r *channel.Receipt) error {
	return r.VerifyKey(p.cfg.HubKey)
}

// run closes Receipts and Errors once the Provider is closed or the
// session has ended, after detaching, so no handler can write to them
// afterwards.
func (p *Provider) run() {
	defer p.wg.Done()
	select {
	case <-p.ctx.Done():
	case <-p.r.done:
	}
	p.detach()
	close(p.receipts)
	close(p.errs)
}

// handle takes the hub's messages that are not answers to a waiting call:
// receipts, and refusals no call waits for.
func (p *Provider) handle(msg wire.Message) bool {
	switch m := msg.(type) {
	case *wire.ChannelError:
		p.onError(m)
	case *wire.ReceiptNotice:
		p.onReceipt(m)
	default:
		return false
	}
	return true
}

// HoldError is a refusal the hub reported about a hold outside any waiting
// call: typically a capture the payer did not sign in time and that no
// longer fits the hub's credit limit ("credit-limit": stop the service).
type HoldError struct {
	Hold HoldID // zero when the hub named no hold
	Err  *ChannelError
}

// Error describes the refusal.
func (e *HoldError) Error() string { return fmt.Sprintf("hold %s: %v", e.Hold, e.Err) }

// Unwrap returns the hub's *ChannelError.
func (e *HoldError) Unwrap() error { return e.Err }

// Errors delivers refusals about holds that arrive outside a waiting call,
// such as a failed Capture. The channel is closed with Receipts.
func (p *Provider) Errors() <-chan *HoldError { return p.errs }

func (p *Provider) onError(m *wire.ChannelError) {
	e := &HoldError{Err: asError(m)}
	if m.HoldID != nil {
		e.Hold = HoldID(*m.HoldID)
	}
	p.log.Info("hub refused a hold operation", "hold", e.Hold, "code", m.Code, "message", m.Message)
	select {
	case p.errs <- e:
	default:
	}
}

func (p *Provider) onReceipt(m *wire.ReceiptNotice) {
	r := new(channel.Receipt)
	if err := r.UnmarshalBinary(m.Receipt); err != nil {
		p.log.Warn("undecodable receipt", "err", err)
		return
	}
	if err := p.VerifyReceipt(r); err != nil {
		p.log.Warn("receipt does not verify", "err", err)
		return
	}
	select {
	case p.receipts <- r:
	default:
		p.log.Warn("receipt buffer full, dropping receipt", "chan", r.Channel, "seq", r.Seq)
	}
}

// holdIDAttempts bounds how often RequestHold draws a new id after the hub
// answered "hold-id-in-use": random 16-byte ids collide only when someone
// reuses them on purpose, so one more draw is normally enough.
const holdIDAttempts = 3

// RequestHold asks the payer, through the hub, to authorise charges of up to
// max for ttl, and waits for the answer. It returns the hold's id once
// authorised, or an error wrapping ErrHoldRefused (with the hub's
// *ChannelError: errors.Is(err, ErrPayerOffline) when the payer has no
// session, errors.Is(err, ErrTemporary) whenever asking again later may
// succeed), or a transport or context error. An id the hub finds in use is
// replaced by a fresh one and asked again, up to holdIDAttempts times.
func (p *Provider) RequestHold(ctx context.Context, payer string, max msat.Amount,
	ttl time.Duration, memo string) (HoldID, error) {

	for attempt := 1; ; attempt++ {
		id, err := p.requestHold(ctx, payer, max, ttl, memo)
		var ce *ChannelError
		if attempt < holdIDAttempts && errors.As(err, &ce) && ce.Code == CodeHoldIDInUse {
			continue
		}
		return id, err
	}
}

func (p *Provider) requestHold(ctx context.Context, payer string, max msat.Amount,
	ttl time.Duration, memo string) (HoldID, error) {

	var id HoldID
	if _, err := rand.Read(id[:]); err != nil {
		return HoldID{}, err
	}
	ch, done := p.w.add(waitKey{kind: 'h', hold: id})
	defer done()
	req := &wire.HoldRequest{
		HoldID: id, Payer: payer, Max: max,
		Expires: uint64(p.cfg.Clock.Now().Add(ttl).Unix()), Memo: memo,
	}
	if err := p.s.Send(ctx, req); err != nil {
		return HoldID{}, fmt.Errorf("m2mclient: request hold: %w", err)
	}
	for {
		msg, err := await(ctx, p.ctx, ch)
		if err != nil {
			return HoldID{}, err
		}
		switch m := msg.(type) {
		case *wire.HoldResult:
			if m.Status == wire.HoldAuthorized {
				return id, nil
			}
			return HoldID{}, fmt.Errorf("%w: %w", ErrHoldRefused, &ChannelError{Code: string(m.Code), Message: m.Message})
		case *wire.ChannelError:
			return HoldID{}, fmt.Errorf("%w: %w", ErrHoldRefused, asError(m))
		}
	}
}

// Capture charges amount against an authorised hold. The hub asks the payer
// to sign the payment; its receipt arrives on Receipts. Capture returns once
// the request is sent; a refusal the hub reports later (for example
// "credit-limit", meaning: stop the service) arrives on Errors.
func (p *Provider) Capture(ctx context.Context, id HoldID, amount msat.Amount, memo string) error {
	if err := p.s.Send(ctx, &wire.Capture{HoldID: id, Amount: amount, Memo: memo}); err != nil {
		return fmt.Errorf("m2mclient: capture: %w", err)
	}
	return nil
}

// Release ends the hold: the hub frees what was not captured. It returns
// once the request is sent.
func (p *Provider) Release(ctx context.Context, id HoldID) error {
	if err := p.s.Send(ctx, &wire.Release{HoldID: id}); err != nil {
		return fmt.Errorf("m2mclient: release: %w", err)
	}
	return nil
}
