package m2mclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// HoldID names a hold; the provider picks it at random.
type HoldID [16]byte

// String returns the id in hex.
func (h HoldID) String() string { return hex.EncodeToString(h[:]) }

// HoldRequest is a provider's request, forwarded by the hub, to reserve up
// to Max of the device's channel until Expires.
type HoldRequest struct {
	ID       HoldID
	Provider string
	Max      msat.Amount
	Expires  time.Time
	Memo     string
}

// onHoldRequest decides a forwarded hold request: Policy first, then the
// application (OnHold) or AutoAuthorize. A refusal is reported to the hub
// as "policy-refused" so the provider learns at once.
func (d *Device) onHoldRequest(m *wire.HoldRequest) {
	req := HoldRequest{
		ID: HoldID(m.HoldID), Provider: m.Provider, Max: m.Max,
		Expires: time.Unix(int64(m.Expires), 0), Memo: m.Memo,
	}
	err := d.limiter.CheckHold(req.Provider, req.Max)
	if err == nil {
		switch {
		case d.cfg.OnHold != nil:
			if !d.cfg.OnHold(req) {
				err = fmt.Errorf("%w: declined by the application", ErrPolicy)
			}
		case !d.cfg.AutoAuthorize:
			err = fmt.Errorf("%w: holds are not authorised automatically", ErrPolicy)
		}
	}
	if err == nil {
		_, err = d.Authorize(d.ctx, req)
	}
	if err == nil {
		return
	}
	d.log.Info("hold refused", "hold", req.ID, "provider", req.Provider, "max_msat", uint64(req.Max), "err", err)
	id := m.HoldID
	e := &wire.ChannelError{Code: wire.ChanPolicyRefused, Message: "refused by the device's spending policy", HoldID: &id}
	if err := d.send(d.ctx, e); err != nil {
		d.log.Warn("telling the hub about a refused hold", "err", err)
	}
}

// Authorize signs req as a hold on a ready channel with room for it (the
// one with the most room) and sends the authorisation to the hub. The hold
// is saved first, so captures against it are recognised after a restart.
// The signature is not an on-chain claim: every capture is still a
// separately signed payment, checked against this hold and the Policy.
// It returns the channel chosen, or an error wrapping ErrPolicy (refused by
// the Policy, expired, or no channel with room).
func (d *Device) Authorize(ctx context.Context, req HoldRequest) (btcwire.OutPoint, error) {
	if err := d.limiter.CheckHold(req.Provider, req.Max); err != nil {
		return btcwire.OutPoint{}, err
	}
	if !d.cfg.Clock.Now().Before(req.Expires) {
		return btcwire.OutPoint{}, fmt.Errorf("%w: hold %s already expired", ErrPolicy, req.ID)
	}
	c, err := d.roomiest(req.Max)
	if err != nil {
		return btcwire.OutPoint{}, err
	}
	c.mu.Lock()
	chanID := c.st.Funding
	expires := uint64(req.Expires.Unix())
	sig, err := channel.SignHold(d.cfg.Key, req.ID, chanID, req.Provider, req.Max, expires)
	if err != nil {
		c.mu.Unlock()
		return btcwire.OutPoint{}, err
	}
	c.st.Holds = append(c.st.Holds, AuthorizedHold{
		ID: req.ID, Provider: req.Provider, Max: req.Max, Expires: time.Unix(int64(expires), 0),
	})
	c.auths++
	err = d.save(ctx, c)
	c.mu.Unlock()
	if err != nil {
		return btcwire.OutPoint{}, err
	}
	msg := &wire.HoldAuthorize{
		HoldID: req.ID, ChanID: chanID, Provider: req.Provider, Max: req.Max, Expires: expires, Sig: sig,
	}
	if err := d.send(ctx, msg); err != nil {
		return chanID, fmt.Errorf("m2mclient: authorize hold: %w", err)
	}
	return chanID, nil
}

// roomiest returns the ready channel with the most room left, if it has at
// least max.
func (d *Device) roomiest(max msat.Amount) (*devChannel, error) {
	d.mu.Lock()
	cs := make([]*devChannel, 0, len(d.byID))
	for _, c := range d.byID {
		cs = append(cs, c)
	}
	d.mu.Unlock()
	var best *devChannel
	var bestRoom msat.Amount
	for _, c := range cs {
		c.mu.Lock()
		id, ready := c.st.Funding, c.st.Status == StatusReady
		c.mu.Unlock()
		if !ready {
			continue
		}
		b, err := d.Balance(id)
		if err != nil {
			continue
		}
		if best == nil || b.Available > bestRoom {
			best, bestRoom = c, b.Available
		}
	}
	if best == nil || bestRoom < max {
		return nil, fmt.Errorf("%w: no ready channel with %d msat free", ErrPolicy, uint64(max))
	}
	return best, nil
}

// onHoldAuthorizeRefused forgets a hold the device authorised and the hub
// refused (the refusal names the hold and the channel and, unlike a
// refused capture, no seq or request id): nothing was reserved at the hub,
// so nothing may stay reserved here. It reports whether it forgot one.
func (d *Device) onHoldAuthorizeRefused(m *wire.ChannelError) bool {
	if m.HoldID == nil || m.ChanID == nil || m.Seq != nil || m.ReqID != nil {
		return false
	}
	c, err := d.channel(*m.ChanID)
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, h := range c.st.Holds {
		if h.ID != *m.HoldID || h.Captured != 0 {
			continue
		}
		c.st.Holds = append(c.st.Holds[:i], c.st.Holds[i+1:]...)
		d.log.Info("hold authorisation refused by the hub", "hold", h.ID, "code", m.Code, "message", m.Message)
		if err := d.save(d.ctx, c); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("saving channel after a refused hold", "err", err)
		}
		return true
	}
	return false
}

// holdClosed reports whether the hub closed hold id during this process's
// life: a ChannelState listing it was sent before the HoldClosed.
func (d *Device) holdClosed(id [16]byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closedHolds[id]
}

// onHoldClosed forgets a hold the hub closed (released, expired or its
// channel closed).
func (d *Device) onHoldClosed(m *wire.HoldClosed) {
	d.mu.Lock()
	d.closedHolds[m.HoldID] = true
	cs := make([]*devChannel, 0, len(d.chans))
	for _, c := range d.chans {
		cs = append(cs, c)
	}
	d.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		for i, h := range c.st.Holds {
			if h.ID != m.HoldID {
				continue
			}
			c.st.Holds = append(c.st.Holds[:i], c.st.Holds[i+1:]...)
			if err := d.save(d.ctx, c); err != nil && !errors.Is(err, context.Canceled) {
				d.log.Error("saving channel after hold closed", "err", err)
			}
			break
		}
		c.mu.Unlock()
	}
}
