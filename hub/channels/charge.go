package channels

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// ErrDeviceOffline is returned by RequestPayment when the payer has no live
// session to ask.
var ErrDeviceOffline = errors.New("channels: device not connected")

// ChargeListener hears how the payment requests sent by RequestPayment end
// (hub.ChargeListener).
type ChargeListener = hub.ChargeListener

// PaymentRequest is a payment the hub asks a payer for (hub.PaymentRequest).
type PaymentRequest = hub.PaymentRequest

// chargeBook is the Channels' record of payment requests sent for charges,
// until the device pays or refuses them or the requester cancels them. Its
// zero value is ready to use.
type chargeBook struct {
	mu   sync.Mutex
	reqs map[uint64]*chargeReq
}

// chargeReq is a payment request sent for charges and the session it was
// sent on: once that session ends, nothing can pay the request any more.
type chargeReq struct {
	PaymentRequest
	sess *session.Session
}

// CreditLimit is the per-channel bound on service given on credit
// (invariant I1); charging records charges against it.
func (c *Manager) CreditLimit() msat.Amount { return c.cfg.CreditLimit }

// PayerChannel returns the ready channel of payer with the most free
// capacity, where its charges are recorded. It returns an error wrapping
// ErrNotFound when the payer has no ready channel.
//
// A payer with one ready channel (the common case) has it returned
// without taking its lock: there is nothing to compare, and the lock is
// held by the payer's own payment across its durable write, which would
// hold up the intake worker asking.
func (c *Manager) PayerChannel(ctx context.Context, payer string) (btcwire.OutPoint, error) {
	recs, err := c.store.ChannelsByDevice(ctx, payer)
	if err != nil {
		return btcwire.OutPoint{}, err
	}
	var ready []hub.ChannelRecord
	for _, r := range recs {
		if r.Status == hub.ChannelReady {
			ready = append(ready, r)
		}
	}
	if len(ready) == 1 {
		return ready[0].Funding, nil
	}
	var (
		best     btcwire.OutPoint
		bestFree msat.Amount
		found    bool
	)
	for _, r := range ready {
		e, err := c.entry(ctx, r.Funding)
		if err != nil {
			return btcwire.OutPoint{}, err
		}
		e.lock()
		free, isReady := e.free(), e.rec.Status == hub.ChannelReady
		e.unlock()
		if isReady && (!found || free > bestFree) {
			best, bestFree, found = r.Funding, free, true
		}
	}
	if !found {
		return btcwire.OutPoint{}, fmt.Errorf("%w: payer %s has no ready channel", hub.ErrNotFound, payer)
	}
	return best, nil
}

// ChannelOwed returns what is owed on the channel funded by op and whether
// the channel is ready to take payments. Charging uses it after a restart
// to tell reloaded owed charges that were paid from those still owed. It
// returns an error wrapping ErrNotFound for an unknown channel.
func (c *Manager) ChannelOwed(ctx context.Context, op btcwire.OutPoint) (msat.Amount, bool, error) {
	e, err := c.entry(ctx, op)
	if err != nil {
		return 0, false, err
	}
	e.lock()
	defer e.unlock()
	return e.rec.Owed, e.rec.Status == hub.ChannelReady, nil
}

// RecordCharges writes charges through store.RecordCharges with the
// channels' credit limit and raises the cached Owed of each channel the
// owed charges name by what was recorded as owed. It shares chargeMu of
// each such channel: nothing but a payment changes the channel meanwhile,
// and a payment's store write lowers the stored Owed itself, so a batch
// does not wait for the commit of its payer's payment (the intake's
// workers would otherwise queue behind the payers' payments). Additions
// to Owed commute, so two batches naming the same channel are recorded
// side by side and can share the store's group commit. A payment on the
// channel meanwhile learns of the batch by charging and charged
// (settleOwed).
func (c *Manager) RecordCharges(ctx context.Context, store hub.ChargeStore, cs []hub.Charge) ([]hub.ChargeResult, error) {
	var ops []btcwire.OutPoint
	for i := range cs {
		if cs[i].Status == hub.ChargeOwed && cs[i].Channel != (btcwire.OutPoint{}) {
			ops = append(ops, cs[i].Channel)
		}
	}
	slices.SortFunc(ops, func(a, b btcwire.OutPoint) int {
		if d := slices.Compare(a.Hash[:], b.Hash[:]); d != 0 {
			return d
		}
		return cmp.Compare(a.Index, b.Index)
	})
	ops = slices.Compact(ops)
	entries := make(map[btcwire.OutPoint]*chanEntry, len(ops))
	for _, op := range ops {
		e, err := c.entry(ctx, op)
		if err != nil {
			for _, held := range entries {
				held.chargeMu.RUnlock()
			}
			return nil, fmt.Errorf("charge channel %v: %w", op, err)
		}
		// Sorted order, as every taker of several channel locks: a
		// waiting taker of the whole channel (lock) holds no other
		// channel's, so no cycle.
		e.chargeMu.RLock()
		entries[op] = e
	}
	for _, e := range entries {
		e.owedMu.Lock()
		e.charging++
		e.owedMu.Unlock()
	}
	res, err := store.RecordCharges(ctx, cs, c.cfg.CreditLimit)
	added := make(map[*chanEntry]msat.Amount, len(entries))
	if err == nil {
		for _, r := range res {
			if r.Duplicate || r.Stored.Status != hub.ChargeOwed {
				continue
			}
			if e := entries[r.Stored.Channel]; e != nil {
				added[e] += r.Stored.Amount
			}
		}
	}
	for _, e := range entries {
		e.owedMu.Lock()
		e.rec.Owed += added[e]
		e.charging--
		e.charged++
		e.owedMu.Unlock()
		e.chargeMu.RUnlock()
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// RequestPayment asks the payer to pay r over its session and returns the
// request id its Pay must name. The payment's receipt is version 2 (it names
// r's contract and events) and r.Listener hears when it is paid or
// refused. It returns ErrDeviceOffline when the payer is not connected.
func (c *Manager) RequestPayment(ctx context.Context, r PaymentRequest) (uint64, error) {
	if r.Listener == nil {
		return 0, fmt.Errorf("%w: charge request without a listener", hub.ErrInvalid)
	}
	if r.Amount == 0 || r.EventCount == 0 {
		return 0, fmt.Errorf("%w: charge request of %d msat for %d events", hub.ErrInvalid, uint64(r.Amount), r.EventCount)
	}
	s, ok := c.cfg.Sessions.Session(r.Payer)
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrDeviceOffline, r.Payer)
	}
	id := c.newReqID()
	// Booked before it is sent, so SessionEnded (which runs once s is
	// closing, when a send fails) finds every request sent on s.
	c.charges.mu.Lock()
	if c.charges.reqs == nil {
		c.charges.reqs = make(map[uint64]*chargeReq)
	}
	c.charges.reqs[id] = &chargeReq{PaymentRequest: r, sess: s}
	c.charges.mu.Unlock()
	// The device may have its own payment waiting for a slot in front of
	// the one that answers this request (paySlots).
	c.slots.grant(r.Payer)
	err := s.Send(ctx, &wire.PaymentRequest{
		ReqID: id, ChanID: r.Channel, Payee: r.Payee, Amount: r.Amount, Memo: r.Memo, HoldID: r.Hold,
	})
	if err != nil {
		c.log.Debug("payment request not sent", "device", r.Payer, "err", err)
		if c.endRequest(id) == nil {
			// SessionEnded took it first and reported it failed.
			return id, nil
		}
		return 0, fmt.Errorf("%w: %s", ErrDeviceOffline, r.Payer)
	}
	return id, nil
}

// CancelPayment forgets a charge request: a later Pay naming it is refused
// (ChanRequestUnknown) and nobody is told.
func (c *Manager) CancelPayment(reqID uint64) {
	c.endRequest(reqID)
}

// endRequest removes charge request id from the book, withdrawing the pass
// it granted if unused, and returns it (nil when it had ended before).
func (c *Manager) endRequest(id uint64) *chargeReq {
	c.charges.mu.Lock()
	r := c.charges.reqs[id]
	delete(c.charges.reqs, id)
	c.charges.mu.Unlock()
	if r != nil {
		c.slots.withdraw(r.Payer)
	}
	return r
}

// SessionEnded implements session.Ender: the charge requests sent on s
// that the device neither paid nor refused are ended and their listeners
// told they failed, so that charging asks again on the device's next
// session. It runs once s's read loop has returned, so no payment of s
// is being handled: one that was is reported paid (or refused) already.
// A payment naming an ended request that comes later (the device sends
// its unanswered payment again on its next session, here or on another
// instance) is refused (ChanRequestUnknown), so the charges are paid once,
// by the next request.
func (c *Manager) SessionEnded(s *session.Session) {
	var ended []uint64
	c.charges.mu.Lock()
	for id, r := range c.charges.reqs {
		if r.sess == s {
			ended = append(ended, id)
		}
	}
	c.charges.mu.Unlock()
	for _, id := range ended {
		if r := c.endRequest(id); r != nil {
			r.Listener.ChargeFailed(id, "session ended: "+s.DeviceID())
		}
	}
}

// chargeRequest finds the charge request payment m answers: the one it
// names, for the same channel, payer, payee and amount, without a hold.
func (c *Manager) chargeRequest(payer string, m *wire.Pay) (uint64, *PaymentRequest) {
	if m.ReqID == nil {
		return 0, nil
	}
	c.charges.mu.Lock()
	defer c.charges.mu.Unlock()
	r := c.charges.reqs[*m.ReqID]
	if r == nil || r.Payer != payer || r.Payee != m.Payee || r.Channel != m.ChanID || r.Amount != m.Amount {
		return 0, nil
	}
	// A charge paid against a hold names it, and only it.
	if (r.Hold == nil) != (m.HoldID == nil) || r.Hold != nil && *r.Hold != *m.HoldID {
		return 0, nil
	}
	return *m.ReqID, &r.PaymentRequest
}

// chargeMeta fills the version-2 fields of a receipt for a charge payment.
func chargeMeta(r *channel.Receipt, cr *PaymentRequest) {
	if cr == nil {
		return
	}
	r.Contract, r.EventsRoot, r.EventCount = cr.Contract, cr.EventsRoot, cr.EventCount
}

// chargePaid settles a charge request once its payment is durable; only the
// first payment answering it is reported.
func (c *Manager) chargePaid(id uint64, receipt []byte) {
	if r := c.endRequest(id); r != nil {
		r.Listener.ChargePaid(id, receipt)
	}
}

// chargeRefused handles a device's refusal of a charge request, reporting
// whether m was about one.
func (c *Manager) chargeRefused(deviceID string, m *wire.ChannelError) bool {
	if m.ReqID == nil || m.HoldID != nil {
		return false
	}
	c.charges.mu.Lock()
	r, ok := c.charges.reqs[*m.ReqID]
	ok = ok && r.Payer == deviceID
	c.charges.mu.Unlock()
	if !ok || c.endRequest(*m.ReqID) == nil {
		return false // not this device's, or ended meanwhile
	}
	r.Listener.ChargeRefused(*m.ReqID, string(m.Code), m.Message)
	return true
}

// Receipts returns up to limit stored receipts of the channel funded by
// op with Seq >= from, in order, from the store (another hubd on it may
// have stored them).
func (c *Manager) Receipts(ctx context.Context, op btcwire.OutPoint, from uint64, limit int) ([][]byte, error) {
	return c.store.Receipts(ctx, op, from, limit)
}

// Resync reloads the cached record of the channel funded by op from the
// store. Another hubd on the same store may have recorded charges on it
// (raising Owed) since this cache was read; a payment request sent for
// that hubd calls it first, so the payment answering it lowers the
// stored Owed, not a stale one. A single hubd never needs it.
func (c *Manager) Resync(ctx context.Context, op btcwire.OutPoint) error {
	e, err := c.entry(ctx, op)
	if err != nil {
		return err
	}
	e.lock()
	defer e.unlock()
	fresh, err := c.store.Channel(ctx, op)
	if err != nil {
		return fmt.Errorf("resync channel %v: %w", op, err)
	}
	e.adopt(fresh)
	return c.resyncHoldsLocked(ctx, e)
}

// resyncHoldsLocked replaces e's active holds with the store's: another
// instance may have opened, captured or closed one while this cache was
// idle. Captures waiting for the device here are kept. The caller holds
// e.mu.
func (c *Manager) resyncHoldsLocked(ctx context.Context, e *chanEntry) error {
	holds, err := c.store.Holds(ctx, e.rec.Funding)
	if err != nil {
		return fmt.Errorf("resync holds of %v: %w", e.rec.Funding, err)
	}
	active := make(map[[16]byte]*hub.Hold, len(holds))
	for i := range holds {
		if holds[i].Status == hub.HoldActive {
			active[holds[i].ID] = &holds[i]
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range e.holds {
		if active[id] == nil {
			delete(e.holds, id)
			delete(c.holdIndex, id)
		}
	}
	for id, h := range active {
		e.holds[id] = h
		c.holdIndex[id] = e.rec.Funding
	}
	return nil
}
