package channels

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// Pay handles one payment of device payer: every check of the protocol, in
// the protocol's order, then the durable write, and only then the
// acknowledgement with the hub-signed receipt. It is the hub's hot path:
// the signature check (about 110 µs) and the store's group-committed write
// run under the channel's own lock only, so payments on different channels
// proceed in parallel. A refusal is returned as a *wire.ChannelError; the
// caller delivers the PayAck and the payee's ReceiptNotice.
func (c *Manager) Pay(ctx context.Context, payer string, m *wire.Pay) (*wire.PayAck, error) {
	// A payment answering the hub's own charge request is not the
	// device's to pace: charging sends one request per payer, provider
	// and contract at a time from each instance, so several instances
	// can ask one device faster than its rate. Refused, it would be lost:
	// the device does not retry an answer (m2mclient), and its request
	// would wait for charging's RequestTimeout, which then gives up on
	// the events for good.
	chargeID, chargeReq := c.chargeRequest(payer, m)
	if chargeReq == nil && !c.allow(payer) {
		return nil, refuse(wire.ChanRateLimited, "more than %d payments/s", c.cfg.PayRate)
	}
	e, err := c.entry(ctx, m.ChanID)
	if errors.Is(err, hub.ErrNotFound) {
		return nil, refuse(wire.ChanUnknownChannel, "no channel %v", m.ChanID)
	}
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()

	if e.rec.DeviceID != payer {
		return nil, refuse(wire.ChanNotOwner, "channel belongs to another device")
	}
	if e.rec.Status != hub.ChannelReady {
		return nil, refuse(statusCode(e.rec.Status), "channel is %s", e.rec.Status)
	}
	if c.closeUnderWay(e) {
		return nil, refuse(wire.ChanClosing, "a cooperative close is being negotiated")
	}
	cur := e.state()
	next := channel.State{ChannelID: m.ChanID, Seq: m.Seq, Paid: m.Paid}
	err = e.out.Params().CheckUpdate(cur, next)
	if errors.Is(err, channel.ErrSeqGap) {
		// The device may have paid on another hubd on the same store
		// since this one cached the channel: check against the store.
		e.chargeMu.Lock()
		c.refresh(ctx, e)
		e.chargeMu.Unlock()
		cur = e.state()
		err = e.out.Params().CheckUpdate(cur, next)
	}
	if err != nil {
		return nil, refuse(updateCode(err), "%v", err)
	}
	if m.Amount == 0 || m.Amount != m.Paid-cur.Paid {
		return nil, refuse(wire.ChanBadAmount, "amount %d msat, paid moves by %d msat",
			uint64(m.Amount), uint64(m.Paid-cur.Paid))
	}
	if err := c.checkPayee(ctx, m.Payee); err != nil {
		return nil, err
	}
	// The capacity check uses the cached Owed: another hubd may have
	// charged more on credit since, so the stored Owed can be higher.
	// That is safe: each charge on credit was checked against the credit
	// limit by the store when it was recorded (ApplyOwed, RecordCharges),
	// and the owed credit is not lost by this payment either, because the
	// store lowers the stored Owed itself (ApplyPayment). Charges may
	// be recorded on the channel meanwhile (chanEntry.mu): the mark
	// tells settleOwed whether any was.
	mk := e.mark()
	owed := mk.owed - min(mk.owed, m.Amount)
	if used := m.Paid + owed + e.reserved(m.HoldID); used > e.out.Params().MaxPaid() {
		return nil, refuse(wire.ChanOverCapacity, "paid, owed and holds reach %d msat of %d",
			uint64(used), uint64(e.out.Params().MaxPaid()))
	}
	if m.ReqID != nil && m.HoldID == nil && chargeReq == nil {
		// It answers a charge request that ended (its session did, or
		// the requester gave up): the charges are asked for again, so
		// taking it would have the device pay them twice.
		return nil, refuse(wire.ChanRequestUnknown, "no charge request %d waits for this payment", *m.ReqID)
	}
	req := c.matchRequest(e, m)
	capture := m.HoldID
	if req != nil && req.onCredit {
		// The capture this pays was charged on credit already; the
		// payment settles the credit and must not capture twice.
		capture = nil
	}
	if m.HoldID != nil {
		if err := c.checkHoldPayment(ctx, e, m, capture != nil); err != nil {
			return nil, err
		}
	}
	sig, err := schnorr.ParseSignature(m.Sig[:])
	if err != nil {
		return nil, refuse(wire.ChanBadSignature, "malformed signature")
	}
	if err := e.out.VerifyClaim(next, sig); err != nil {
		return nil, refuse(wire.ChanBadSignature, "signature does not claim this state")
	}

	now := c.clock.Now()
	receipt, err := c.receipt(e, m, now, chargeReq)
	if err != nil {
		return nil, err
	}
	u := hub.PaymentUpdate{
		Channel: m.ChanID, Seq: m.Seq, Paid: m.Paid, DeviceSig: m.Sig,
		HoldID: capture, Amount: m.Amount, Receipt: receipt, Time: now,
	}
	if chargeReq != nil {
		u.Fence = chargeReq.Fence
	}
	owed, err = c.store.ApplyPayment(ctx, u)
	switch {
	case errors.Is(err, hub.ErrChargeFenced):
		// Its asker has asked for the charges again since, given up on
		// them, or lost them to another hubd: paying this request would
		// pay them twice. The asker hears it ended.
		if r := c.endRequest(chargeID); r != nil {
			r.Listener.ChargeFailed(chargeID, "charge request superseded")
		}
		return nil, refuse(wire.ChanRequestUnknown, "charge request %d was superseded", chargeID)
	case errors.Is(err, hub.ErrSeqConflict):
		// Another writer (another hubd on the same store) moved the
		// channel; resynchronise the cache and let the device retry.
		e.chargeMu.Lock()
		if fresh, rerr := c.store.Channel(ctx, m.ChanID); rerr == nil {
			e.rec = fresh
		}
		e.chargeMu.Unlock()
		return nil, refuse(wire.ChanStaleState, "channel state moved; current seq %d", e.rec.Seq)
	case errors.Is(err, hub.ErrHoldConflict):
		return nil, refuse(wire.ChanHoldExceeded, "hold has less left than %d msat", uint64(m.Amount))
	case errors.Is(err, hub.ErrNotFound):
		return nil, refuse(wire.ChanUnknownChannel, "no channel %v", m.ChanID)
	case err != nil:
		return nil, fmt.Errorf("apply payment %v/%d: %w", m.ChanID, m.Seq, err)
	}

	// Durable: only now does the cache move, so it never runs ahead of
	// the store; Owed is the store's, which counts charges on credit
	// recorded by other hubd, unless charges were recorded here beside
	// this write (settleOwed).
	e.rec.Seq, e.rec.Paid, e.rec.DeviceSig, e.rec.UpdatedAt = m.Seq, m.Paid, m.Sig, now.UTC()
	e.settleOwed(mk, m.Amount, owed)
	if capture != nil {
		if h := e.holds[*capture]; h != nil {
			h.Captured += m.Amount
		}
	}
	if req != nil {
		c.answered(e, req)
	}
	if chargeReq != nil {
		c.chargePaid(chargeID, receipt)
	}
	return &wire.PayAck{ChanID: m.ChanID, Seq: m.Seq, Receipt: receipt}, nil
}

// payeeTTL is how long a payee found to be an active provider is trusted
// without asking the registry again. Decoding a device record parses its
// key (a square root on the curve), which would otherwise cost each
// payment as much as a fifth of its signature check.
const payeeTTL = time.Second

// checkPayee refuses a payee that is not an active, registered provider.
func (c *Manager) checkPayee(ctx context.Context, payee string) error {
	now := c.clock.Now()
	if v, ok := c.payees.Load(payee); ok && now.Before(v.(time.Time)) {
		return nil
	}
	d, err := c.cfg.Devices.Device(ctx, payee)
	if errors.Is(err, hub.ErrNotFound) {
		return refuse(wire.ChanUnknownPayee, "payee %q is not registered", payee)
	}
	if err != nil {
		return err
	}
	if d.Status != hub.StatusActive || !d.HasRole(hub.RoleProvider) {
		return refuse(wire.ChanUnknownPayee, "payee %q is not an active provider", payee)
	}
	c.payees.Store(payee, now.Add(payeeTTL))
	return nil
}

// checkHoldPayment checks a payment against the hold it names. When
// capturing is false the payment settles a capture already charged on
// credit, so only the hold's identity is checked.
func (c *Manager) checkHoldPayment(ctx context.Context, e *chanEntry, m *wire.Pay, capturing bool) error {
	h := e.holds[*m.HoldID]
	if h == nil {
		stored, err := c.store.Hold(ctx, *m.HoldID)
		switch {
		case errors.Is(err, hub.ErrNotFound) || err == nil && stored.Channel != m.ChanID:
			return refuse(wire.ChanHoldUnknown, "no hold %x on this channel", m.HoldID[:])
		case err != nil:
			return err
		case capturing:
			return refuse(wire.ChanHoldExpired, "hold is %s", stored.Status)
		}
		h = &stored
	}
	if h.Provider != m.Payee {
		return refuse(wire.ChanHoldUnknown, "hold %x is for another provider", m.HoldID[:])
	}
	if !capturing {
		return nil
	}
	if !c.clock.Now().Before(h.Expires) {
		return refuse(wire.ChanHoldExpired, "hold expired at %s", h.Expires.UTC().Format(time.RFC3339))
	}
	if m.Amount > h.Remaining() {
		return refuse(wire.ChanHoldExceeded, "amount %d msat, hold has %d msat left",
			uint64(m.Amount), uint64(h.Remaining()))
	}
	return nil
}

// receipt builds and signs the receipt of payment m with the hub identity
// key, and returns its encoding; a payment answering a charge request gets
// a version-2 receipt naming the charges' contract and events.
func (c *Manager) receipt(e *chanEntry, m *wire.Pay, now time.Time, cr *PaymentRequest) ([]byte, error) {
	r := channel.Receipt{
		Channel: m.ChanID,
		Seq:     m.Seq,
		Payer:   e.rec.DeviceID,
		Payee:   m.Payee,
		Amount:  m.Amount,
		Paid:    m.Paid,
		Memo:    m.Memo,
		Time:    now,
		HubKey:  [33]byte(c.hubPub),
	}
	if m.HoldID != nil {
		r.HoldID = *m.HoldID
	}
	chargeMeta(&r, cr)
	if err := c.signer.Sign(&r); err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode receipt: %w", err)
	}
	return b, nil
}

// rateLimiter is one device's token bucket, kept as a GCRA: tat is the
// theoretical arrival time of the next payment, and a payment is allowed
// while tat is at most burst−1 intervals ahead of now.
type rateLimiter struct {
	mu  sync.Mutex
	tat time.Time
}

// allow takes a token from deviceID's bucket.
func (c *Manager) allow(deviceID string) bool {
	v, ok := c.limits.Load(deviceID)
	if !ok {
		v, _ = c.limits.LoadOrStore(deviceID, &rateLimiter{})
	}
	l := v.(*rateLimiter)
	interval := time.Second / time.Duration(c.cfg.PayRate)
	tolerance := interval * time.Duration(c.cfg.PayBurst-1)
	now := c.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tat := l.tat
	if tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > tolerance {
		return false
	}
	l.tat = tat.Add(interval)
	return true
}

// remainingCredit is how much more a channel may be charged on credit.
func (c *Manager) remainingCredit(e *chanEntry) msat.Amount {
	if e.rec.Owed >= c.cfg.CreditLimit {
		return 0
	}
	return c.cfg.CreditLimit - e.rec.Owed
}
