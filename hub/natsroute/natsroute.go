// Package natsroute makes work follow the device across hubd instances
// that share a store and a NATS cluster. Whatever the hub asks of a device
// or tells it, from whichever instance, reaches the instance that holds
// the device's BOLT 8 session:
//
//   - payment requests for metered charges (Router.RequestPayment, for
//     charging), answered by the device over its session and reported
//     back to the asking instance;
//   - a provider's hold request, capture and release, run by the payer's
//     instance, where the device's authorisation and payments arrive
//     (Relay.Forward, for the channel manager);
//   - notices: channel ready, hold result and hold closed, receipts to
//     providers, refusals of unpaid captures (Relay.Notify);
//   - the settlement co-signing round: the Router is the settler's
//     cosigners, asking a device on another instance over NATS, and
//     settle-done notices go to every instance, so whichever holds the
//     device (now or later) tells it;
//   - a revocation's drop of the device's session, on every instance.
//
// The cluster-wide directory of sessions is NATS subject interest: while a
// device's session lives on an instance, that instance subscribes to the
// device's subjects (<prefix>.dev.<device>.*), and unsubscribes when it
// ends. A request to the subject reaches the holder; a device nobody holds
// answers at once with no responders (offline), and an instance that dies
// takes its subscriptions with it, so the directory holds no stale entry
// and needs no TTL, refresh loop or second store to agree with. (A
// JetStream KV directory with TTLs would add a lookup and a refresh per
// session and could point at a dead instance for a TTL.)
//
// The domain packages link no NATS: the ports are charging.Channels,
// channels.Relay and settler.Cosigners.
package natsroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// DefaultPrefix is the subject prefix of the routing subjects.
const DefaultPrefix = "m2mhub.route"

// DefaultTimeout bounds one request to another instance.
const DefaultTimeout = 2 * time.Second

// ErrInstanceGone is returned when the instance holding a device's session
// does not answer in time (it died or is stalled). Charges stay owed and
// charging asks again later.
var ErrInstanceGone = errors.New("natsroute: instance holding the session did not answer")

// Sessions is the local directory of live sessions (*session.Directory).
type Sessions interface {
	Session(deviceID string) (*session.Session, bool)
	Notify(fn func(deviceID string))
	Drop(deviceID, code, reason string)
}

// Local is this instance's channel manager (*channels.Manager).
type Local interface {
	charging.Channels
	// Resync reloads a channel's cached record from the shared store
	// before a request made on another instance is served.
	Resync(ctx context.Context, op btcwire.OutPoint) error
	// Forwarded runs a provider's hold message forwarded here because
	// the payer's session is here.
	Forwarded(ctx context.Context, provider string, msg wire.Message) error
}

// Config configures New.
type Config struct {
	// Relay is this instance's relay, the one its channel manager
	// uses. Required.
	Relay *Relay
	// Instance names this instance, unique in the cluster. Required.
	Instance string
	// Local is this instance's channel manager. Required.
	Local Local
	// Sessions is this instance's session directory. Required.
	Sessions Sessions
	// Cosigners co-sign with the devices whose session is here
	// (*cosign.Cosigners). Required.
	Cosigners settler.Cosigners
	// Attempts is how many times a payment request is sent before the
	// holder counts as gone (DefaultAttempts), each waiting the relay's
	// timeout.
	Attempts int
	// Served is how long a holder remembers a payment request it
	// served, refusing to serve its id again (DefaultServed).
	Served time.Duration
	// HolderCheck is how often the instances holding requests routed
	// from here are probed for being alive (DefaultHolderCheck).
	HolderCheck time.Duration
	// Clock times the served requests and the outcome resends.
	// Defaults to the wall clock.
	Clock  clock.Clock
	Logger *slog.Logger
}

// Defaults for Config.
const (
	DefaultAttempts    = 3
	DefaultServed      = time.Minute
	DefaultHolderCheck = time.Second
)

// Router is charging.Channels and settler.Cosigners for one instance of a
// cluster, and the server of the requests other instances route here.
type Router struct {
	charging.Channels // the local manager: everything store-backed
	cfg               Config
	relay             *Relay
	clock             clock.Clock
	log               *slog.Logger
	ctx               context.Context
	cancel            context.CancelFunc
	wg                sync.WaitGroup

	next atomic.Uint64

	mu      sync.Mutex
	devSubs map[string]*nats.Subscription // devices whose session is here
	remote  map[uint64]*remoteReq         // requests served elsewhere, by our id
	served  map[servedKey]*servedReq      // requests served here, by origin and id
	subs    []*nats.Subscription          // instance and cluster-wide subjects
	closed  bool
}

var (
	_ charging.Channels = (*Router)(nil)
	_ settler.Cosigners = (*Router)(nil)
)

// New subscribes this instance's subjects and starts following the local
// directory's sessions. Call it before the session server starts.
func New(cfg Config) (*Router, error) {
	if cfg.Relay == nil || cfg.Instance == "" || cfg.Local == nil || cfg.Sessions == nil || cfg.Cosigners == nil {
		return nil, fmt.Errorf("%w: natsroute: relay, instance, local channels, sessions and cosigners are required", hub.ErrInvalid)
	}
	if strings.ContainsAny(cfg.Instance, ".*> \t") {
		return nil, fmt.Errorf("%w: natsroute: instance %q is not a subject token", hub.ErrInvalid, cfg.Instance)
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.Served <= 0 {
		cfg.Served = DefaultServed
	}
	if cfg.HolderCheck <= 0 {
		cfg.HolderCheck = DefaultHolderCheck
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{
		Channels: cfg.Local, cfg: cfg, relay: cfg.Relay, clock: cfg.Clock, log: cfg.Logger, ctx: ctx, cancel: cancel,
		devSubs: make(map[string]*nats.Subscription), remote: make(map[uint64]*remoteReq),
		served: make(map[servedKey]*servedReq),
	}
	for subj, h := range map[string]nats.MsgHandler{
		r.relay.instSubject(cfg.Instance, ">"): r.handleInstance,
		r.relay.allSubject("drop"):             r.handleDrop,
		r.relay.allSubject("done"):             r.handleDone,
	} {
		sub, err := r.relay.conn.Subscribe(subj, h)
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("natsroute: subscribe %s: %w", subj, err)
		}
		r.subs = append(r.subs, sub)
	}
	cfg.Sessions.Notify(r.follow)
	r.goOwned(r.watchHolders)
	return r, nil
}

// Close stops routing: the device subjects and the instance subjects are
// unsubscribed, so other instances see this one's devices as offline, and
// the outcomes still being sent are given up.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.cancel()
	var errs []error
	for id, s := range r.devSubs {
		errs = append(errs, s.Unsubscribe())
		delete(r.devSubs, id)
	}
	for _, s := range r.subs {
		errs = append(errs, s.Unsubscribe())
	}
	r.mu.Unlock()
	r.wg.Wait()
	return errors.Join(errs...)
}

// goOwned runs f on a goroutine Close waits for, unless Close has begun.
func (r *Router) goOwned(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// follow subscribes deviceID's subjects while its session is here.
func (r *Router) follow(deviceID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	_, online := r.cfg.Sessions.Session(deviceID)
	sub, held := r.devSubs[deviceID]
	switch {
	case online && !held:
		// A queue group: while a device moves, old and new holder may
		// both be subscribed for a moment; one of them answers.
		s, err := r.relay.conn.QueueSubscribe(r.relay.devSubject(deviceID, "*"), "hubd", r.handleDevice)
		if err != nil {
			r.log.Error("natsroute: subscribe device subject", "device", deviceID, "err", err)
			return
		}
		r.devSubs[deviceID] = s
	case !online && held:
		if err := sub.Unsubscribe(); err != nil {
			r.log.Debug("natsroute: unsubscribe device subject", "device", deviceID, "err", err)
		}
		delete(r.devSubs, deviceID)
	}
}

// handleDevice serves a request for a device whose session is here.
func (r *Router) handleDevice(m *nats.Msg) {
	switch m.Subject[strings.LastIndexByte(m.Subject, '.')+1:] {
	case "pay":
		r.servePay(m)
	case "notice":
		r.serveNotice(m)
	case "forward":
		r.serveForward(m)
	case "cosign":
		// The device's answer takes up to the round timeout: wait off
		// the subscription's goroutine, which serves its other requests.
		if !r.goOwned(func() { r.serveCosign(m) }) {
			r.respond(m, cosignReply{Instance: r.cfg.Instance, Offline: true})
		}
	case "online":
		_, ok := r.cfg.Sessions.Session(deviceOf(m.Subject, r.relay.prefix))
		r.respond(m, onlineReply{Instance: r.cfg.Instance, Online: ok})
	default:
		r.log.Debug("natsroute: unknown device subject", "subject", m.Subject)
	}
}

// deviceOf is the device id in <prefix>.dev.<device>.<what>.
func deviceOf(subject, prefix string) string {
	s := strings.TrimPrefix(subject, prefix+".dev.")
	return s[:max(strings.LastIndexByte(s, '.'), 0)]
}

// respond sends v as the JSON answer to m.
func (r *Router) respond(m *nats.Msg, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		err = m.Respond(b)
	}
	if err != nil {
		r.log.Debug("natsroute: reply not sent", "subject", m.Subject, "err", err)
	}
}

// serveNotice delivers a notice another instance relayed for a device
// whose session is here.
func (r *Router) serveNotice(m *nats.Msg) {
	msg, err := wire.DecodeMessage(m.Data)
	if err != nil {
		r.log.Warn("natsroute: bad notice", "subject", m.Subject, "err", err)
		return
	}
	dev := deviceOf(m.Subject, r.relay.prefix)
	s, ok := r.cfg.Sessions.Session(dev)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.relay.timeout)
	defer cancel()
	if err := s.Send(ctx, msg); err != nil {
		r.log.Debug("natsroute: notice not delivered", "device", dev, "err", err)
	}
}

// serveForward runs a provider's hold message whose payer is here.
func (r *Router) serveForward(m *nats.Msg) {
	rep := forwardReply{Instance: r.cfg.Instance}
	var fm forwardMsg
	if err := json.Unmarshal(m.Data, &fm); err != nil {
		rep.Error = "bad request: " + err.Error()
		r.respond(m, rep)
		return
	}
	msg, err := wire.DecodeMessage(fm.Msg)
	if err != nil {
		rep.Error = "bad message: " + err.Error()
		r.respond(m, rep)
		return
	}
	if _, ok := r.cfg.Sessions.Session(deviceOf(m.Subject, r.relay.prefix)); !ok {
		rep.Offline = true
		r.respond(m, rep)
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.relay.timeout)
	defer cancel()
	err = r.cfg.Local.Forwarded(ctx, fm.Provider, msg)
	var ce *wire.ChannelError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		rep.Refusal, err = wire.EncodeMessage(ce)
		if err != nil {
			rep.Error = err.Error()
		}
	default:
		r.log.Error("natsroute: forwarded hold message failed", "provider", fm.Provider, "err", err)
		rep.Refusal, _ = wire.EncodeMessage(&wire.ChannelError{Code: wire.ChanInternal, Message: "internal error"})
	}
	r.respond(m, rep)
}

// handleDrop closes a revoked device's session if it is here.
func (r *Router) handleDrop(m *nats.Msg) {
	var dm dropMsg
	if err := json.Unmarshal(m.Data, &dm); err != nil {
		r.log.Warn("natsroute: bad drop", "err", err)
		return
	}
	r.cfg.Sessions.Drop(dm.Device, dm.Code, dm.Reason)
}
