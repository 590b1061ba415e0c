package channels

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// holdAsk is a provider's hold request forwarded to the payer, waiting for
// its HoldAuthorize or refusal. It lives in memory only: a hold that was
// never authorised reserves nothing and costs nothing to forget.
type holdAsk struct {
	req     wire.HoldRequest // as forwarded, Provider set
	expires time.Time
}

// captureReq is a PaymentRequest sent to the device for a capture. Both the
// device's Pay and the capture timer settle it, under the channel's lock.
type captureReq struct {
	id       uint64
	holdID   [16]byte
	provider string
	amount   msat.Amount
	// onCredit is set once the timer charged the capture on credit; a
	// late Pay for it then settles the credit instead of capturing again.
	onCredit bool
	// done is closed when the request no longer waits for the device.
	done chan struct{}
}

// holdResult tells a provider how its hold request ended.
func (c *Manager) holdResult(ctx context.Context, provider string, id [16]byte, ce *wire.ChannelError) {
	res := &wire.HoldResult{HoldID: id, Status: wire.HoldAuthorized}
	if ce != nil {
		res.Status, res.Code, res.Message = wire.HoldRefused, ce.Code, ce.Message
	}
	c.send(ctx, provider, res)
}

// holdRequest checks a provider's hold request and forwards it to the payer
// device. Every outcome reaches the provider as a HoldResult, now when the
// request is refused, later when the device answers. With mayForward, a
// payer whose session is on another instance is asked there: the request
// waits for the device's answer on the instance that holds its session.
func (c *Manager) holdRequest(ctx context.Context, provider string, m *wire.HoldRequest, mayForward bool) {
	fwd := *m
	fwd.Provider = provider
	if mayForward {
		if routed, err := c.forward(ctx, m.Payer, provider, &fwd); routed {
			if err != nil {
				c.log.Warn("hold request not forwarded", "provider", provider, "payer", m.Payer, "err", err)
				c.holdResult(ctx, provider, m.HoldID, refuse(wire.ChanPayerOffline, "the payer's hub instance did not answer"))
			}
			return
		}
	}
	expires, err := c.checkHoldRequest(ctx, &fwd)
	if err != nil {
		var ce *wire.ChannelError
		if !errors.As(err, &ce) {
			c.log.Error("hold request failed", "provider", fwd.Provider, "err", err)
			ce = refuse(wire.ChanInternal, "internal error")
		}
		c.holdResult(ctx, fwd.Provider, m.HoldID, ce)
		return
	}
	c.mu.Lock()
	if _, dup := c.asks[m.HoldID]; dup {
		c.mu.Unlock()
		c.holdResult(ctx, fwd.Provider, m.HoldID, refuse(wire.ChanHoldIDInUse, "hold id in use"))
		return
	}
	c.asks[m.HoldID] = &holdAsk{req: fwd, expires: expires}
	c.mu.Unlock()
	if !c.sendHere(ctx, fwd.Payer, &fwd) {
		c.mu.Lock()
		delete(c.asks, m.HoldID)
		c.mu.Unlock()
		c.holdResult(ctx, fwd.Provider, m.HoldID, refuse(wire.ChanPayerOffline, "payer is not connected"))
	}
}

// checkHoldRequest applies the protocol's checks to a hold request and
// returns its expiry.
func (c *Manager) checkHoldRequest(ctx context.Context, m *wire.HoldRequest) (time.Time, error) {
	prov, err := c.cfg.Devices.Device(ctx, m.Provider)
	if err != nil {
		return time.Time{}, err
	}
	if prov.Status != hub.StatusActive || !prov.HasRole(hub.RoleProvider) {
		return time.Time{}, refuse(wire.ChanNotOwner, "only an active provider may ask for holds")
	}
	now := c.clock.Now()
	expires := time.Unix(int64(m.Expires), 0)
	switch {
	case m.Max == 0:
		return time.Time{}, refuse(wire.ChanBadParams, "hold of 0 msat")
	case !expires.After(now) || expires.Sub(now) > c.cfg.MaxHoldDuration:
		return time.Time{}, refuse(wire.ChanBadParams, "hold must expire within %s", c.cfg.MaxHoldDuration)
	}
	if _, err := c.store.Hold(ctx, m.HoldID); err == nil {
		return time.Time{}, refuse(wire.ChanHoldIDInUse, "hold id in use")
	} else if !errors.Is(err, hub.ErrNotFound) {
		return time.Time{}, err
	}
	payer, err := c.cfg.Devices.Device(ctx, m.Payer)
	if errors.Is(err, hub.ErrNotFound) {
		return time.Time{}, refuse(wire.ChanUnknownChannel, "payer %q is not registered", m.Payer)
	}
	if err != nil {
		return time.Time{}, err
	}
	if payer.Status != hub.StatusActive {
		return time.Time{}, refuse(wire.ChanFrozen, "payer is %s", payer.Status)
	}
	recs, err := c.store.ChannelsByDevice(ctx, m.Payer)
	if err != nil {
		return time.Time{}, err
	}
	ready := false
	for _, r := range recs {
		if r.Status != hub.ChannelReady {
			continue
		}
		ready = true
		e, err := c.entry(ctx, r.Funding)
		if err != nil {
			return time.Time{}, err
		}
		e.lock()
		free := e.free()
		e.unlock()
		if free >= m.Max {
			return expires, nil
		}
	}
	if !ready {
		return time.Time{}, refuse(wire.ChanUnknownChannel, "payer has no ready channel")
	}
	return time.Time{}, refuse(wire.ChanOverCapacity, "no channel of the payer has %d msat free", uint64(m.Max))
}

// holdAuthorize turns the device's signed authorisation into an active hold
// that reserves capacity, and tells the provider. An authorisation it
// refuses ends the request too: the provider gets the refusal at once
// rather than when the request expires, and the device, told by the
// ChannelError, forgets the hold it signed.
func (c *Manager) holdAuthorize(ctx context.Context, s *session.Session, m *wire.HoldAuthorize) error {
	err := c.authorizeHold(ctx, s, m)
	var ce *wire.ChannelError
	if errors.As(err, &ce) {
		if ask := c.endAsk(s.DeviceID(), m.HoldID); ask != nil {
			c.holdResult(ctx, ask.req.Provider, m.HoldID, &wire.ChannelError{Code: ce.Code, Message: ce.Message})
		}
	}
	return err
}

// endAsk forgets the hold request id if it waits for deviceID and returns
// it; nil otherwise.
func (c *Manager) endAsk(deviceID string, id [16]byte) *holdAsk {
	c.mu.Lock()
	defer c.mu.Unlock()
	ask := c.asks[id]
	if ask == nil || ask.req.Payer != deviceID {
		return nil
	}
	delete(c.asks, id)
	return ask
}

func (c *Manager) authorizeHold(ctx context.Context, s *session.Session, m *wire.HoldAuthorize) error {
	c.mu.RLock()
	ask := c.asks[m.HoldID]
	c.mu.RUnlock()
	if ask == nil || ask.req.Payer != s.DeviceID() {
		return refuse(wire.ChanHoldUnknown, "no hold request %x waits for this device", m.HoldID[:])
	}
	if m.Provider != ask.req.Provider || m.Max != ask.req.Max || m.Expires != ask.req.Expires {
		return refuse(wire.ChanBadParams, "authorisation differs from the request")
	}
	e, err := c.entry(ctx, m.ChanID)
	if errors.Is(err, hub.ErrNotFound) {
		return refuse(wire.ChanUnknownChannel, "no channel %v", m.ChanID)
	}
	if err != nil {
		return err
	}
	e.lock()
	defer e.unlock()
	switch {
	case e.rec.DeviceID != s.DeviceID():
		return refuse(wire.ChanNotOwner, "channel belongs to another device")
	case e.rec.Status != hub.ChannelReady:
		return refuse(statusCode(e.rec.Status), "channel is %s", e.rec.Status)
	case !c.clock.Now().Before(ask.expires):
		return refuse(wire.ChanHoldExpired, "hold request expired")
	case e.free() < m.Max:
		return refuse(wire.ChanOverCapacity, "channel has %d msat free", uint64(e.free()))
	}
	if !c.holdSigned(s, e, m) {
		return refuse(wire.ChanBadSignature, "hold authorisation signature does not verify")
	}
	h := hub.Hold{
		ID: m.HoldID, Channel: m.ChanID, DeviceID: s.DeviceID(), Provider: m.Provider,
		Max: m.Max, Expires: ask.expires, Status: hub.HoldActive, DeviceSig: m.Sig,
		Memo: ask.req.Memo, CreatedAt: c.clock.Now().UTC(),
	}
	if err := c.store.PutHold(ctx, h); err != nil {
		return fmt.Errorf("put hold: %w", err)
	}
	e.holds[h.ID] = &h
	c.mu.Lock()
	c.holdIndex[h.ID] = m.ChanID
	delete(c.asks, h.ID)
	c.mu.Unlock()
	c.log.Info("hold authorized", "hold", fmt.Sprintf("%x", h.ID), "channel", h.Channel, "max", h.Max)
	c.holdResult(ctx, h.Provider, h.ID, nil)
	return nil
}

// holdSigned checks the device's signature on a hold with the key the
// session proved, or with the channel's key should they differ after a
// rotation.
func (c *Manager) holdSigned(s *session.Session, e *chanEntry, m *wire.HoldAuthorize) bool {
	for _, k := range []hub.PubKey{s.Key(), e.rec.DeviceKey} {
		pub, err := btcec.ParsePubKey(k[:])
		if err != nil {
			continue
		}
		if channel.VerifyHold(pub, m.HoldID, m.ChanID, m.Provider, m.Max, m.Expires, m.Sig) == nil {
			return true
		}
	}
	return false
}

// deviceError handles a ChannelError from a device: a refused hold request
// is passed on to its provider; anything else is only logged.
func (c *Manager) deviceError(ctx context.Context, s *session.Session, m *wire.ChannelError) {
	if c.chargeRefused(s.DeviceID(), m) {
		return
	}
	if m.HoldID != nil {
		if ask := c.endAsk(s.DeviceID(), *m.HoldID); ask != nil {
			c.holdResult(ctx, ask.req.Provider, *m.HoldID, &wire.ChannelError{Code: m.Code, Message: m.Message})
			return
		}
	}
	c.log.Info("device reported an error", "device", s.DeviceID(), "code", m.Code, "message", m.Message)
}

// activeHold finds an active hold and its channel, locked. The caller
// unlocks e.mu.
func (c *Manager) activeHold(ctx context.Context, id [16]byte) (*chanEntry, *hub.Hold, error) {
	c.mu.RLock()
	op, ok := c.holdIndex[id]
	c.mu.RUnlock()
	if !ok {
		h, err := c.store.Hold(ctx, id)
		if errors.Is(err, hub.ErrNotFound) {
			return nil, nil, refuse(wire.ChanHoldUnknown, "no hold %x", id[:])
		}
		if err != nil {
			return nil, nil, err
		}
		if h.Status != hub.HoldActive {
			return nil, nil, refuse(wire.ChanHoldExpired, "hold is %s", h.Status)
		}
		op = h.Channel
	}
	e, err := c.entry(ctx, op)
	if err != nil {
		return nil, nil, err
	}
	e.lock()
	h := e.holds[id]
	if h == nil {
		e.unlock()
		return nil, nil, refuse(wire.ChanHoldExpired, "hold is closed")
	}
	return e, h, nil
}

// capture asks the device to pay a provider's capture against its hold. If
// the device is offline, or does not pay within CaptureTimeout, the capture
// is charged on credit, within the channel's CreditLimit. With mayForward,
// a capture whose payer is on another instance runs there, where the
// device's payment arrives.
func (c *Manager) capture(ctx context.Context, provider string, m *wire.Capture, mayForward bool) error {
	if mayForward {
		if routed, err := c.forwardHold(ctx, m.HoldID, provider, m); routed {
			return err
		}
	}
	e, h, err := c.activeHold(ctx, m.HoldID)
	if err != nil {
		return err
	}
	defer e.unlock()
	switch {
	case h.Provider != provider:
		return refuse(wire.ChanNotOwner, "hold belongs to another provider")
	case !c.clock.Now().Before(h.Expires):
		return refuse(wire.ChanHoldExpired, "hold expired")
	case m.Amount == 0:
		return refuse(wire.ChanBadAmount, "capture of 0 msat")
	case m.Amount > h.Remaining()-e.asked[h.ID]:
		return refuse(wire.ChanHoldExceeded, "capture of %d msat, hold has %d msat left",
			uint64(m.Amount), uint64(h.Remaining()-e.asked[h.ID]))
	case e.rec.Status != hub.ChannelReady:
		return refuse(statusCode(e.rec.Status), "channel is %s", e.rec.Status)
	}
	req := &captureReq{
		id: c.newReqID(), holdID: h.ID, provider: h.Provider, amount: m.Amount, done: make(chan struct{}),
	}
	e.reqs[req.id] = req
	e.asked[h.ID] += m.Amount
	hid := h.ID
	sent := c.sendHere(ctx, e.rec.DeviceID, &wire.PaymentRequest{
		ReqID: req.id, ChanID: e.rec.Funding, Payee: h.Provider, Amount: m.Amount, HoldID: &hid, Memo: m.Memo,
	})
	if !sent || !c.goOwned(func() { c.captureTimer(e, req) }) {
		// Nobody can pay it now: the device is offline (or the hub is
		// stopping), so the provider's service is charged on credit.
		c.chargeOnCreditLocked(c.ctx, e, req)
	}
	return nil
}

func (c *Manager) newReqID() uint64 { return atomic.AddUint64(&c.nextReq, 1) }

// captureTimer charges req on credit unless the device pays it within
// CaptureTimeout.
func (c *Manager) captureTimer(e *chanEntry, req *captureReq) {
	select {
	case <-c.clock.TickAfter(c.cfg.CaptureTimeout):
	case <-req.done:
		return
	case <-c.ctx.Done():
		return
	}
	e.lock()
	defer e.unlock()
	select {
	case <-req.done:
		return
	default:
	}
	if c.capturedElsewhere(c.ctx, e, req) {
		return
	}
	c.chargeOnCreditLocked(c.ctx, e, req)
}

// capturedElsewhere reports whether the device paid req on another
// instance: it moved there after this one asked it, and paid the capture
// against the hold there. The stored hold then has captured more than this
// cache knows; req is settled as answered, not charged on credit a second
// time. The caller holds e.mu.
func (c *Manager) capturedElsewhere(ctx context.Context, e *chanEntry, req *captureReq) bool {
	h := e.holds[req.holdID]
	if c.cfg.Relay == nil || h == nil {
		return false
	}
	stored, err := c.store.Hold(ctx, req.holdID)
	if err != nil || stored.Captured < h.Captured+req.amount {
		return false
	}
	h.Captured += req.amount
	c.answered(e, req)
	c.log.Info("capture paid on another instance", "hold", fmt.Sprintf("%x", req.holdID), "amount", req.amount)
	return true
}

// chargeOnCreditLocked records an unpaid capture as Owed, against its hold
// if that is still active. Past the credit limit the provider is told
// "credit-limit": a signal to stop the service.
func (c *Manager) chargeOnCreditLocked(ctx context.Context, e *chanEntry, req *captureReq) {
	close(req.done)
	e.asked[req.holdID] -= req.amount
	if e.asked[req.holdID] == 0 {
		delete(e.asked, req.holdID)
	}
	hid := req.holdID
	holdPtr := &hid
	if e.holds[hid] == nil {
		holdPtr = nil
	}
	err := c.store.ApplyOwed(ctx, e.rec.Funding, holdPtr, req.amount, c.cfg.CreditLimit)
	if errors.Is(err, hub.ErrHoldConflict) && holdPtr != nil {
		holdPtr = nil
		err = c.store.ApplyOwed(ctx, e.rec.Funding, nil, req.amount, c.cfg.CreditLimit)
	}
	if err != nil {
		delete(e.reqs, req.id)
		code := wire.ChanInternal
		if errors.Is(err, hub.ErrCreditLimit) {
			code = wire.ChanCreditLimit
		} else {
			c.log.Error("charge on credit failed", "channel", e.rec.Funding, "err", err)
		}
		ce := refuse(code, "capture of %d msat was not paid and exceeds the channel's credit", uint64(req.amount))
		ce.HoldID, ce.ChanID = &hid, &e.rec.Funding
		c.send(ctx, req.provider, ce)
		return
	}
	e.rec.Owed += req.amount
	if holdPtr != nil {
		e.holds[hid].Captured += req.amount
	}
	req.onCredit = true
	c.log.Info("capture charged on credit", "channel", e.rec.Funding, "amount", req.amount, "owed", e.rec.Owed)
}

// matchRequest finds the capture request a payment answers: the one it
// names, or else the oldest waiting one of the same hold and amount.
// Called with the channel locked.
func (c *Manager) matchRequest(e *chanEntry, m *wire.Pay) *captureReq {
	if m.ReqID != nil {
		if r := e.reqs[*m.ReqID]; r != nil && (m.HoldID == nil || *m.HoldID == r.holdID) {
			return r
		}
	}
	if m.HoldID == nil {
		return nil
	}
	var best *captureReq
	for _, r := range e.reqs {
		if r.holdID == *m.HoldID && r.amount == m.Amount && !r.onCredit && (best == nil || r.id < best.id) {
			best = r
		}
	}
	return best
}

// answered settles req after the device paid it.
func (c *Manager) answered(e *chanEntry, req *captureReq) {
	delete(e.reqs, req.id)
	if req.onCredit {
		return
	}
	close(req.done)
	if e.asked[req.holdID] -= req.amount; e.asked[req.holdID] == 0 {
		delete(e.asked, req.holdID)
	}
}

// release ends a hold at its provider's request; with mayForward, on the
// instance holding the payer's session, whose cache holds the hold's
// captures in flight.
func (c *Manager) release(ctx context.Context, provider string, m *wire.Release, mayForward bool) error {
	if mayForward {
		if routed, err := c.forwardHold(ctx, m.HoldID, provider, m); routed {
			return err
		}
	}
	e, h, err := c.activeHold(ctx, m.HoldID)
	if err != nil {
		return err
	}
	defer e.unlock()
	if h.Provider != provider {
		return refuse(wire.ChanNotOwner, "hold belongs to another provider")
	}
	return c.closeHoldLocked(ctx, e, h, hub.HoldReleased, wire.HoldReleased)
}

// closeHoldLocked ends one active hold: stored with its final status,
// reservation freed, device and provider told.
func (c *Manager) closeHoldLocked(ctx context.Context, e *chanEntry, h *hub.Hold, st hub.HoldStatus, why wire.HoldCloseReason) error {
	closed := *h
	closed.Status = st
	if err := c.store.PutHold(ctx, closed); err != nil {
		return fmt.Errorf("close hold: %w", err)
	}
	delete(e.holds, h.ID)
	c.mu.Lock()
	delete(c.holdIndex, h.ID)
	c.mu.Unlock()
	msg := &wire.HoldClosed{HoldID: h.ID, Captured: h.Captured, Reason: why}
	c.send(ctx, h.DeviceID, msg)
	c.send(ctx, h.Provider, msg)
	c.log.Info("hold closed", "hold", fmt.Sprintf("%x", h.ID), "reason", why, "captured", h.Captured)
	return nil
}

// closeHoldsLocked ends every active hold of a channel that stops taking
// payments; captures still waiting for the device are dropped with them.
func (c *Manager) closeHoldsLocked(ctx context.Context, e *chanEntry, st hub.HoldStatus, why wire.HoldCloseReason) {
	for _, h := range e.holds {
		if err := c.closeHoldLocked(ctx, e, h, st, why); err != nil {
			c.log.Error("closing hold failed", "hold", fmt.Sprintf("%x", h.ID), "err", err)
		}
	}
	for id, r := range e.reqs {
		if !r.onCredit {
			close(r.done)
		}
		delete(e.reqs, id)
	}
	clear(e.asked)
}

// expireHolds closes holds past their expiry and forgets hold requests the
// device never answered.
func (c *Manager) expireHolds(ctx context.Context) {
	now := c.clock.Now()
	type ref struct {
		id [16]byte
		op btcwire.OutPoint
	}
	var refs []ref
	var stale []*holdAsk
	c.mu.Lock()
	for id, op := range c.holdIndex {
		refs = append(refs, ref{id, op})
	}
	for id, a := range c.asks {
		if !now.Before(a.expires) {
			stale = append(stale, a)
			delete(c.asks, id)
		}
	}
	c.mu.Unlock()
	for _, a := range stale {
		c.holdResult(ctx, a.req.Provider, a.req.HoldID, refuse(wire.ChanHoldExpired, "the payer did not answer"))
	}
	for _, r := range refs {
		e, err := c.entry(ctx, r.op)
		if err != nil {
			continue
		}
		e.lock()
		if h := e.holds[r.id]; h != nil && !now.Before(h.Expires) {
			if err := c.closeHoldLocked(ctx, e, h, hub.HoldExpired, wire.HoldExpired); err != nil {
				c.log.Error("expiring hold failed", "err", err)
			}
		}
		e.unlock()
	}
}
