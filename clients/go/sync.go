package m2mclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// ErrForgedState means the hub presented a channel state that the device's
// own key did not sign; the device keeps its own record.
var ErrForgedState = errors.New("m2mclient: hub state not signed by this device")

// errResynced tells pay that the hub holds a later state than the one the
// payment was signed on, and that the device adopted it: the payment was
// refused and can be signed again on top of the hub's state.
var errResynced = errors.New("m2mclient: channel resynchronised with the hub")

// syncTimeout bounds the wait for the hub's ChannelState when the caller's
// context has no deadline: it holds the channel's operation lock.
const syncTimeout = 10 * time.Second

// Sync asks the hub for the latest state of every ready channel and adopts
// each one that is ahead of the device's record and carries the device's
// own signature (docs/protocol.md, "Resynchronisation"): a device restored
// from an older copy of its store resumes at the hub's state instead of
// having its payments refused as stale. The Device syncs by itself when it
// starts and whenever its Session reconnects; Sync is for callers that want
// to wait for it; it waits for each channel's answer in turn, holding the
// channel's operations meanwhile. It returns the first error (ErrForgedState, a
// *ChannelError, a transport or context error) after trying every channel.
func (d *Device) Sync(ctx context.Context) error {
	var first error
	for _, c := range d.readyChannels() {
		if err := d.syncChannel(ctx, c); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// requestSync asks for the state of every ready channel without waiting
// for the answers, which onChannelState (or the Pay under way on the
// channel) applies. It runs at every connection: waiting there would hold
// each channel's operations on a hub that may be slow to answer.
func (d *Device) requestSync() {
	for _, c := range d.readyChannels() {
		c.mu.Lock()
		chanID := c.st.Funding
		c.authsAsked = c.auths
		c.mu.Unlock()
		if err := d.send(d.ctx, &wire.ChannelSync{ChanID: chanID}); err != nil {
			d.log.Info("channel sync with the hub", "chan", chanID, "err", err)
			return
		}
	}
}

// readyChannels returns the channels that take payments. It takes d.mu
// and each c.mu in turn, never together: settleDone holds c.mu while it
// takes d.mu.
func (d *Device) readyChannels() []*devChannel {
	d.mu.Lock()
	all := make([]*devChannel, 0, len(d.byID))
	for _, c := range d.byID {
		all = append(all, c)
	}
	d.mu.Unlock()
	var cs []*devChannel
	for _, c := range all {
		c.mu.Lock()
		if c.st.Status == StatusReady {
			cs = append(cs, c)
		}
		c.mu.Unlock()
	}
	return cs
}

// syncChannel asks for one channel's state and applies it.
func (d *Device) syncChannel(ctx context.Context, c *devChannel) error {
	c.op.Lock()
	defer c.op.Unlock()
	return d.syncLocked(ctx, c)
}

// syncLocked is syncChannel with c.op held.
func (d *Device) syncLocked(ctx context.Context, c *devChannel) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, syncTimeout)
		defer cancel()
	}
	c.mu.Lock()
	chanID := c.st.Funding
	c.authsAsked = c.auths
	c.mu.Unlock()
	ch, done := d.w.add(waitKey{kind: 'c', chanID: chanID})
	defer done()
	if err := d.send(ctx, &wire.ChannelSync{ChanID: chanID}); err != nil {
		return fmt.Errorf("m2mclient: sync %v: %w", chanID, err)
	}
	for {
		ans, err := d.await(ctx, ch)
		if err != nil {
			return err
		}
		switch m := ans.(type) {
		case *wire.ChannelState:
			err := d.applyState(ctx, c, m)
			if errors.Is(err, errResynced) {
				return nil
			}
			return err
		case *wire.ChannelError:
			if m.Seq != nil {
				continue // a late answer to an earlier payment
			}
			return asError(m)
		}
	}
}

// onChannelState applies a ChannelState no call was waiting for (the
// answer to the ChannelSync sent at connect). It runs on the Router's
// goroutine, so the holds are applied in the order the hub's messages
// came (a HoldClosed after it must win); the state itself waits for the
// channel's operations on a goroutine of its own, and leaves a matching
// pending payment to the next Pay, whose resend settles it in order.
func (d *Device) onChannelState(m *wire.ChannelState) {
	c, err := d.channel(m.ChanID)
	if err != nil {
		return
	}
	c.mu.Lock()
	err = d.syncHolds(d.ctx, c, m)
	c.mu.Unlock()
	if err != nil {
		d.log.Warn("hub channel state not adopted", "chan", m.ChanID, "err", err)
		return
	}
	d.spawn(func() {
		c.op.Lock()
		defer c.op.Unlock()
		if err := d.applySeq(d.ctx, c, m, false); err != nil && !errors.Is(err, errResynced) {
			d.log.Warn("hub channel state not adopted", "chan", m.ChanID, "err", err)
		}
	})
}

// applyState adopts the hub's state m of channel c when the device's own
// key signed it and it is not behind the device's acknowledged state;
// c.op must be held. It returns nil when m changes nothing or is the
// device's pending payment (then acknowledged without a receipt),
// errResynced when the device moved to m (any pending payment dropped:
// the hub holds another state at or past its seq), and ErrForgedState
// when m's signature is not the device's.
//
// Payments the hub holds that the device's record did not know of were
// made (the device's signature proves it agreed) but never passed this
// process's Limiter, so they are recorded in it now, as spent just now and
// to no provider in particular, which counts them against every limit:
// the conservative reading of an unknown history.
func (d *Device) applyState(ctx context.Context, c *devChannel, m *wire.ChannelState) error {
	err := d.applySeq(ctx, c, m, true)
	if err != nil && !errors.Is(err, errResynced) {
		return err
	}
	// The holds last: adopting the pending payment counted its capture,
	// which the hub's figure already includes.
	c.mu.Lock()
	herr := d.syncHolds(ctx, c, m)
	c.mu.Unlock()
	if herr != nil {
		return herr
	}
	return err
}

// applySeq is applyState's part for the channel state itself; with
// adoptPending false a pending payment equal to m stays pending.
func (d *Device) applySeq(ctx context.Context, c *devChannel, m *wire.ChannelState, adoptPending bool) error {
	c.mu.Lock()
	cur, pend := c.st.Seq, c.st.Pending
	switch {
	case m.Seq < cur || m.Seq == cur && m.Paid == c.st.Paid:
		// Nothing newer (a hub behind the device lost data: the
		// device's own signatures still prove what it paid).
		c.synced = true
		c.mu.Unlock()
		if m.Seq < cur {
			d.log.Warn("hub channel state behind the device's", "chan", m.ChanID, "hub_seq", m.Seq, "seq", cur)
		}
		return nil
	}
	if err := d.verifyState(c, m); err != nil {
		c.mu.Unlock()
		return err
	}
	// From here on the device knows the hub's state: it adopts it or,
	// when it is the pending one, leaves it to the resend.
	c.synced = true
	if pend != nil && pend.Seq == m.Seq && pend.Paid == m.Paid {
		if !adoptPending {
			c.mu.Unlock()
			return nil
		}
		// The hub holds the pending payment: its PayAck was lost.
		p := *pend
		c.mu.Unlock()
		return d.adopt(ctx, c, &p, nil)
	}
	unknown := m.Paid
	if unknown >= c.st.Paid {
		unknown -= c.st.Paid
	} else {
		unknown = 0
	}
	prev := c.st.clone()
	c.st.Seq, c.st.Paid, c.st.Sig = m.Seq, m.Paid, *m.Sig
	if pend != nil && pend.Seq <= m.Seq {
		// The hub holds another state at or past the pending one's
		// seq, so it never took the pending one. A pending payment
		// past m stays: the hub has not seen it yet, and the next Pay
		// resends it.
		c.st.Pending = nil
	}
	if err := d.save(ctx, c); err != nil {
		*c.st = *prev
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	d.log.Info("adopted the hub's channel state", "chan", m.ChanID, "seq", m.Seq, "paid_msat", uint64(m.Paid),
		"previous_seq", cur, "unknown_msat", uint64(unknown))
	if unknown > 0 {
		d.limiter.record(unknown)
	}
	return errResynced
}

// syncHolds makes the device's holds on c those the hub holds active: a
// hold the hub lists is added (the device lost it) or takes the hub's
// captured amount, after its signature is checked to be the device's own;
// a hold the hub does not list is forgotten (released or expired while
// its HoldClosed was lost, or its HoldAuthorize never arrived), unless
// the device authorised a hold after sending the request m answers (the
// hub may not have read that authorisation yet). c.mu must be held.
func (d *Device) syncHolds(ctx context.Context, c *devChannel, m *wire.ChannelState) error {
	if m.ChanID != c.st.Funding {
		return fmt.Errorf("%w: state for %v, channel is %v", ErrForgedState, m.ChanID, c.st.Funding)
	}
	listed := make(map[[16]byte]bool, len(m.Holds))
	changed := false
	for _, h := range m.Holds {
		if err := channel.VerifyHold(d.cfg.Key.PubKey(), h.ID, m.ChanID, h.Provider, h.Max, h.Expires, h.Sig); err != nil {
			return fmt.Errorf("%w: hold %x: %w", ErrForgedState, h.ID, err)
		}
		listed[h.ID] = true
		if d.holdClosed(h.ID) {
			continue // closed since (a stale-Pay answer read late)
		}
		i := slices.IndexFunc(c.st.Holds, func(a AuthorizedHold) bool { return a.ID == h.ID })
		if i < 0 {
			c.st.Holds = append(c.st.Holds, AuthorizedHold{
				ID: h.ID, Provider: h.Provider, Max: h.Max, Captured: h.Captured,
				Expires: time.Unix(int64(h.Expires), 0),
			})
			changed = true
		} else if c.st.Holds[i].Captured != h.Captured {
			c.st.Holds[i].Captured = h.Captured
			changed = true
		}
	}
	if c.auths == c.authsAsked && len(m.Holds) < wire.MaxSyncHolds {
		kept := c.st.Holds[:0]
		for _, h := range c.st.Holds {
			if listed[h.ID] {
				kept = append(kept, h)
			}
		}
		changed = changed || len(kept) != len(c.st.Holds)
		c.st.Holds = kept
	}
	if !changed {
		return nil
	}
	return d.save(ctx, c)
}

// verifyState checks that the device's own key signed m; c.mu must be held.
func (d *Device) verifyState(c *devChannel, m *wire.ChannelState) error {
	if m.Sig == nil {
		return fmt.Errorf("%w: state %d of %v has no signature", ErrForgedState, m.Seq, m.ChanID)
	}
	sig, err := schnorr.ParseSignature(m.Sig[:])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrForgedState, err)
	}
	st := channel.State{ChannelID: c.st.Funding, Seq: m.Seq, Paid: m.Paid}
	if m.ChanID != c.st.Funding {
		return fmt.Errorf("%w: state for %v, channel is %v", ErrForgedState, m.ChanID, c.st.Funding)
	}
	if err := c.out.VerifyClaim(st, sig); err != nil {
		return fmt.Errorf("%w: %w", ErrForgedState, err)
	}
	return nil
}
