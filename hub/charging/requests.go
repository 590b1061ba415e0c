package charging

import (
	"context"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
)

// What makes owed charges paid once, whichever hubd asks for them: the
// asker records each request before sending it (hub.ChargeStore.
// AskCharges) under a token of its own, in the claims of its charges, and
// the payment is applied only while the claims still name that token
// (hub.PaymentRequest.Fence). A request its asker superseded (asked
// again, gave up on) or whose charges another hubd claimed since (its
// asker died) can no longer be paid; one that was paid is seen paid by
// any later ask. The record, under the request's events root, tells a
// hubd that finds the payment stored (scanOwed: its asker died before
// marking the charges paid) which charges the receipt covers; it is
// deleted once they are marked paid (dropRecords), after the receipt was
// published (settleProvider).

// requestRecordTTL is how long a request's record is kept for a payment
// found later: far beyond RequestTimeout (a request is answered or given
// up within it) and a restart.
const requestRecordTTL = 10 * time.Minute

// receiptsBack bounds how far back in a channel's payments a stored
// payment of a request is looked for: its payment came within
// RequestTimeout before the hub found it missing (seconds of a device's
// payments).
const receiptsBack = 4096

// StoredReceipt is a receipt stored with a channel's payment: its
// encoding and its decoded form.
type StoredReceipt struct {
	Raw []byte
	channel.Receipt
}

// ChargeReceipts returns the receipts of the last receiptsBack payments on
// the channel funded by op that pay for charges (version 2, naming
// events), oldest first.
func ChargeReceipts(ctx context.Context, chans Channels, op btcwire.OutPoint) ([]StoredReceipt, error) {
	rec, err := chans.Channel(ctx, op)
	if err != nil {
		return nil, err
	}
	from := rec.Seq - min(rec.Seq, receiptsBack)
	raws, err := chans.Receipts(ctx, op, from, receiptsBack+1)
	if err != nil {
		return nil, err
	}
	var out []StoredReceipt
	for _, raw := range raws {
		var r StoredReceipt
		if r.Receipt.UnmarshalBinary(raw) != nil || r.EventCount == 0 {
			continue
		}
		r.Raw = raw
		out = append(out, r)
	}
	return out, nil
}

// askRequest records the request about to be sent for g, under its events
// root and a fresh token, and returns the fence its payment carries. When
// it must not be sent it returns nil, having queued g again: after a
// second on a store error, or, when a charge's claim is lost or names a
// paid request, through the claims (dropGroup).
func (c *Service) askRequest(ctx context.Context, g *payGroup, root hub.Hash, now time.Time) *hub.ChargeFence {
	f := hub.ChargeFence{Provider: g.key.provider, Owner: c.cfg.Instance, Token: randomID(), IDs: g.ids}
	states, err := c.cfg.Charges.AskCharges(ctx, hub.ChargeAsk{ChargeFence: f, Root: root, TTL: requestRecordTTL})
	if err != nil {
		c.log.Warn("charge request not recorded, asked again later", "provider", g.key.provider, "events", len(g.ids), "err", err)
		c.unbusy(g, true, now)
		return nil
	}
	if !allAsked(states) {
		c.pay.Lock()
		delete(c.busy, g.key)
		c.pay.Unlock()
		c.dropGroup(ctx, g, states)
		return nil
	}
	g.root, g.recorded = root, true
	return &f
}

// voidRequest gives up on g's request, sent and unanswered: a void ask
// (a token never sent) makes it unpayable. It reports whether it did; if
// not, a charge's claim is lost or names a paid request (dropGroup has
// handed the charges to the scan), or the store failed (err).
func (c *Service) voidRequest(ctx context.Context, g *payGroup) (bool, error) {
	f := hub.ChargeFence{Provider: g.key.provider, Owner: c.cfg.Instance, Token: randomID(), IDs: g.ids}
	states, err := c.cfg.Charges.AskCharges(ctx, hub.ChargeAsk{ChargeFence: f})
	if err != nil {
		return false, err
	}
	if !allAsked(states) {
		c.dropGroup(ctx, g, states)
		return false, nil
	}
	return true, nil
}

// dropGroup forgets g, whose charges are no longer all this Service's to
// ask for: a claim was lost (another hubd asks for those), or names a
// request already paid (its payment is stored). Its claims are released,
// so the next scan (of this hubd or another) settles the paid ones from
// the stored payment and asks for the rest again.
func (c *Service) dropGroup(ctx context.Context, g *payGroup, states []hub.ClaimState) {
	var lost, paid int
	for _, s := range states {
		switch s {
		case hub.ClaimLost:
			lost++
		case hub.ClaimPaid:
			paid++
		}
	}
	c.log.Info("charge request handed to the scan", "payer", g.key.payer, "provider", g.key.provider,
		"events", len(g.ids), "claims lost", lost, "paid", paid)
	c.toScan(ctx, g.key.provider, g.ids)
}

// toScan forgets provider's charges ids and releases their claims, so the
// next scan (of this hubd or another) claims them at once, without
// waiting for the claims to expire.
func (c *Service) toScan(ctx context.Context, provider string, ids []string) {
	c.unhold(provider, ids)
	if err := c.cfg.Charges.ReleaseCharges(ctx, provider, ids, c.cfg.Instance); err != nil {
		c.log.Warn("releasing charge claims", "provider", provider, "err", err)
	}
}

func allAsked(states []hub.ClaimState) bool {
	for _, s := range states {
		if s != hub.ClaimAsked {
			return false
		}
	}
	return true
}

// dropRecords deletes the records of gs, a provider's groups just marked
// paid: their receipts are told, and nothing will look for their payments
// again.
func (c *Service) dropRecords(ctx context.Context, prov string, gs []*payGroup) {
	var roots []hub.Hash
	for _, g := range gs {
		if g.recorded {
			roots = append(roots, g.root)
		}
	}
	if len(roots) == 0 {
		return
	}
	if _, err := c.cfg.Charges.TakeChargeRequests(ctx, prov, roots); err != nil {
		c.log.Warn("deleting the records of paid charge requests (they expire)", "provider", prov, "err", err)
	}
}
