package channels

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// activePayer checks that deviceID is a registered, active payer. The
// session's copy of the device may be older than a revocation or freeze,
// so the registry is asked again.
func (c *Manager) activePayer(ctx context.Context, deviceID string) (hub.Device, error) {
	d, err := c.cfg.Devices.Device(ctx, deviceID)
	if errors.Is(err, hub.ErrNotFound) {
		return hub.Device{}, refuse(wire.ChanNotOwner, "device is not registered")
	}
	if err != nil {
		return hub.Device{}, err
	}
	if d.Status != hub.StatusActive {
		return hub.Device{}, refuse(wire.ChanFrozen, "device is %s", d.Status)
	}
	if !d.HasRole(hub.RolePayer) {
		return hub.Device{}, refuse(wire.ChanNotOwner, "device does not hold the payer role")
	}
	return d, nil
}

// open answers OpenChannel with a ChannelOffer: a fresh pending id, the
// hub's channel key derived from it, and the output to fund.
func (c *Manager) open(ctx context.Context, s *session.Session, m *wire.OpenChannel) error {
	if _, err := c.activePayer(ctx, s.DeviceID()); err != nil {
		return err
	}
	height, err := c.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	h := uint32(height)
	switch {
	case m.Capacity < c.cfg.MinCapacity || m.Capacity > c.cfg.MaxCapacity:
		return refuse(wire.ChanBadParams, "capacity %d sat not in [%d, %d]",
			int64(m.Capacity), int64(c.cfg.MinCapacity), int64(c.cfg.MaxCapacity))
	case m.Expiry < h+c.cfg.MinExpiryDelta || m.Expiry > h+c.cfg.MaxExpiryDelta:
		return refuse(wire.ChanBadParams, "expiry %d not in [%d, %d]",
			m.Expiry, h+c.cfg.MinExpiryDelta, h+c.cfg.MaxExpiryDelta)
	}
	existing, err := c.store.ChannelsByDevice(ctx, s.DeviceID())
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	pending := 0
	for _, r := range existing {
		if r.Status != hub.ChannelPending {
			continue
		}
		if r.Capacity == m.Capacity && r.Expiry == m.Expiry && r.DeviceKey == s.Key() {
			// The same terms as an offer still waiting for funding:
			// the device most likely lost the first ChannelOffer with
			// its connection. Offering it again, rather than a new
			// one, keeps a lost answer from holding a pending slot
			// until the offer expires.
			return c.offerAgain(ctx, s, m.ReqID, r)
		}
		pending++
	}
	if pending >= c.cfg.MaxPendingOpens {
		return refuse(wire.ChanTooManyPending, "%d channels wait for funding already", pending)
	}

	// The channel's device key is the session's proven key: the key the
	// device signs states with from now on.
	sk := s.Key()
	devKey, err := btcec.ParsePubKey(sk[:])
	if err != nil {
		return fmt.Errorf("open: session key: %w", err)
	}
	var pendingID [32]byte
	if _, err := rand.Read(pendingID[:]); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	hubChanKey, err := channel.HubChannelPubKey(c.cfg.HubKey.PubKey(), channel.ChannelKeyTweak(devKey, pendingID))
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	out, err := channel.NewOutput(channel.Params{
		DeviceKey: devKey, HubKey: hubChanKey, Capacity: m.Capacity, Expiry: m.Expiry,
	})
	if err != nil {
		return refuse(wire.ChanBadParams, "%v", err)
	}
	now := c.clock.Now().UTC()
	rec := hub.ChannelRecord{
		PendingID: pendingID,
		DeviceID:  s.DeviceID(),
		DeviceKey: s.Key(),
		HubKey:    hub.PubKeyOf(hubChanKey),
		Capacity:  m.Capacity,
		Expiry:    m.Expiry,
		Status:    hub.ChannelPending,
		MinDepth:  c.cfg.MinDepth,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if err := c.store.PutChannel(ctx, rec); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	c.watchPending(pendingID)
	c.log.Info("channel offered", "device", s.DeviceID(), "pending", fmt.Sprintf("%x", pendingID[:8]),
		"capacity", m.Capacity, "expiry", m.Expiry)
	return s.Send(ctx, offerOf(m.ReqID, rec, hubChanKey, out))
}

// offerAgain answers OpenChannel with the device's pending offer rec.
func (c *Manager) offerAgain(ctx context.Context, s *session.Session, reqID uint64, rec hub.ChannelRecord) error {
	hubChanKey, err := btcec.ParsePubKey(rec.HubKey[:])
	if err != nil {
		return fmt.Errorf("open: stored channel key: %w", err)
	}
	devKey, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		return fmt.Errorf("open: stored device key: %w", err)
	}
	out, err := channel.NewOutput(channel.Params{DeviceKey: devKey, HubKey: hubChanKey, Capacity: rec.Capacity, Expiry: rec.Expiry})
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	c.log.Info("channel offered again", "device", rec.DeviceID, "pending", fmt.Sprintf("%x", rec.PendingID[:8]))
	return s.Send(ctx, offerOf(reqID, rec, hubChanKey, out))
}

// offerOf is the ChannelOffer of pending channel rec.
func offerOf(reqID uint64, rec hub.ChannelRecord, hubChanKey *btcec.PublicKey, out *channel.Output) *wire.ChannelOffer {
	return &wire.ChannelOffer{
		ReqID:      reqID,
		PendingID:  rec.PendingID,
		HubChanKey: hubChanKey,
		Capacity:   rec.Capacity,
		Expiry:     rec.Expiry,
		MinDepth:   rec.MinDepth,
		PkScript:   out.PkScript(),
	}
}

// funded records the outpoint the device says funds its offer and checks it
// on chain at once; the watcher keeps checking until it is deep enough.
func (c *Manager) funded(ctx context.Context, s *session.Session, m *wire.ChannelFunded) error {
	rec, named, err := c.nameFunding(ctx, s, m)
	if err != nil || !named {
		return err
	}
	c.watchPending(rec.PendingID)
	c.log.Info("channel funding named", "device", rec.DeviceID, "outpoint", m.Outpoint)
	_, err = c.checkFunding(ctx, rec)
	return err
}

// nameFunding records the outpoint m names for its offer, or answers a
// ChannelFunded repeated for a ready channel; named reports whether the
// offer is pending with its outpoint stored. It holds fundMu, as
// checkFunding does: a ChannelFunded sent again on a new session races
// the first one's handler, and its write of the record read before the
// first made the channel ready would put it back to pending.
func (c *Manager) nameFunding(ctx context.Context, s *session.Session, m *wire.ChannelFunded) (hub.ChannelRecord, bool, error) {
	c.fundMu.Lock()
	defer c.fundMu.Unlock()
	rec, err := c.store.ChannelByPending(ctx, m.PendingID)
	if errors.Is(err, hub.ErrNotFound) {
		return rec, false, refuse(wire.ChanUnknownChannel, "no offer with this pending id")
	}
	if err != nil {
		return rec, false, err
	}
	if rec.DeviceID != s.DeviceID() {
		return rec, false, refuse(wire.ChanNotOwner, "the offer belongs to another device")
	}
	switch rec.Status {
	case hub.ChannelPending:
	case hub.ChannelReady, hub.ChannelFrozen:
		if rec.Funding != m.Outpoint {
			return rec, false, refuse(wire.ChanBadParams, "channel is funded by %v already", rec.Funding)
		}
		// The device missed hub.ChannelReady; say it again.
		return rec, false, s.Send(ctx, readyMsg(rec))
	case hub.ChannelFailed:
		return rec, false, refuse(wire.ChanFundingMismatch, "the offer failed")
	default:
		return rec, false, refuse(wire.ChanClosed, "channel is %s", rec.Status)
	}
	if rec.Funding != (btcwire.OutPoint{}) && rec.Funding != m.Outpoint {
		return rec, false, refuse(wire.ChanBadParams, "offer is funded by %v already", rec.Funding)
	}
	if other, err := c.store.Channel(ctx, m.Outpoint); err == nil && other.PendingID != rec.PendingID {
		return rec, false, refuse(wire.ChanFundingMismatch, "outpoint funds another channel")
	} else if err != nil && !errors.Is(err, hub.ErrNotFound) {
		return rec, false, err
	}
	rec.Funding = m.Outpoint
	rec.UpdatedAt = c.clock.Now().UTC()
	if err := c.store.PutChannel(ctx, rec); err != nil {
		return hub.ChannelRecord{}, false, fmt.Errorf("funded: %w", err)
	}
	return rec, true, nil
}

// checkFunding looks rec's funding output up on chain. A mismatch fails the
// channel and is returned as a funding-mismatch refusal; enough depth makes
// it ready and tells the device. It reports whether the channel left
// pending.
func (c *Manager) checkFunding(ctx context.Context, rec hub.ChannelRecord) (bool, error) {
	// The device's ChannelFunded and the watcher may check one offer at
	// the same time; one of them decides, the other sees it decided.
	c.fundMu.Lock()
	defer c.fundMu.Unlock()
	rec, err := c.store.ChannelByPending(ctx, rec.PendingID)
	if err != nil {
		return false, err
	}
	if rec.Status != hub.ChannelPending {
		return true, nil
	}
	out, err := c.output(rec)
	if err != nil {
		return false, err
	}
	txo, err := c.cfg.Chain.TxOut(ctx, rec.Funding, true)
	if errors.Is(err, hub.ErrNotFound) {
		// Not broadcast yet, not propagated yet, or spent. The
		// watcher asks again until PendingTimeout fails the offer.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("funding lookup %v: %w", rec.Funding, err)
	}
	if txo.Value != rec.Capacity || !sameScript(txo.PkScript, out.PkScript()) {
		failed, err := c.putStatus(ctx, rec, hub.ChannelFailed)
		if err != nil {
			return false, err
		}
		c.log.Warn("channel funding mismatch", "device", rec.DeviceID, "outpoint", rec.Funding,
			"value", txo.Value, "want", rec.Capacity)
		ce := refuse(wire.ChanFundingMismatch, "output %v pays %d sat to another script or amount; want %d sat",
			failed.Funding, int64(txo.Value), int64(rec.Capacity))
		ce.PendingID = &failed.PendingID
		return true, ce
	}
	if txo.Confirmations < int64(rec.MinDepth) {
		return false, nil
	}
	ready, err := c.putStatus(ctx, rec, hub.ChannelReady)
	if err != nil {
		return false, err
	}
	// Lock order is entry, then c.mu; never hold c.mu while waiting
	// for an entry.
	c.mu.RLock()
	e := c.cache[ready.Funding]
	c.mu.RUnlock()
	if e != nil {
		e.lock()
		e.rec = ready
		e.unlock()
	}
	c.log.Info("channel ready", "device", ready.DeviceID, "outpoint", ready.Funding, "capacity", ready.Capacity)
	c.send(ctx, ready.DeviceID, readyMsg(ready))
	return true, nil
}

func readyMsg(rec hub.ChannelRecord) *wire.ChannelReady {
	return &wire.ChannelReady{PendingID: rec.PendingID, Outpoint: rec.Funding, Capacity: rec.Capacity, Expiry: rec.Expiry}
}
