package channels

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// rolloverTag separates the pending-id mask of a rolled-over channel from
// every other hash the hub computes.
const rolloverTag = "m2mhub/rollover"

// rolloverMask is what a rolled-over channel's pending id is XORed with.
// The next channel of a settlement keeps the per-channel hub key of the
// channel it replaces (the device signed an output with that key), but its
// record needs a pending id of its own; XOR with a mask derived from the new
// funding outpoint gives a fresh, unique id from which the original one, and
// with it the key tweak, can be recovered.
func rolloverMask(funding btcwire.OutPoint) [32]byte {
	h := sha256.New()
	h.Write([]byte(rolloverTag))
	h.Write(funding.Hash[:])
	var idx [4]byte
	idx[0], idx[1], idx[2], idx[3] = byte(funding.Index>>24), byte(funding.Index>>16), byte(funding.Index>>8), byte(funding.Index)
	h.Write(idx[:])
	var m [32]byte
	copy(m[:], h.Sum(nil))
	return m
}

// RolloverPendingID returns the pending id of the channel that replaces a
// channel whose key tweak uses rootID, funded at next.
func RolloverPendingID(rootID [32]byte, next btcwire.OutPoint) [32]byte {
	m := rolloverMask(next)
	var id [32]byte
	for i := range id {
		id[i] = rootID[i] ^ m[i]
	}
	return id
}

// RootPendingID returns the pending id whose tweak of the hub identity key
// gives rec's HubKey: rec.PendingID for a channel opened by a device, the
// unmasked id for one created by a settlement rollover. It returns false
// when neither derives rec.HubKey from hubKey (the identity key changed).
func RootPendingID(rec hub.ChannelRecord, hubKey *btcec.PublicKey) ([32]byte, bool) {
	dev, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		return [32]byte{}, false
	}
	candidates := [][32]byte{rec.PendingID, RolloverPendingID(rec.PendingID, rec.Funding)}
	for _, id := range candidates {
		pub, err := channel.HubChannelPubKey(hubKey, channel.ChannelKeyTweak(dev, id))
		if err == nil && hub.PubKeyOf(pub) == rec.HubKey {
			return id, true
		}
	}
	return [32]byte{}, false
}

// SettleKey returns the hub's private key of channel rec, for channels
// opened by devices and for those created by settlement rollovers alike.
func (c *Manager) SettleKey(rec hub.ChannelRecord) (*btcec.PrivateKey, error) {
	root, ok := RootPendingID(rec, c.cfg.HubKey.PubKey())
	if !ok {
		return nil, fmt.Errorf("channels: channel %v: hub key does not derive from the identity key", rec.Funding)
	}
	dev, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		return nil, fmt.Errorf("channel device key: %w", err)
	}
	return channel.HubChannelPrivKey(c.cfg.HubKey, channel.ChannelKeyTweak(dev, root))
}

// Settleable is one open channel as a settlement sees it at the cut
// (hub.Settleable).
type Settleable = hub.Settleable

// lockOpen loads every ready or frozen channel into the cache and locks
// them all, in outpoint order (the order RecordCharges uses), so no
// payment is between its timestamp and its durable write. The caller
// unlocks the returned entries.
func (c *Manager) lockOpen(ctx context.Context) ([]*chanEntry, error) {
	recs, err := c.store.Channels(ctx, hub.ChannelReady, hub.ChannelFrozen)
	if err != nil {
		return nil, err
	}
	sort.Slice(recs, func(i, j int) bool { return hub.OutpointLess(recs[i].Funding, recs[j].Funding) })
	entries := make([]*chanEntry, 0, len(recs))
	unlock := func() {
		for _, l := range entries {
			l.mu.Unlock()
		}
	}
	for _, r := range recs {
		e, err := c.entry(ctx, r.Funding)
		if err != nil {
			unlock()
			return nil, err
		}
		e.lock()
		entries = append(entries, e)
	}
	// Another hubd on the same store may have taken payments or recorded
	// charges on these channels since this one cached them: read them
	// again now that no local writer is between its write and its cache.
	if err := c.adoptAll(ctx, entries); err != nil {
		unlock()
		return nil, err
	}
	return entries, nil
}

// adoptAll brings the locked entries up to the store's records, with one
// read of the open channels and one more per entry no longer open.
func (c *Manager) adoptAll(ctx context.Context, entries []*chanEntry) error {
	recs, err := c.store.Channels(ctx, hub.ChannelReady, hub.ChannelFrozen)
	if err != nil {
		return err
	}
	stored := make(map[btcwire.OutPoint]hub.ChannelRecord, len(recs))
	for _, r := range recs {
		stored[r.Funding] = r
	}
	for _, e := range entries {
		fresh, ok := stored[e.rec.Funding]
		if !ok {
			if fresh, err = c.store.Channel(ctx, e.rec.Funding); err != nil {
				return fmt.Errorf("reread channel %v: %w", e.rec.Funding, err)
			}
		}
		e.adopt(fresh)
	}
	return nil
}

// CutOpen runs cut while every open channel is locked, and returns those
// channels as of that instant. Holding every lock makes the cut a point in
// payment order: every payment acknowledged before it carries a time
// before the cut's, every later one a time at or after it. Payments wait
// for the locks only while cut runs (one durable write).
func (c *Manager) CutOpen(ctx context.Context, cut func() error) ([]Settleable, error) {
	entries, err := c.lockOpen(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, e := range entries {
			e.unlock()
		}
	}()
	if err := cut(); err != nil {
		return nil, err
	}
	out := make([]Settleable, 0, len(entries))
	for _, e := range entries {
		if e.rec.Status == hub.ChannelReady || e.rec.Status == hub.ChannelFrozen {
			out = append(out, Settleable{Record: e.rec, Output: e.out})
		}
	}
	return out, nil
}

// OpenChannels returns every ready or frozen channel, with its output, as
// the store has it now.
func (c *Manager) OpenChannels(ctx context.Context) ([]Settleable, error) {
	recs, err := c.store.Channels(ctx, hub.ChannelReady, hub.ChannelFrozen)
	if err != nil {
		return nil, err
	}
	out := make([]Settleable, 0, len(recs))
	for _, r := range recs {
		e, err := c.entry(ctx, r.Funding)
		if err != nil {
			return nil, err
		}
		e.lock()
		// Read under the lock: another hubd may have moved the channel
		// since it was cached, and no local write is half done.
		fresh, err := c.store.Channel(ctx, r.Funding)
		if err != nil {
			e.unlock()
			return nil, fmt.Errorf("reread channel %v: %w", r.Funding, err)
		}
		e.adopt(fresh)
		sc := Settleable{Record: e.rec, Output: e.out}
		e.unlock()
		if sc.Record.Status == hub.ChannelReady || sc.Record.Status == hub.ChannelFrozen {
			out = append(out, sc)
		}
	}
	return out, nil
}

// RolloverPair is one settled channel and the output that replaces it
// (hub.RolloverPair).
type RolloverPair = hub.RolloverPair

// Rollover atomically stores r (normally in state broadcast) and moves
// each pair's channel to its next output, under the locks of the old
// channels, so no payment lands on an old outpoint after the move. The
// next record keeps the device, keys, status and expiry terms, starts at
// Seq 0, and carries the old Owed plus what was paid on the old outpoint
// after the cut. It returns the next records in pair order. A channel that
// is already closed makes it fail with the store's ErrSeqConflict, writing
// nothing.
func (c *Manager) Rollover(ctx context.Context, st hub.SettlementStore, r settlement.Run, pairs []RolloverPair) ([]hub.ChannelRecord, error) {
	sorted := append([]RolloverPair(nil), pairs...)
	sort.Slice(sorted, func(i, j int) bool { return hub.OutpointLess(sorted[i].Old, sorted[j].Old) })
	entries := make([]*chanEntry, 0, len(sorted))
	defer func() {
		for _, e := range entries {
			e.unlock()
		}
	}()
	for _, p := range sorted {
		e, err := c.entry(ctx, p.Old)
		if err != nil {
			return nil, err
		}
		e.lock()
		entries = append(entries, e)
	}
	now := c.clock.Now().UTC()
	next, err := c.commitRollover(ctx, st, r, sorted, entries, now)
	if err != nil {
		return nil, err
	}
	// Durable: the cache follows. Closed entries stay cached so a payment
	// on the old outpoint is refused as closed at once.
	for _, e := range entries {
		e.rec.Status = hub.ChannelClosed
		e.rec.UpdatedAt = now
	}
	byOld := make(map[btcwire.OutPoint]hub.ChannelRecord, len(sorted))
	for i, p := range sorted {
		byOld[p.Old] = next[i]
	}
	out := make([]hub.ChannelRecord, len(pairs))
	for i, p := range pairs {
		out[i] = byOld[p.Old]
	}
	return out, nil
}

// rolloverTries bounds how often Rollover reads the old channels again
// because another hubd moved one between its read and the store's commit.
const rolloverTries = 3

// commitRollover builds the next records of the sorted pairs from the
// stored old records (entries, locked, in the same order) and commits
// them with r. The next records carry Owed and what was paid after the
// cut, which another hubd may have raised since this one cached the
// channel: they are read from the store, and the store refuses the commit
// if they moved again before it, in which case they are read once more.
func (c *Manager) commitRollover(ctx context.Context, st hub.SettlementStore, r settlement.Run, sorted []RolloverPair, entries []*chanEntry, now time.Time) ([]hub.ChannelRecord, error) {
	var err error
	for range rolloverTries {
		old := make([]hub.ChannelRecord, len(entries))
		for i, e := range entries {
			fresh, rerr := c.store.Channel(ctx, e.rec.Funding)
			if rerr != nil {
				return nil, fmt.Errorf("reread channel %v: %w", e.rec.Funding, rerr)
			}
			e.adopt(fresh)
			old[i] = fresh
		}
		var next []hub.ChannelRecord
		if next, err = c.nextRecords(sorted, old, now); err != nil {
			return nil, err
		}
		if err = st.CommitRollover(ctx, r, old, next); !errors.Is(err, hub.ErrSeqConflict) {
			return next, err
		}
	}
	return nil, err
}

// nextRecords builds the record of each pair's next channel from the old
// channel's stored record.
func (c *Manager) nextRecords(sorted []RolloverPair, old []hub.ChannelRecord, now time.Time) ([]hub.ChannelRecord, error) {
	next := make([]hub.ChannelRecord, len(sorted))
	for i, p := range sorted {
		rec := old[i]
		root, ok := RootPendingID(rec, c.cfg.HubKey.PubKey())
		if !ok {
			return nil, fmt.Errorf("channels: rollover of %v: hub key does not derive from the identity key", rec.Funding)
		}
		late := msat.Amount(0)
		if rec.Paid > p.PaidAtCut {
			late = rec.Paid - p.PaidAtCut
		}
		status := rec.Status
		if status != hub.ChannelFrozen {
			status = hub.ChannelReady
		}
		next[i] = hub.ChannelRecord{
			PendingID: RolloverPendingID(root, p.Next),
			DeviceID:  rec.DeviceID,
			DeviceKey: rec.DeviceKey,
			HubKey:    rec.HubKey,
			Capacity:  p.NextParams.Capacity,
			Expiry:    p.NextParams.Expiry,
			Status:    status,
			Funding:   p.Next,
			MinDepth:  rec.MinDepth,
			Owed:      rec.Owed + late,
			CreatedAt: now,
			UpdatedAt: now,
		}
	}
	return next, nil
}
