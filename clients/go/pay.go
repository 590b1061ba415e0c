package m2mclient

import (
	"context"
	"errors"
	"fmt"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// payment is what one Pay signs and sends.
type payment struct {
	payee  string
	amount msat.Amount
	memo   string
	holdID *[16]byte
	reqID  *uint64
}

// Pay pays amount to the provider payee from the channel: it checks the
// Policy, signs the next state (seq+1, paid+amount), writes it as pending
// before sending it (a killed process never loses a signature the hub may
// hold; with a DeferredSaver it is synced with the acknowledgement, see
// FileStore), waits for the
// hub's PayAck and checks its receipt (hub signature, channel, seq,
// amounts, payee) before recording it durably and returning it. The first
// Pay on a channel loaded from the store asks the hub for its state first
// (ChannelSync).
//
// Errors: ErrPolicy (nothing signed), ErrUnknownChannel, ErrNotReady,
// channel.ErrOverCapacity, *ChannelError (the hub refused; nothing paid;
// errors.Is(err, ErrTemporary) when the same payment may succeed later,
// e.g. ErrClosing while a cooperative close is negotiated, ErrBusy,
// ErrRateLimited),
// ErrBadReceipt (the hub acknowledged but its receipt is wrong; the payment
// counts as made, since the hub holds the signature), or a transport or
// context error, in which case the payment stays pending and the next Pay
// on the channel resolves it first.
func (d *Device) Pay(ctx context.Context, chanID btcwire.OutPoint, payee string,
	amount msat.Amount, memo string) (*channel.Receipt, error) {

	return d.pay(ctx, chanID, payment{payee: payee, amount: amount, memo: memo})
}

func (d *Device) pay(ctx context.Context, chanID btcwire.OutPoint, p payment) (*channel.Receipt, error) {
	c, err := d.channel(chanID)
	if err != nil {
		return nil, err
	}
	if p.reqID != nil {
		c.op.LockFirst() // the hub asked: a provider waits for its receipt
	} else {
		c.op.Lock()
	}
	defer c.op.Unlock()
	r, err := d.payOnce(ctx, c, p)
	if errors.Is(err, errResynced) {
		// The hub holds a later state the device had lost (it restarted
		// from an older copy of its store) and the device adopted it:
		// sign the payment again on top of it, once.
		r, err = d.payOnce(ctx, c, p)
	}
	if errors.Is(err, errResynced) {
		return nil, fmt.Errorf("m2mclient: pay: the hub's state moved twice: %w", err)
	}
	return r, err
}

// payOnce signs p on the channel's current state, saves it as pending and
// exchanges it; c.op must be held.
func (d *Device) payOnce(ctx context.Context, c *devChannel, p payment) (*channel.Receipt, error) {
	chanID := c.st.Funding
	c.mu.Lock()
	status, synced := c.st.Status, c.synced
	c.mu.Unlock()
	if status != StatusReady {
		return nil, fmt.Errorf("%w: channel is %s", ErrNotReady, status)
	}
	if !synced {
		// The record came from the store, which may have lost a pending
		// state the hub holds (FileStore): learn the hub's state before
		// signing a seq it may have.
		if err := d.syncLocked(ctx, c); err != nil {
			return nil, fmt.Errorf("m2mclient: pay: learning the hub's state: %w", err)
		}
	}
	c.mu.Lock()
	hasPending := c.st.Pending != nil
	c.mu.Unlock()
	if hasPending {
		if err := d.resync(ctx, c); err != nil {
			return nil, fmt.Errorf("m2mclient: resolving the pending payment: %w", err)
		}
	}

	undo, err := d.limiter.Spend(p.payee, p.amount)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	next := channel.State{ChannelID: chanID, Seq: c.st.Seq + 1, Paid: c.st.Paid + p.amount}
	if next.Paid < c.st.Paid { // overflow
		c.mu.Unlock()
		undo()
		return nil, fmt.Errorf("m2mclient: pay: %w", channel.ErrOverCapacity)
	}
	sig, err := c.out.SignClaim(d.cfg.Key, next)
	if err != nil {
		c.mu.Unlock()
		undo()
		return nil, fmt.Errorf("m2mclient: pay: %w", err)
	}
	pend := &PendingPayment{
		Seq: next.Seq, Paid: next.Paid, Amount: p.amount, Payee: p.payee, Memo: p.memo,
		HoldID: p.holdID, ReqID: p.reqID, Sig: [64]byte(sig.Serialize()),
	}
	c.st.Pending = pend
	done, err := d.savePending(ctx, c)
	if err != nil {
		c.st.Pending = nil
		c.mu.Unlock()
		undo()
		return nil, err
	}
	c.mu.Unlock()

	// The pending state is written, not necessarily synced: on the
	// PayAck the acknowledged state's synced write to the same journal
	// covers it (FileStore). Any other outcome leaves it pending or
	// dropped, and it is synced before Pay returns.
	r, err := d.exchange(ctx, c, pend, false)
	if derr := done(err != nil); derr != nil {
		err = errors.Join(err, derr)
	}
	var ce *ChannelError
	if errors.As(err, &ce) || errors.Is(err, errResynced) {
		// The hub refused the payment: it holds no signature for it,
		// so it does not count against the policy either.
		undo()
	}
	return r, err
}

// exchange sends the pending payment and settles it by the hub's answer:
// PayAck makes it the channel's state; a definite refusal drops it; anything
// else (timeout, connection lost, "internal") leaves it pending. resend
// says p was sent before: a send that fails then proves nothing, since an
// earlier connection may have delivered it.
func (d *Device) exchange(ctx context.Context, c *devChannel, p *PendingPayment, resend bool) (*channel.Receipt, error) {
	chanID := c.st.Funding
	ch, done := d.w.add(waitKey{kind: 'c', chanID: chanID})
	defer done()
	c.mu.Lock()
	c.authsAsked = c.auths
	c.mu.Unlock()
	msg := &wire.Pay{
		ChanID: chanID, Seq: p.Seq, Paid: p.Paid, Amount: p.Amount, Payee: p.Payee,
		Sig: p.Sig, Memo: p.Memo, HoldID: p.HoldID, ReqID: p.ReqID,
	}
	if err := d.send(ctx, msg); err != nil {
		if !resend && (errors.Is(err, ErrNotConnected) || errors.Is(err, ErrOffline)) {
			// Nothing left the device: the hub cannot hold it.
			d.dropPending(ctx, c, p)
		}
		return nil, fmt.Errorf("m2mclient: pay: %w", err)
	}
	// hubState is the state the hub showed before refusing p as stale.
	var hubState *wire.ChannelState
	for {
		ans, err := d.await(ctx, ch)
		if err != nil {
			return nil, err
		}
		switch m := ans.(type) {
		case *wire.ChannelState:
			// Holds now, in the order the hub sent them (the
			// answer to a ChannelSync lands here while a Pay waits).
			hubState = m
			c.mu.Lock()
			err := d.syncHolds(ctx, c, m)
			c.mu.Unlock()
			if err != nil {
				d.log.Warn("hub holds not adopted", "chan", m.ChanID, "err", err)
			}
		case *wire.PayAck:
			if m.Seq != p.Seq {
				continue // a late answer to an earlier attempt
			}
			return d.acknowledged(ctx, c, p, m.Receipt)
		case *wire.ChannelError:
			if m.Seq == nil || *m.Seq != p.Seq {
				// The hub names the seq in every refusal of a Pay: one
				// without it is about another request on the channel
				// (a hold authorisation); one with another seq is a late
				// answer to an earlier attempt, or to a ChannelSync.
				continue
			}
			switch {
			case hubState != nil && (m.Code == wire.ChanStaleState || m.Code == wire.ChanSeqGap):
				return nil, d.staleAnswer(ctx, c, p, hubState, m)
			case m.Code == wire.ChanStaleState:
				// A hub that shows no state (an older one): only this
				// device signs states, and it signs seq+1 only after
				// seq was acknowledged, so a hub at or past p.Seq holds
				// exactly p, unless the device lost part of its store.
				return nil, d.adopt(ctx, c, p, nil)
			case m.Code == wire.ChanInternal:
				// The hub may or may not have stored it; keep it
				// pending and let the next Pay resend it. Every other
				// refusal, "busy" and "closing" included, is given
				// before anything is stored (docs/protocol.md).
				return nil, asError(m)
			}
			d.dropPending(ctx, c, p)
			return nil, asError(m)
		}
	}
}

// staleAnswer settles p by the state the hub showed when it refused it as
// stale or out of sequence: p itself (its PayAck was lost), a later state
// the device adopts (errResynced: p was refused), or a forged one
// (ErrForgedState: p stays pending, the hub is not believed).
func (d *Device) staleAnswer(ctx context.Context, c *devChannel, p *PendingPayment, st *wire.ChannelState, refusal *wire.ChannelError) error {
	err := d.applyState(ctx, c, st)
	if err != nil {
		return err
	}
	c.mu.Lock()
	taken := c.st.Seq >= p.Seq && c.st.Pending == nil
	c.mu.Unlock()
	if taken {
		return nil
	}
	// The hub's state is not newer than the device's: it refused p for
	// another reason (a hub that lost data is behind).
	d.dropPending(ctx, c, p)
	return asError(refusal)
}

// resync resends the pending payment and waits for its outcome.
func (d *Device) resync(ctx context.Context, c *devChannel) error {
	c.mu.Lock()
	p := *c.st.Pending
	c.mu.Unlock()
	_, err := d.exchange(ctx, c, &p, true)
	var ce *ChannelError
	switch {
	case err == nil, errors.Is(err, ErrBadReceipt):
		return nil // applied either way
	case errors.Is(err, errResynced):
		return nil // refused; the channel moved to the hub's state
	case errors.As(err, &ce) && ce.Code != CodeInternal:
		return nil // definitely refused and dropped; the channel moves on
	}
	return err
}

// acknowledged checks the receipt of an acknowledged payment and records
// the new state (and the receipt when it is good). With a ReceiptSaver both
// go to the store in one durable write; see FileStore for why that write
// is still synced.
func (d *Device) acknowledged(ctx context.Context, c *devChannel, p *PendingPayment, raw []byte) (*channel.Receipt, error) {
	r := new(channel.Receipt)
	rerr := r.UnmarshalBinary(raw)
	if rerr != nil {
		rerr = fmt.Errorf("%w: %w", ErrBadReceipt, rerr)
	} else {
		rerr = d.checkReceipt(r, c.st.Funding, p)
	}
	if rerr != nil {
		// The hub acknowledged: the payment counts, the receipt does not.
		if err := d.adopt(ctx, c, p, nil); err != nil {
			return nil, err
		}
		return nil, rerr
	}
	if err := d.adopt(ctx, c, p, r); err != nil {
		return r, err
	}
	return r, nil
}

// checkReceipt verifies a receipt against the pinned hub key and the
// payment it acknowledges.
func (d *Device) checkReceipt(r *channel.Receipt, chanID btcwire.OutPoint, p *PendingPayment) error {
	if err := d.receipts.Verify(r); err != nil {
		return fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	var hold [16]byte
	if p.HoldID != nil {
		hold = *p.HoldID
	}
	if r.Channel != chanID || r.Seq != p.Seq || r.Paid != p.Paid || r.Amount != p.Amount ||
		r.Payee != p.Payee || r.HoldID != hold {
		return fmt.Errorf("%w: receipt for %v seq %d paid %d amount %d to %q does not match the payment",
			ErrBadReceipt, r.Channel, r.Seq, uint64(r.Paid), uint64(r.Amount), r.Payee)
	}
	return nil
}

// adopt makes p the channel's acknowledged state, recording r (when not
// nil) as its receipt.
func (d *Device) adopt(ctx context.Context, c *devChannel, p *PendingPayment, r *channel.Receipt) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	store := context.WithoutCancel(ctx)
	if c.st.Pending == nil || c.st.Pending.Seq != p.Seq {
		// Already adopted (a late answer): only the receipt is new.
		if r != nil {
			return d.cfg.Store.AppendReceipt(store, c.st.Funding, r)
		}
		return nil
	}
	prev := c.st.clone()
	c.st.Seq, c.st.Paid, c.st.Sig, c.st.Pending = p.Seq, p.Paid, p.Sig, nil
	if p.HoldID != nil {
		for i := range c.st.Holds {
			if c.st.Holds[i].ID == *p.HoldID {
				c.st.Holds[i].Captured += p.Amount
			}
		}
	}
	if rs, ok := d.cfg.Store.(ReceiptSaver); ok && r != nil {
		if err := rs.SaveWithReceipt(store, *c.st, r); err != nil {
			// Neither is recorded; the pending state stays, and the
			// next Pay resolves it with the hub.
			*c.st = *prev
			return err
		}
		return nil
	}
	if err := d.save(ctx, c); err != nil {
		return err
	}
	if r != nil {
		return d.cfg.Store.AppendReceipt(store, c.st.Funding, r)
	}
	return nil
}

// dropPending forgets p after the hub refused it.
func (d *Device) dropPending(ctx context.Context, c *devChannel, p *PendingPayment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Pending == nil || c.st.Pending.Seq != p.Seq {
		return
	}
	c.st.Pending = nil
	if err := d.save(ctx, c); err != nil {
		d.log.Error("saving channel after a refused payment", "chan", c.st.Funding, "err", err)
	}
}

// PaymentRequest is the hub asking the device to pay a provider, either to
// capture a hold the device signed (HoldID set) or for metered service.
type PaymentRequest struct {
	Channel btcwire.OutPoint
	Payee   string
	Amount  msat.Amount
	HoldID  *HoldID
	Memo    string
}

// onPaymentRequest pays what the hub asks when it fits a hold the device
// signed (or the OnPaymentRequest callback agrees) and the Policy, and
// otherwise tells the hub "policy-refused".
func (d *Device) onPaymentRequest(m *wire.PaymentRequest) {
	req := PaymentRequest{Channel: m.ChanID, Payee: m.Payee, Amount: m.Amount, Memo: m.Memo}
	var err error
	if m.HoldID != nil {
		id := HoldID(*m.HoldID)
		req.HoldID = &id
		err = d.checkCapture(m)
	} else if d.cfg.OnPaymentRequest != nil && !d.cfg.OnPaymentRequest(req) {
		err = fmt.Errorf("%w: declined by the application", ErrPolicy)
	}
	if err == nil {
		reqID := m.ReqID
		_, err = d.pay(d.ctx, m.ChanID, payment{
			payee: m.Payee, amount: m.Amount, memo: m.Memo, holdID: m.HoldID, reqID: &reqID,
		})
	}
	if err == nil {
		return
	}
	d.log.Info("payment request not paid", "chan", m.ChanID, "payee", m.Payee, "amount_msat", uint64(m.Amount), "err", err)
	if errors.Is(err, ErrPolicy) {
		reqID, chanID := m.ReqID, m.ChanID
		e := &wire.ChannelError{
			Code: wire.ChanPolicyRefused, Message: "refused by the device's spending policy",
			ReqID: &reqID, ChanID: &chanID, HoldID: m.HoldID,
		}
		if err := d.send(d.ctx, e); err != nil {
			d.log.Warn("telling the hub about a refused payment request", "err", err)
		}
	}
}

// checkCapture decides whether a capture request fits the hold the device
// signed: same provider, not expired, within what is left.
func (d *Device) checkCapture(m *wire.PaymentRequest) error {
	c, err := d.channel(m.ChanID)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.st.Holds {
		if h.ID != *m.HoldID {
			continue
		}
		switch {
		case h.Provider != m.Payee:
			return fmt.Errorf("%w: hold %x is for %q, not %q", ErrPolicy, h.ID, h.Provider, m.Payee)
		case !d.cfg.Clock.Now().Before(h.Expires):
			return fmt.Errorf("%w: hold %x expired", ErrPolicy, h.ID)
		case m.Amount > h.Max-h.Captured:
			return fmt.Errorf("%w: capture of %d msat, hold %x has %d msat left",
				ErrPolicy, uint64(m.Amount), h.ID, uint64(h.Max-h.Captured))
		}
		return nil
	}
	return fmt.Errorf("%w: no hold %x signed on this channel", ErrPolicy, *m.HoldID)
}
