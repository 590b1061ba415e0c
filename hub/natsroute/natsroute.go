// Package natsroute makes work follow the device across hubd instances
// that share a store and a NATS cluster: a payment request computed on one
// instance for a payer whose BOLT 8 session lives on another reaches that
// instance over NATS request/reply, whose channel manager does the exchange
// with the device locally and sends the outcome back.
//
// The cluster-wide directory of sessions is NATS subject interest: while a
// device's session lives on an instance, that instance subscribes to the
// device's subject (<prefix>.dev.<device>.*), and unsubscribes when it
// ends. A request to the subject reaches the holder; a device nobody holds
// answers at once with no responders (offline), and an instance that dies
// takes its subscriptions with it, so the directory holds no stale entry
// and needs no TTL, refresh loop or second store to agree with. (A
// JetStream KV directory with TTLs would add a lookup and a refresh per
// session and could point at a dead instance for a TTL.)
//
// Router implements charging.Channels in front of the local channel
// manager: a payer with a local session is served by the manager directly
// (one map lookup more than before), the rest is asked over NATS. The
// domain packages link no NATS: the port is charging.Channels.
package natsroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/msat"
)

// DefaultPrefix is the subject prefix of the routing subjects.
const DefaultPrefix = "m2mhub.route"

// DefaultTimeout bounds one request to another instance.
const DefaultTimeout = 2 * time.Second

// remoteBit marks request ids this router issued for requests served by
// another instance; the channel manager's own ids count up from 1 and
// never reach it.
const remoteBit = uint64(1) << 63

// ErrInstanceGone is returned when the instance holding a payer's session
// does not answer in time (it died or is stalled). The charges stay owed
// and charging asks again later.
var ErrInstanceGone = errors.New("natsroute: instance holding the session did not answer")

// Sessions is the local directory of live sessions (*session.Directory).
type Sessions interface {
	Session(deviceID string) (*session.Session, bool)
	Notify(fn func(deviceID string))
}

// Local is this instance's channel manager (*channels.Manager).
type Local interface {
	charging.Channels
	// Resync reloads a channel's cached record from the shared store
	// before a request made on another instance is served.
	Resync(ctx context.Context, op btcwire.OutPoint) error
}

// Config configures New.
type Config struct {
	// Conn is the instance's NATS connection. Required.
	Conn *nats.Conn
	// Instance names this instance, unique in the cluster. Required.
	Instance string
	// Local is this instance's channel manager. Required.
	Local Local
	// Sessions is this instance's session directory. Required.
	Sessions Sessions
	// Prefix defaults to DefaultPrefix, Timeout to DefaultTimeout.
	Prefix  string
	Timeout time.Duration
	Logger  *slog.Logger
}

// Router is charging.Channels for one instance of a cluster.
type Router struct {
	charging.Channels // the local manager: everything store-backed
	cfg               Config
	log               *slog.Logger
	ctx               context.Context
	cancel            context.CancelFunc

	next atomic.Uint64

	mu      sync.Mutex
	devSubs map[string]*nats.Subscription // devices whose session is here
	remote  map[uint64]*remoteReq         // requests served elsewhere, by our id
	instSub *nats.Subscription
	closed  bool
}

type remoteReq struct {
	listener hub.ChargeListener
	holder   string // instance that took it, once answered
	remoteID uint64 // its id there
}

// payMsg is a payment request sent to the holder of the payer's session.
type payMsg struct {
	Origin     string           `json:"origin"`
	OriginID   uint64           `json:"origin_id"`
	Payer      string           `json:"payer"`
	Payee      string           `json:"payee"`
	Channel    btcwire.OutPoint `json:"channel"`
	Amount     msat.Amount      `json:"amount"`
	Contract   [32]byte         `json:"contract"`
	EventsRoot [32]byte         `json:"events_root"`
	EventCount uint32           `json:"event_count"`
	Memo       string           `json:"memo"`
	Hold       *[16]byte        `json:"hold,omitempty"`
}

// payReply answers a payMsg.
type payReply struct {
	Instance string `json:"instance"`
	ID       uint64 `json:"id,omitempty"`
	Offline  bool   `json:"offline,omitempty"`
	Error    string `json:"error,omitempty"`
}

// outcomeMsg tells the origin how a request ended.
type outcomeMsg struct {
	OriginID uint64 `json:"origin_id"`
	Receipt  []byte `json:"receipt,omitempty"`
	Code     string `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
}

// cancelMsg tells the holder to forget a request.
type cancelMsg struct {
	ID uint64 `json:"id"`
}

// New subscribes this instance's subject and starts following the local
// directory's sessions. Call it before the session server starts.
func New(cfg Config) (*Router, error) {
	if cfg.Conn == nil || cfg.Instance == "" || cfg.Local == nil || cfg.Sessions == nil {
		return nil, fmt.Errorf("%w: natsroute: conn, instance, local channels and sessions are required", hub.ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{
		Channels: cfg.Local, cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		devSubs: make(map[string]*nats.Subscription), remote: make(map[uint64]*remoteReq),
	}
	sub, err := cfg.Conn.Subscribe(r.instSubject(cfg.Instance, ">"), r.handleInstance)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("natsroute: subscribe instance subject: %w", err)
	}
	r.instSub = sub
	cfg.Sessions.Notify(r.follow)
	return r, nil
}

// Close stops routing: the device subjects and the instance subject are
// unsubscribed, so other instances see this one's devices as offline.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.cancel()
	var errs []error
	for id, s := range r.devSubs {
		errs = append(errs, s.Unsubscribe())
		delete(r.devSubs, id)
	}
	errs = append(errs, r.instSub.Unsubscribe())
	return errors.Join(errs...)
}

func (r *Router) devSubject(deviceID, what string) string {
	return r.cfg.Prefix + ".dev." + deviceID + "." + what
}

func (r *Router) instSubject(instance, what string) string {
	return r.cfg.Prefix + ".inst." + instance + "." + what
}

// follow subscribes deviceID's subject while its session is here.
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
		s, err := r.cfg.Conn.QueueSubscribe(r.devSubject(deviceID, "*"), "hubd", r.handleDevice)
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

// RequestPayment asks the payer to pay req: over its session here, or via
// the instance that holds it. It returns an error wrapping
// channels.ErrDeviceOffline when no instance holds the payer's session and
// one wrapping ErrInstanceGone when the holder does not answer.
func (r *Router) RequestPayment(ctx context.Context, req hub.PaymentRequest) (uint64, error) {
	if _, ok := r.cfg.Sessions.Session(req.Payer); ok {
		return r.Channels.RequestPayment(ctx, req)
	}
	if req.Listener == nil {
		return 0, fmt.Errorf("%w: charge request without a listener", hub.ErrInvalid)
	}
	id := remoteBit | r.next.Add(1)
	rr := &remoteReq{listener: req.Listener}
	r.mu.Lock()
	r.remote[id] = rr
	r.mu.Unlock()
	body, err := json.Marshal(payMsg{
		Origin: r.cfg.Instance, OriginID: id, Payer: req.Payer, Payee: req.Payee, Channel: req.Channel,
		Amount: req.Amount, Contract: req.Contract, EventsRoot: req.EventsRoot, EventCount: req.EventCount,
		Memo: req.Memo, Hold: req.Hold,
	})
	if err != nil {
		r.forget(id)
		return 0, fmt.Errorf("natsroute: encode payment request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	m, err := r.cfg.Conn.RequestWithContext(rctx, r.devSubject(req.Payer, "pay"), body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		r.forget(id)
		return 0, fmt.Errorf("%w: %s (no instance holds its session)", channels.ErrDeviceOffline, req.Payer)
	case err != nil:
		// The holder died or stalled. The charges stay owed (nothing
		// was written here) and charging asks again after its retry
		// delay, by then of the instance the device reconnected to.
		r.forget(id)
		return 0, fmt.Errorf("%w: payer %s: %w", ErrInstanceGone, req.Payer, err)
	}
	var rep payReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		r.forget(id)
		return 0, fmt.Errorf("natsroute: decode reply for payer %s: %w", req.Payer, err)
	}
	switch {
	case rep.Offline:
		r.forget(id)
		return 0, fmt.Errorf("%w: %s (on instance %s: %s)", channels.ErrDeviceOffline, req.Payer, rep.Instance, rep.Error)
	case rep.Error != "":
		r.forget(id)
		return 0, fmt.Errorf("natsroute: instance %s refused the payment request for %s: %s", rep.Instance, req.Payer, rep.Error)
	}
	r.mu.Lock()
	rr.holder, rr.remoteID = rep.Instance, rep.ID
	r.mu.Unlock()
	return id, nil
}

func (r *Router) forget(id uint64) *remoteReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	rr := r.remote[id]
	delete(r.remote, id)
	return rr
}

// CancelPayment forgets a request, here or on the instance serving it.
func (r *Router) CancelPayment(reqID uint64) {
	if reqID&remoteBit == 0 {
		r.Channels.CancelPayment(reqID)
		return
	}
	rr := r.forget(reqID)
	if rr == nil || rr.holder == "" {
		return
	}
	b, err := json.Marshal(cancelMsg{ID: rr.remoteID})
	if err == nil {
		err = r.cfg.Conn.Publish(r.instSubject(rr.holder, "cancel"), b)
	}
	if err != nil {
		r.log.Debug("natsroute: cancel not sent", "instance", rr.holder, "err", err)
	}
}

// handleDevice serves a request for a device whose session is here.
func (r *Router) handleDevice(m *nats.Msg) {
	var pm payMsg
	rep := payReply{Instance: r.cfg.Instance}
	if err := json.Unmarshal(m.Data, &pm); err != nil {
		rep.Error = "bad request: " + err.Error()
		r.reply(m, rep)
		return
	}
	if _, ok := r.cfg.Sessions.Session(pm.Payer); !ok {
		rep.Offline, rep.Error = true, "session ended"
		r.reply(m, rep)
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.Timeout)
	defer cancel()
	// The origin recorded the charges on the shared store: read them, so
	// the payment lowers the stored Owed rather than this cache's.
	if err := r.cfg.Local.Resync(ctx, pm.Channel); err != nil {
		rep.Error = err.Error()
		r.reply(m, rep)
		return
	}
	id, err := r.cfg.Local.RequestPayment(ctx, hub.PaymentRequest{
		Listener: &outcomeListener{r: r, origin: pm.Origin, originID: pm.OriginID},
		Payer:    pm.Payer, Payee: pm.Payee, Channel: pm.Channel, Amount: pm.Amount,
		Contract: pm.Contract, EventsRoot: pm.EventsRoot, EventCount: pm.EventCount, Memo: pm.Memo, Hold: pm.Hold,
	})
	switch {
	case errors.Is(err, channels.ErrDeviceOffline):
		rep.Offline, rep.Error = true, err.Error()
	case err != nil:
		rep.Error = err.Error()
	default:
		rep.ID = id
	}
	r.reply(m, rep)
}

func (r *Router) reply(m *nats.Msg, rep payReply) {
	b, err := json.Marshal(rep)
	if err == nil {
		err = m.Respond(b)
	}
	if err != nil {
		r.log.Debug("natsroute: reply not sent", "err", err)
	}
}

// handleInstance takes outcomes of requests this instance sent and
// cancellations of requests it serves.
func (r *Router) handleInstance(m *nats.Msg) {
	switch m.Subject {
	case r.instSubject(r.cfg.Instance, "outcome"):
		var om outcomeMsg
		if err := json.Unmarshal(m.Data, &om); err != nil {
			r.log.Warn("natsroute: bad outcome", "err", err)
			return
		}
		rr := r.forget(om.OriginID)
		if rr == nil {
			r.log.Debug("natsroute: outcome of a forgotten request", "id", om.OriginID)
			return
		}
		if om.Receipt != nil {
			rr.listener.ChargePaid(om.OriginID, om.Receipt)
		} else {
			rr.listener.ChargeRefused(om.OriginID, om.Code, om.Message)
		}
	case r.instSubject(r.cfg.Instance, "cancel"):
		var cm cancelMsg
		if err := json.Unmarshal(m.Data, &cm); err != nil {
			r.log.Warn("natsroute: bad cancel", "err", err)
			return
		}
		r.cfg.Local.CancelPayment(cm.ID)
	}
}

// outcomeListener hears, on the holder, how a request from another
// instance ends, and tells that instance. The channel manager calls it
// under a channel lock: Publish only buffers.
type outcomeListener struct {
	r        *Router
	origin   string
	originID uint64
}

func (l *outcomeListener) send(om outcomeMsg) {
	b, err := json.Marshal(om)
	if err == nil {
		err = l.r.cfg.Conn.Publish(l.r.instSubject(l.origin, "outcome"), b)
	}
	if err != nil {
		l.r.log.Warn("natsroute: outcome not sent", "instance", l.origin, "err", err)
	}
}

func (l *outcomeListener) ChargePaid(_ uint64, receipt []byte) {
	l.send(outcomeMsg{OriginID: l.originID, Receipt: receipt})
}

func (l *outcomeListener) ChargeRefused(_ uint64, code, message string) {
	l.send(outcomeMsg{OriginID: l.originID, Code: code, Message: message})
}
