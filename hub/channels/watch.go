package channels

import (
	"bytes"
	"context"
	"errors"
	"slices"

	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// watch is the manager's chain watcher. Every PollInterval it confirms
// fundings and closes, expires holds and stale offers, and, when the tip
// moved, runs the expiry safety scan.
func (c *Manager) watch() {
	height := int32(-1)
	c.loadActiveHolds(c.ctx)
	for first := true; ; first = false {
		c.poll(c.ctx, &height)
		if first {
			close(c.ready)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-c.clock.TickAfter(c.cfg.PollInterval):
		}
	}
}

// poll runs one round of the watcher. Each step logs its own failures and
// the next round tries again, so one unreachable node or store error does
// not stop the others. Listing every channel from the store is the
// expensive part, so it happens once per block, one listing for every
// step; between blocks only the channels this hub is waiting on are
// looked at.
func (c *Manager) poll(ctx context.Context, height *int32) {
	c.expireHolds(ctx)
	h, err := c.cfg.Chain.BlockCount(ctx)
	if err != nil && ctx.Err() == nil {
		c.log.Warn("chain height unavailable", "err", err)
	}
	var listed []hub.ChannelRecord // every channel the steps look at, on a full round
	full := err == nil && h != *height
	if full {
		listed, err = c.store.Channels(ctx, hub.ChannelPending, hub.ChannelClosing, hub.ChannelReady, hub.ChannelFrozen)
		if err != nil {
			c.log.Error("listing channels failed", "err", err)
			full = false
		}
	}
	if full {
		*height = h
	}
	c.checkPending(ctx, listed, full)
	c.checkClosing(ctx, listed, full)
	if full {
		c.expiryScan(ctx, uint32(h), withStatus(listed, hub.ChannelReady, hub.ChannelFrozen))
	}
}

// withStatus returns the records of recs whose status is one of statuses.
func withStatus(recs []hub.ChannelRecord, statuses ...hub.ChannelStatus) []hub.ChannelRecord {
	var out []hub.ChannelRecord
	for _, r := range recs {
		if slices.Contains(statuses, r.Status) {
			out = append(out, r)
		}
	}
	return out
}

// watchPending makes the watcher follow an offer until it leaves pending.
func (c *Manager) watchPending(id [32]byte) {
	c.watchMu.Lock()
	c.watchedPend[id] = struct{}{}
	c.watchMu.Unlock()
}

// watchClosing makes the watcher follow a closing channel until it closes.
func (c *Manager) watchClosing(op btcwire.OutPoint) {
	c.watchMu.Lock()
	c.watchedShut[op] = struct{}{}
	c.watchMu.Unlock()
}

// watched lists the channels in status st to look at this round: on a
// full round every one in listed (the round's listing of the store), else
// the ones being followed.
func (c *Manager) watched(ctx context.Context, st hub.ChannelStatus, listed []hub.ChannelRecord, full bool) ([]hub.ChannelRecord, error) {
	if full {
		recs := withStatus(listed, st)
		c.watchMu.Lock()
		for _, r := range recs {
			if st == hub.ChannelPending {
				c.watchedPend[r.PendingID] = struct{}{}
			} else {
				c.watchedShut[r.Funding] = struct{}{}
			}
		}
		c.watchMu.Unlock()
	}
	c.watchMu.Lock()
	var pend [][32]byte
	var shut []btcwire.OutPoint
	if st == hub.ChannelPending {
		for id := range c.watchedPend {
			pend = append(pend, id)
		}
	} else {
		for op := range c.watchedShut {
			shut = append(shut, op)
		}
	}
	c.watchMu.Unlock()
	var recs []hub.ChannelRecord
	for _, id := range pend {
		r, err := c.store.ChannelByPending(ctx, id)
		if err != nil || r.Status != st {
			c.watchMu.Lock()
			delete(c.watchedPend, id)
			c.watchMu.Unlock()
			continue
		}
		recs = append(recs, r)
	}
	for _, op := range shut {
		r, err := c.store.Channel(ctx, op)
		if err != nil || r.Status != st {
			c.watchMu.Lock()
			delete(c.watchedShut, op)
			c.watchMu.Unlock()
			continue
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// loadActiveHolds caches the channels that have active holds, so holds
// made before a restart still expire on time. The store lists the active
// holds itself: asking every open channel for its holds cost a read per
// channel (100,000 round trips to Redis at 100,000 channels).
func (c *Manager) loadActiveHolds(ctx context.Context) {
	holds, err := c.store.ActiveHolds(ctx)
	if err != nil {
		c.log.Error("loading active holds failed", "err", err)
		return
	}
	for _, h := range holds {
		if _, err := c.entry(ctx, h.Channel); err != nil {
			c.log.Error("loading channel failed", "channel", h.Channel, "err", err)
		}
	}
}

// checkPending re-checks every offer: a named funding output is looked up
// until it is deep enough or proves wrong; an offer left unfunded past
// PendingTimeout fails, so it stops counting against the device's
// MaxPendingOpens.
func (c *Manager) checkPending(ctx context.Context, listed []hub.ChannelRecord, full bool) {
	recs, err := c.watched(ctx, hub.ChannelPending, listed, full)
	if err != nil {
		c.log.Error("listing pending channels failed", "err", err)
		return
	}
	now := c.clock.Now()
	for _, r := range recs {
		if r.Funding != (btcwire.OutPoint{}) {
			left, err := c.checkFunding(ctx, r)
			var ce *wire.ChannelError
			switch {
			case errors.As(err, &ce):
				c.send(ctx, r.DeviceID, ce)
				continue
			case err != nil:
				c.log.Warn("funding check failed", "channel", r.Funding, "err", err)
				continue
			case left:
				continue
			}
		}
		if now.Sub(r.CreatedAt) > c.cfg.PendingTimeout {
			if _, err := c.putStatus(ctx, r, hub.ChannelFailed); err != nil {
				c.log.Error("failing stale offer failed", "err", err)
				continue
			}
			c.log.Info("offer expired unfunded", "device", r.DeviceID)
			pid := r.PendingID
			ce := refuse(wire.ChanFundingMismatch, "no confirmed funding within %s", c.cfg.PendingTimeout)
			ce.PendingID = &pid
			c.send(ctx, r.DeviceID, ce)
		}
	}
}

// checkClosing marks a closing channel closed once its close or claim
// transaction is MinDepth deep.
func (c *Manager) checkClosing(ctx context.Context, listed []hub.ChannelRecord, full bool) {
	recs, err := c.watched(ctx, hub.ChannelClosing, listed, full)
	if err != nil {
		c.log.Error("listing closing channels failed", "err", err)
		return
	}
	for _, r := range recs {
		if r.CloseTx == nil {
			continue
		}
		conf, err := c.cfg.Chain.Confirmations(ctx, *r.CloseTx)
		if errors.Is(err, hub.ErrNotFound) {
			c.rebroadcastClose(ctx, r)
			continue
		}
		if err != nil {
			c.log.Warn("close confirmation check failed", "channel", r.Funding, "err", err)
			continue
		}
		if conf < int64(r.MinDepth) || conf < 1 {
			continue
		}
		c.setStatus(ctx, r.Funding, hub.ChannelClosing, hub.ChannelClosed)
	}
}

// rebroadcastClose sends a closing channel's recorded transaction again
// when the node does not know it (its first broadcast failed, or the node
// lost its mempool), unless another transaction already spent the channel.
func (c *Manager) rebroadcastClose(ctx context.Context, r hub.ChannelRecord) {
	if _, err := c.cfg.Chain.TxOut(ctx, r.Funding, false); errors.Is(err, hub.ErrNotFound) {
		// Spent in a block by a transaction that is not the recorded
		// one (the device's refund after expiry): the close can never
		// confirm, and the channel is over.
		c.log.Warn("closing channel spent on chain by another transaction; closing it",
			"channel", r.Funding, "txid", r.CloseTx, "paid_msat", uint64(r.Paid))
		c.setStatus(ctx, r.Funding, hub.ChannelClosing, hub.ChannelClosed)
		return
	}
	if len(r.CloseRaw) == 0 {
		c.log.Warn("closing transaction unknown to the node", "channel", r.Funding, "txid", r.CloseTx)
		return
	}
	tx := new(btcwire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(r.CloseRaw)); err != nil {
		c.log.Error("stored close transaction does not decode", "channel", r.Funding, "err", err)
		return
	}
	if _, err := c.cfg.Chain.SendRawTransaction(ctx, tx); err != nil {
		c.log.Warn("broadcasting the recorded close again failed", "channel", r.Funding, "txid", r.CloseTx, "err", err)
		return
	}
	c.log.Info("recorded close broadcast again", "channel", r.Funding, "txid", r.CloseTx)
}

// setStatus moves channel op from status from to status to, through its
// cached entry so the cache and the store agree.
func (c *Manager) setStatus(ctx context.Context, op btcwire.OutPoint, from, to hub.ChannelStatus) {
	e, err := c.entry(ctx, op)
	if err != nil {
		c.log.Error("loading channel failed", "channel", op, "err", err)
		return
	}
	e.lock()
	defer e.unlock()
	if e.rec.Status != from {
		return
	}
	rec, err := c.putStatus(ctx, e.rec, to)
	if err != nil {
		c.log.Error("channel status change failed", "channel", op, "err", err)
		return
	}
	e.rec = rec
	c.log.Info("channel "+string(to), "channel", op, "txid", rec.CloseTx)
}

// expiryScan claims every channel the hub was paid in whose expiry is
// within SafetyMargin blocks, so the claim confirms before the device's
// refund becomes valid, and warns at twice the margin. From its expiry on,
// a channel's output may be spent by the device's refund, which the hub
// does not sign: an expired channel whose output is spent in a block is
// moved to closed (spentOnChain), so it leaves settlement and is not
// claimed again at every block.
func (c *Manager) expiryScan(ctx context.Context, height uint32, recs []hub.ChannelRecord) {
	m := c.cfg.SafetyMargin
	for _, r := range recs {
		if height >= r.Expiry && c.spentOnChain(ctx, r) {
			continue
		}
		switch {
		case r.Paid == 0 || height+2*m < r.Expiry:
			continue
		case height+m < r.Expiry:
			c.log.Warn("channel nears expiry", "channel", r.Funding, "expiry", r.Expiry, "height", height)
			continue
		}
		txid, err := c.Claim(ctx, r.Funding)
		if errors.Is(err, ErrNothingToClaim) {
			// Dust: claiming would cost more than it brings; the
			// device's refund takes the channel back.
			c.log.Info("expiry claim not worth its fee; left to the device's refund", "channel", r.Funding,
				"expiry", r.Expiry, "height", height, "err", err)
			continue
		}
		if err != nil {
			c.log.Warn("expiry claim not made", "channel", r.Funding, "expiry", r.Expiry, "height", height, "err", err)
			continue
		}
		c.log.Warn("channel claimed before expiry", "channel", r.Funding, "expiry", r.Expiry, "height", height, "txid", txid)
	}
}

// spentOnChain reports whether an open channel's output is spent in the
// best chain (a refund: every other spend goes through the hub, which
// tracks it), and if so moves the channel to closed. A node error counts
// as not spent; the next block asks again.
func (c *Manager) spentOnChain(ctx context.Context, r hub.ChannelRecord) bool {
	_, err := c.cfg.Chain.TxOut(ctx, r.Funding, false)
	switch {
	case err == nil:
		return false
	case !errors.Is(err, hub.ErrNotFound):
		c.log.Warn("expired channel output check failed", "channel", r.Funding, "err", err)
		return false
	}
	c.log.Warn("expired channel spent on chain by someone else (the device's refund); closing it",
		"channel", r.Funding, "expiry", r.Expiry, "paid_msat", uint64(r.Paid))
	c.setStatus(ctx, r.Funding, r.Status, hub.ChannelClosed)
	return true
}
