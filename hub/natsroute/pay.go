package natsroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/msat"
)

// remoteBit marks request ids this router issued for requests served by
// another instance; the channel manager's own ids count up from 1 and
// never reach it.
const remoteBit = uint64(1) << 63

// outcomeRetry is how often a holder sends an outcome again until the
// origin acknowledges it, for at most the Served period.
const outcomeRetry = time.Second

type remoteReq struct {
	listener hub.ChargeListener
	holder   string // instance that took it, once answered
	remoteID uint64 // its id there
	// req is what was asked, to find its payment in the store should
	// the holder die before telling the outcome.
	req hub.PaymentRequest
}

// servedKey names a payment request by the instance that made it and its
// id there: one key is served once.
type servedKey struct {
	origin string
	id     uint64
}

// servedReq is a payment request this holder took: its answer, given again
// to a retry of the same request, and when its outcome was sent.
type servedReq struct {
	rep  payReply
	done time.Time // zero while the device has not answered
	at   time.Time
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
	// Fence names the origin's request in the charges' claims: the
	// holder's store applies the payment only while it is their live
	// request (hub.PaymentRequest.Fence).
	Fence *hub.ChargeFence `json:"fence,omitempty"`
	// Deadline is when the origin stops waiting (its last attempt ends),
	// less half an attempt: a holder that gets to a request only later
	// (it was stalled) does not ask the device, since the origin has
	// given up and will ask again. Instance clocks must agree to well
	// within the margin (NTP).
	Deadline time.Time `json:"deadline,omitzero"`
}

// payReply answers a payMsg.
type payReply struct {
	Instance string `json:"instance"`
	ID       uint64 `json:"id,omitempty"`
	// Served says the request was answered by the device already; its
	// outcome was (or is being) sent, and it is not served again.
	Served  bool   `json:"served,omitempty"`
	Offline bool   `json:"offline,omitempty"`
	Error   string `json:"error,omitempty"`
}

// outcomeMsg tells the origin how a request ended.
type outcomeMsg struct {
	OriginID uint64 `json:"origin_id"`
	Receipt  []byte `json:"receipt,omitempty"`
	Code     string `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
	// Failed: the request can no longer be paid (its session ended);
	// Message says why.
	Failed bool `json:"failed,omitempty"`
}

// cancelMsg tells the holder to forget a request.
type cancelMsg struct {
	Origin   string `json:"origin"`
	OriginID uint64 `json:"origin_id"`
	ID       uint64 `json:"id"`
}

// RequestPayment asks the payer to pay req: over its session here, or via
// the instance that holds it. The request is sent up to Attempts times
// with one id, so a holder that was slow to answer serves it once. It
// returns an error wrapping channels.ErrDeviceOffline when no instance
// holds the payer's session and one wrapping ErrInstanceGone when the
// holder does not answer.
func (r *Router) RequestPayment(ctx context.Context, req hub.PaymentRequest) (uint64, error) {
	if _, ok := r.cfg.Sessions.Session(req.Payer); ok {
		return r.Channels.RequestPayment(ctx, req)
	}
	if req.Listener == nil {
		return 0, fmt.Errorf("%w: charge request without a listener", hub.ErrInvalid)
	}
	id := remoteBit | r.next.Add(1)
	rr := &remoteReq{listener: req.Listener, req: req}
	rr.req.Listener = nil
	r.mu.Lock()
	r.remote[id] = rr
	r.mu.Unlock()
	body, err := json.Marshal(payMsg{
		Origin: r.cfg.Instance, OriginID: id, Payer: req.Payer, Payee: req.Payee, Channel: req.Channel,
		Amount: req.Amount, Contract: req.Contract, EventsRoot: req.EventsRoot, EventCount: req.EventCount,
		Memo: req.Memo, Hold: req.Hold, Fence: req.Fence,
		Deadline: r.clock.Now().Add(time.Duration(r.cfg.Attempts)*r.relay.timeout - r.relay.timeout/2),
	})
	if err != nil {
		r.forget(id)
		return 0, fmt.Errorf("natsroute: encode payment request: %w", err)
	}
	var rep payReply
	for attempt := 1; ; attempt++ {
		err = r.relay.request(ctx, req.Payer, "pay", body, &rep)
		if !errors.Is(err, ErrInstanceGone) || attempt >= r.cfg.Attempts || ctx.Err() != nil {
			break
		}
		r.log.Debug("natsroute: payment request again", "payer", req.Payer, "attempt", attempt+1)
	}
	if err != nil {
		// Nothing was written here: the charges stay owed and charging
		// asks again after its retry delay, by then of the instance the
		// device reconnected to.
		r.forget(id)
		return 0, fmt.Errorf("payer %s: %w", req.Payer, err)
	}
	switch {
	case rep.Offline:
		r.forget(id)
		return 0, fmt.Errorf("%w: %s (on instance %s: %s)", channels.ErrDeviceOffline, req.Payer, rep.Instance, rep.Error)
	case rep.Error != "":
		r.forget(id)
		return 0, fmt.Errorf("natsroute: instance %s refused the payment request for %s: %s", rep.Instance, req.Payer, rep.Error)
	}
	// Served: a retry found the request already answered; its outcome
	// reaches the listener (or did) as any other.
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
	b, err := json.Marshal(cancelMsg{Origin: r.cfg.Instance, OriginID: reqID, ID: rr.remoteID})
	if err == nil {
		err = r.relay.conn.Publish(r.relay.instSubject(rr.holder, "cancel"), b)
	}
	if err != nil {
		r.log.Debug("natsroute: cancel not sent", "instance", rr.holder, "err", err)
	}
}

// servePay serves a payment request for a device whose session is here,
// once per origin and id: a retry of a request in flight gets the same
// answer, one of a request already answered is refused as served.
func (r *Router) servePay(m *nats.Msg) {
	var pm payMsg
	rep := payReply{Instance: r.cfg.Instance}
	if err := json.Unmarshal(m.Data, &pm); err != nil {
		rep.Error = "bad request: " + err.Error()
		r.respond(m, rep)
		return
	}
	key := servedKey{pm.Origin, pm.OriginID}
	now := r.clock.Now()
	r.mu.Lock()
	r.pruneServedLocked(now)
	if s := r.served[key]; s != nil {
		rep = s.rep
		rep.Served = !s.done.IsZero()
		r.mu.Unlock()
		r.respond(m, rep)
		return
	}
	r.mu.Unlock()
	if !pm.Deadline.IsZero() && now.After(pm.Deadline) {
		// Nobody waits for the answer: asking the device now could have
		// it pay charges the origin will ask for again.
		r.log.Warn("natsroute: payment request past its deadline not served (stalled, or clocks apart)",
			"origin", pm.Origin, "late", now.Sub(pm.Deadline))
		rep.Error = "request past its deadline"
		r.respond(m, rep)
		return
	}
	if _, ok := r.cfg.Sessions.Session(pm.Payer); !ok {
		rep.Offline, rep.Error = true, "session ended"
		r.respond(m, rep)
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.relay.timeout)
	defer cancel()
	// The origin recorded the charges on the shared store: read them, so
	// the payment lowers the stored Owed rather than this cache's.
	if err := r.cfg.Local.Resync(ctx, pm.Channel); err != nil {
		rep.Error = err.Error()
		r.respond(m, rep)
		return
	}
	s := &servedReq{at: now, rep: payReply{Instance: r.cfg.Instance}}
	// Claimed before the device is asked: its answer may come at once.
	r.mu.Lock()
	if r.served[key] != nil {
		r.mu.Unlock()
		r.servePay(m) // a retry raced this one: answer as a retry
		return
	}
	r.served[key] = s
	r.mu.Unlock()
	id, err := r.cfg.Local.RequestPayment(ctx, hub.PaymentRequest{
		Listener: &outcomeListener{r: r, key: key},
		Payer:    pm.Payer, Payee: pm.Payee, Channel: pm.Channel, Amount: pm.Amount,
		Contract: pm.Contract, EventsRoot: pm.EventsRoot, EventCount: pm.EventCount, Memo: pm.Memo, Hold: pm.Hold,
		Fence: pm.Fence,
	})
	switch {
	case errors.Is(err, channels.ErrDeviceOffline):
		rep.Offline, rep.Error = true, err.Error()
	case err != nil:
		rep.Error = err.Error()
	default:
		rep.ID = id
	}
	r.mu.Lock()
	if err != nil {
		delete(r.served, key) // not served: a retry may try again
	} else {
		s.rep = rep
	}
	r.mu.Unlock()
	r.respond(m, rep)
}

// pruneServedLocked forgets requests answered more than Served ago, and
// requests never answered after ten times that (the device left without
// paying and the origin's charging asks again under a new id).
func (r *Router) pruneServedLocked(now time.Time) {
	for k, s := range r.served {
		if !s.done.IsZero() && now.Sub(s.done) > r.cfg.Served || now.Sub(s.at) > 10*r.cfg.Served {
			delete(r.served, k)
		}
	}
}

// handleInstance takes outcomes of requests this instance sent (and
// acknowledges each, so the holder stops sending it) and cancellations of
// requests it serves.
func (r *Router) handleInstance(m *nats.Msg) {
	switch m.Subject {
	case r.relay.instSubject(r.cfg.Instance, "outcome"):
		var om outcomeMsg
		if err := json.Unmarshal(m.Data, &om); err != nil {
			r.log.Warn("natsroute: bad outcome", "err", err)
			return
		}
		rr := r.forget(om.OriginID)
		if err := m.Respond(nil); err != nil {
			r.log.Debug("natsroute: outcome not acknowledged", "err", err)
		}
		if rr == nil {
			// Heard before (a resend whose acknowledgement was lost),
			// or cancelled.
			r.log.Debug("natsroute: outcome of a forgotten request", "id", om.OriginID)
			return
		}
		switch {
		case om.Receipt != nil:
			rr.listener.ChargePaid(om.OriginID, om.Receipt)
		case om.Failed:
			rr.listener.ChargeFailed(om.OriginID, om.Message)
		default:
			rr.listener.ChargeRefused(om.OriginID, om.Code, om.Message)
		}
	case r.relay.instSubject(r.cfg.Instance, "alive"):
		// A liveness probe (watchHolders): answering is the answer.
		if err := m.Respond(nil); err != nil {
			r.log.Debug("natsroute: liveness probe not answered", "err", err)
		}
	case r.relay.instSubject(r.cfg.Instance, "cancel"):
		var cm cancelMsg
		if err := json.Unmarshal(m.Data, &cm); err != nil {
			r.log.Warn("natsroute: bad cancel", "err", err)
			return
		}
		r.cfg.Local.CancelPayment(cm.ID)
		r.mu.Lock()
		if s := r.served[servedKey{cm.Origin, cm.OriginID}]; s != nil && s.done.IsZero() {
			s.done = r.clock.Now()
		}
		r.mu.Unlock()
	}
}

// outcomeListener hears, on the holder, how a request from another
// instance ends, and tells that instance until it acknowledges. The
// channel manager calls it under a channel lock: the sending runs on a
// goroutine of the router's.
type outcomeListener struct {
	r   *Router
	key servedKey
}

func (l *outcomeListener) send(om outcomeMsg) {
	r := l.r
	r.mu.Lock()
	if s := r.served[l.key]; s != nil {
		s.done = r.clock.Now()
	}
	r.mu.Unlock()
	b, err := json.Marshal(om)
	if err != nil {
		r.log.Error("natsroute: encode outcome", "err", err)
		return
	}
	subj := r.relay.instSubject(l.key.origin, "outcome")
	r.goOwned(func() {
		deadline := r.clock.Now().Add(r.cfg.Served)
		for {
			ctx, cancel := context.WithTimeout(r.ctx, outcomeRetry)
			_, err := r.relay.conn.RequestWithContext(ctx, subj, b)
			cancel()
			if err == nil || r.ctx.Err() != nil {
				return
			}
			if r.clock.Now().After(deadline) {
				r.log.Warn("natsroute: outcome never acknowledged", "instance", l.key.origin, "id", l.key.id, "err", err)
				return
			}
			if errors.Is(err, nats.ErrNoResponders) {
				// The origin is down or restarting: wait, then again.
				select {
				case <-r.ctx.Done():
					return
				case <-r.clock.TickAfter(outcomeRetry):
				}
			}
		}
	})
}

func (l *outcomeListener) ChargePaid(_ uint64, receipt []byte) {
	l.send(outcomeMsg{OriginID: l.key.id, Receipt: receipt})
}

func (l *outcomeListener) ChargeRefused(_ uint64, code, message string) {
	l.send(outcomeMsg{OriginID: l.key.id, Code: code, Message: message})
}

func (l *outcomeListener) ChargeFailed(_ uint64, reason string) {
	l.send(outcomeMsg{OriginID: l.key.id, Failed: true, Message: reason})
}

// watchHolders probes, every HolderCheck, each instance holding a request
// this one routed to it. An instance that died (kill -9, a crash) took
// its subscriptions with it, so NATS answers the probe with no responders
// at once: its requests will never have an outcome told, and their
// charges would wait out charging's timeout and be given up (issue 12:
// events left without a receipt after a kill). Each is settled from the
// store instead (holderGone).
func (r *Router) watchHolders() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.clock.TickAfter(r.cfg.HolderCheck):
		}
		holders := map[string]bool{}
		r.mu.Lock()
		for _, rr := range r.remote {
			if rr.holder != "" {
				holders[rr.holder] = true
			}
		}
		r.mu.Unlock()
		for h := range holders {
			ctx, cancel := context.WithTimeout(r.ctx, r.relay.timeout)
			_, err := r.relay.conn.RequestWithContext(ctx, r.relay.instSubject(h, "alive"), nil)
			cancel()
			// A timeout is a stalled or slow holder, which may still
			// ask the device: only an instance that is gone counts.
			if errors.Is(err, nats.ErrNoResponders) {
				r.holderGone(h)
			}
		}
	}
}

// holderGone settles the requests routed to instance h, which is gone. A
// request its device paid there before h died has its payment stored,
// with the receipt naming its events: it is reported paid with that
// receipt. Any other can no longer be paid (the device's session died
// with h, and a payment naming the request sent again elsewhere is
// refused, channels.ChanRequestUnknown) and is reported failed, so
// charging asks again on the device's next session.
func (r *Router) holderGone(h string) {
	r.mu.Lock()
	var gone []uint64
	for id, rr := range r.remote {
		if rr.holder == h {
			gone = append(gone, id)
		}
	}
	r.mu.Unlock()
	for _, id := range gone {
		rr := r.forget(id)
		if rr == nil {
			continue // its outcome came meanwhile
		}
		receipt, err := r.storedReceipt(r.ctx, rr.req)
		switch {
		case err != nil:
			// Unknown: asking again could have the device pay twice;
			// the request stays with charging's timeout.
			r.log.Warn("natsroute: request of a gone instance not settled", "instance", h, "payer", rr.req.Payer, "err", err)
		case receipt != nil:
			r.log.Info("natsroute: request paid on a gone instance", "instance", h, "payer", rr.req.Payer)
			rr.listener.ChargePaid(id, receipt)
		default:
			rr.listener.ChargeFailed(id, "instance "+h+" holding the session is gone")
		}
	}
}

// storedReceipt returns the stored receipt of the payment answering req,
// or nil when the channel holds none: a version-2 receipt to req's payee
// for req's amount, contract and events.
func (r *Router) storedReceipt(ctx context.Context, req hub.PaymentRequest) ([]byte, error) {
	rs, err := charging.ChargeReceipts(ctx, r.cfg.Local, req.Channel)
	if err != nil {
		return nil, err
	}
	for _, rc := range rs {
		if rc.Payee == req.Payee && rc.Amount == req.Amount && rc.Contract == req.Contract &&
			rc.EventsRoot == req.EventsRoot && rc.EventCount == req.EventCount {
			return rc.Raw, nil
		}
	}
	return nil, nil
}
