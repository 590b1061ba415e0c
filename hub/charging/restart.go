package charging

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/shopspring/decimal"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
)

// What charging rebuilds from the store after a restart: the bandwidth
// volume of each billing window (from the charges' quantities) and the
// owed charges still to be requested (from ChargeStore.OwedCharges).

// volumeSlack bounds how far before a billing window's start a charge of
// an event inside it can have been recorded: the intake refuses events
// more than metering.DefaultMaxFuture (minutes) ahead of the hub's clock,
// so a day is ample and keeps the rebuild to one window's charges.
const volumeSlack = 24 * time.Hour

// volume returns the bandwidth counted in key's billing window. The first
// time a window is used in this process it is summed from the stored
// charges, so a restart in the middle of a window keeps its tier. c.mu is
// held.
func (c *Service) volume(ctx context.Context, k *contracts.Contract, key volumeKey, now time.Time) (contracts.Dec, error) {
	if v, ok := c.volumes[key]; ok {
		return v, nil
	}
	// Every charge of the window was recorded (Charged) between its start
	// less the slack and now; the window's end is not needed because
	// EventTime decides membership.
	cs, err := c.cfg.Charges.ChargesByPayer(ctx, key.payer, key.window.Add(-volumeSlack), now.Add(time.Nanosecond))
	if err != nil {
		return contracts.Dec{}, fmt.Errorf("bandwidth volume of %s at %s: %w", key.payer, key.provider, err)
	}
	sum := decimal.Zero
	for _, ch := range cs {
		if ch.Provider != key.provider || ch.Contract != key.contract || ch.Quantity == "" ||
			!k.Bandwidth.WindowStart(ch.EventTime).Equal(key.window) {
			continue
		}
		q, err := decimal.NewFromString(ch.Quantity)
		if err != nil {
			return contracts.Dec{}, fmt.Errorf("charge %s/%s: quantity %q: %w", ch.Provider, ch.EventID, ch.Quantity, err)
		}
		sum = sum.Add(q)
	}
	v := contracts.D(sum)
	c.volumes[key] = v
	return v, nil
}

// scanOwed asks for the owed charges no live hubd holds: it runs once
// before the first flush (a previous run of this hubd left them owed) and
// every claimScan after (another hubd died holding them, claims.go).
// Charges this Service holds, or held when the scan began, are skipped;
// of the rest, those it claims are its own from then on.
//
// A charge can be owed in the store although its payment went through:
// its asker stopped between the payment's durable write and marking the
// charges paid. Such a payment is found among the channel's stored
// receipts by the request's record (settleStored): its receipt is
// published again and its charges marked paid. The rest are asked
// for again: no live request holds them (its asker's claim would), and
// none was paid (its receipt would be stored). The channel's Owed does
// not tell which charges are paid — every payment on the channel lowers
// it — so it is not consulted.
// Charges on a channel that is not ready are not requested: there is no
// channel to pay them on; they are claimed again at the next scan.
func (c *Service) scanOwed(ctx context.Context, first bool) {
	c.pay.Lock()
	before := maps.Clone(c.held)
	c.pay.Unlock()
	cs, err := c.cfg.Charges.OwedCharges(ctx)
	if err != nil {
		c.log.Error("reading owed charges", "err", err)
		return
	}
	var free []hub.Charge
	for _, ch := range cs {
		if !before[chargeKey{ch.Provider, ch.EventID}] && ch.Channel != (btcwire.OutPoint{}) {
			free = append(free, ch)
		}
	}
	if len(free) == 0 {
		return
	}
	free = c.claimed(ctx, free)
	byChan := map[btcwire.OutPoint][]hub.Charge{}
	var order []btcwire.OutPoint
	for _, ch := range free {
		if byChan[ch.Channel] == nil {
			order = append(order, ch.Channel)
		}
		byChan[ch.Channel] = append(byChan[ch.Channel], ch)
	}
	var again []hub.Charge
	for _, op := range order {
		list := byChan[op]
		_, ready, err := c.cfg.Channels.ChannelOwed(ctx, op)
		if err != nil || !ready {
			if first {
				c.log.Warn("owed charges on a channel that is not ready are not requested",
					"channel", op, "charges", len(list), "err", err)
			}
			continue
		}
		again = append(again, c.settleStored(ctx, op, list)...)
	}
	if len(free) > 0 {
		c.log.Info("owed charges claimed", "claimed", len(free), "requested", len(again), "at start", first)
	}
	c.addOwed(again)
}

// settleStored settles the requests for list's charges (owed on the
// channel funded by op) whose payments the channel's stored receipts show:
// each whose request's record is found has its receipt published to its
// provider (and shares to split payees) and its charges marked paid, as if
// the payment had just been heard of (settleProvider). It returns the
// charges left owed.
func (c *Service) settleStored(ctx context.Context, op btcwire.OutPoint, list []hub.Charge) []hub.Charge {
	rs, err := ChargeReceipts(ctx, c.cfg.Channels, op)
	if err != nil {
		c.log.Warn("receipts of a channel with owed charges not read", "channel", op, "err", err)
		return list
	}
	byProv := map[string][]StoredReceipt{}
	owedBy := map[string]bool{}
	for _, ch := range list {
		owedBy[ch.Provider] = true
	}
	for _, r := range rs {
		if owedBy[r.Payee] {
			byProv[r.Payee] = append(byProv[r.Payee], r)
		}
	}
	settled := map[string]bool{} // provider, event id
	for _, prov := range slices.Sorted(maps.Keys(byProv)) {
		roots := make([]hub.Hash, len(byProv[prov]))
		for i, r := range byProv[prov] {
			roots[i] = r.EventsRoot
		}
		recorded, err := c.cfg.Charges.ChargeRequests(ctx, prov, roots)
		if err != nil {
			c.log.Error("reading charge requests of stored payments", "provider", prov, "err", err)
			continue
		}
		charges := map[string]*hub.Charge{}
		for i := range list {
			if list[i].Provider == prov {
				charges[list[i].EventID] = &list[i]
			}
		}
		var gs []*payGroup
		receipts := map[*payGroup][]byte{}
		for i, ids := range recorded {
			if ids == nil {
				continue
			}
			g := &payGroup{key: payKey{provider: prov, channel: op}, root: roots[i], recorded: true}
			for _, id := range ids {
				if ch := charges[id]; ch != nil {
					g.add(ch, time.Time{}) // not owed here: settled from the stored payment
				}
				settled[prov+"\x00"+id] = true
			}
			g.ids = ids // the receipt covers exactly the request's events
			gs = append(gs, g)
			receipts[g] = byProv[prov][i].Raw
		}
		if len(gs) > 0 {
			c.settleProvider(ctx, prov, gs, receipts)
		}
	}
	if len(settled) == 0 {
		return list
	}
	var left []hub.Charge
	for _, ch := range list {
		if !settled[ch.Provider+"\x00"+ch.EventID] {
			left = append(left, ch)
		}
	}
	c.log.Info("owed charges found paid by a stored payment", "channel", op, "charges", len(list)-len(left))
	return left
}
