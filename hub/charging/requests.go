package charging

import (
	"context"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
)

// What makes a paid request's receipt reach its provider once, whichever
// hubd settles it: the asker records the request's event ids under their
// events root before asking (hub.ChargeStore.PutChargeRequest), and
// whoever settles the paid request (the asker hearing the payment, or a
// hubd that found the payment stored, scanOwed) first
// takes the record; only the taker publishes the receipt.

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

// recordRequest records g's event ids under its events root before it is
// asked for; g.recorded says whether that worked (if not, its receipt is
// published without taking the record, and a restart finds it only by
// the channel's Owed).
func (c *Service) recordRequest(ctx context.Context, g *payGroup, root hub.Hash) {
	g.root = root
	err := c.cfg.Charges.PutChargeRequest(ctx, g.key.provider, root, g.ids, requestRecordTTL)
	g.recorded = err == nil
	if err != nil {
		c.log.Warn("charge request not recorded", "provider", g.key.provider, "events", len(g.ids), "err", err)
	}
}

// takeRecorded takes the records of gs, a provider's paid groups, and
// returns the groups whose receipts this hubd publishes: those it took,
// and those never recorded. A group whose record another hubd took was
// published by it. On a store error every group is published: a receipt
// told twice (the provider sees the same event ids again) beats one never
// told.
func (c *Service) takeRecorded(ctx context.Context, prov string, gs []*payGroup) []*payGroup {
	var roots []hub.Hash
	for _, g := range gs {
		if g.recorded {
			roots = append(roots, g.root)
		}
	}
	if len(roots) == 0 {
		return gs
	}
	taken, err := c.cfg.Charges.TakeChargeRequests(ctx, prov, roots)
	if err != nil {
		c.log.Error("taking charge requests", "provider", prov, "err", err)
		return gs
	}
	var out []*payGroup
	i := 0
	for _, g := range gs {
		if !g.recorded {
			out = append(out, g)
			continue
		}
		if taken[i] != nil {
			out = append(out, g)
		}
		i++
	}
	return out
}
