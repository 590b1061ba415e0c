package channels

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/m2mhub/m2mhub/hub"
)

// The reads below serve the admin API and the dashboard. They go to the
// store, not the cache, so they show what is durable and never take a
// channel's lock away from its payments.

// ListChannels returns every channel whose status is one of statuses (all
// channels when none is given), oldest first.
func (c *Manager) ListChannels(ctx context.Context, statuses ...hub.ChannelStatus) ([]hub.ChannelRecord, error) {
	recs, err := c.store.Channels(ctx, statuses...)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(recs, func(a, b hub.ChannelRecord) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return recs, nil
}

// Expiring returns the best block height and the open channels (pending,
// ready, frozen) whose expiry height is at most height+within, soonest
// first. These are the channels an operator must see settled or claimed
// before the devices' refund paths open.
func (c *Manager) Expiring(ctx context.Context, within uint32) (uint32, []hub.ChannelRecord, error) {
	h, err := c.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("block height: %w", err)
	}
	height := uint32(max(h, 0))
	recs, err := c.store.Channels(ctx, hub.ChannelPending, hub.ChannelReady, hub.ChannelFrozen)
	if err != nil {
		return 0, nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if uint64(r.Expiry) <= uint64(height)+uint64(within) {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b hub.ChannelRecord) int { return cmp.Compare(a.Expiry, b.Expiry) })
	return height, out, nil
}

// HoldsOf returns the holds, in any status, on deviceID's channels, or on
// every open (ready or frozen) channel when deviceID is empty; newest
// first.
func (c *Manager) HoldsOf(ctx context.Context, deviceID string) ([]hub.Hold, error) {
	var recs []hub.ChannelRecord
	var err error
	if deviceID == "" {
		recs, err = c.store.Channels(ctx, hub.ChannelReady, hub.ChannelFrozen)
	} else {
		recs, err = c.store.ChannelsByDevice(ctx, deviceID)
	}
	if err != nil {
		return nil, err
	}
	var out []hub.Hold
	for _, r := range recs {
		if r.Funding == (hub.ChannelRecord{}).Funding {
			continue // never funded: no holds can exist
		}
		hs, err := c.store.Holds(ctx, r.Funding)
		if err != nil {
			return nil, fmt.Errorf("holds of %v: %w", r.Funding, err)
		}
		out = append(out, hs...)
	}
	slices.SortStableFunc(out, func(a, b hub.Hold) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}
