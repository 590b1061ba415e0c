package settler

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// epochLedger is an epoch's ledger and what planning needs beside it.
type epochLedger struct {
	ledger *settlement.Ledger
	// spent is what each channel paid in the epoch.
	spent map[btcwire.OutPoint]settlement.Msat
	// root is the Merkle root of the epoch's receipt ids, in issue order.
	root     [32]byte
	receipts int
}

// buildLedger builds the ledger of a closed epoch from the store, the same
// way every time it is asked (a resumed run rebuilds it):
//
//   - the balances the previous epoch carried (its run's Closing);
//   - one charge per receipt whose time is in [Start, End), from the payer
//     to the payee, on whichever outpoint it was paid — so a payment made
//     on an old outpoint after the cut belongs to the next epoch;
//   - the hub's fee of every charge paid in the epoch, and the shares its
//     contract's revenue splits give other payees, from the provider to
//     each payee: what the payees' income counts (charging.Income), so
//     each is settled exactly that (see postFees).
func (s *Service) buildLedger(ctx context.Context, ep settlement.Epoch) (*epochLedger, error) {
	l := settlement.NewLedger(ep.Number)
	if ep.Number > 1 {
		prev, err := s.store.Run(ctx, ep.Number-1)
		if err != nil {
			return nil, fmt.Errorf("%w: epoch %d: %w", ErrPending, ep.Number-1, err)
		}
		if !prev.State.Settled() {
			return nil, fmt.Errorf("%w: epoch %d is %s", ErrPending, ep.Number-1, prev.State)
		}
		if prev.Closing != nil && len(prev.Closing.Carried) > 0 {
			carry := settlement.Posting{Kind: settlement.KindCarry, Ref: fmt.Sprintf("epoch %d", prev.Epoch.Number)}
			accts := make([]settlement.Account, 0, len(prev.Closing.Carried))
			for a := range prev.Closing.Carried {
				accts = append(accts, a)
			}
			sort.Slice(accts, func(i, j int) bool { return accts[i] < accts[j] })
			for _, a := range accts {
				carry.Entries = append(carry.Entries, settlement.Entry{Account: a, Amount: prev.Closing.Carried[a]})
			}
			if err := l.Post(carry); err != nil {
				return nil, fmt.Errorf("carry of epoch %d: %w", prev.Epoch.Number, err)
			}
		}
	}

	all, err := s.epochReceipts(ctx, ep)
	if err != nil {
		return nil, err
	}
	el := &epochLedger{ledger: l, spent: make(map[btcwire.OutPoint]settlement.Msat)}
	payees := make(map[string]bool)
	ids := make([][32]byte, len(all))
	for i, x := range all {
		ids[i] = x.id
		if err := l.Post(settlement.Charge(x.r.Payer, x.r.Payee, x.r.Amount, x.hash)); err != nil {
			return nil, fmt.Errorf("receipt %s: %w", x.hash, err)
		}
		el.spent[x.r.Channel] += settlement.MsatOf(x.r.Amount)
		payees[x.r.Payee] = true
	}
	el.root = settlement.NewMerkleTree(ids).Root()
	el.receipts = len(ids)

	if err := s.postFees(ctx, l, ep, payees); err != nil {
		return nil, err
	}
	return el, nil
}

// postFees posts the hub's fee and the other payees' shares of every
// charge paid in ep, from its provider: each charge in exactly one epoch.
//
// A charge is paid in the epoch that holds its paid time (hub.Charge.Paid,
// when charging marked it paid, after its receipt), however long it was
// owed before: by its recorded time, a charge recorded in one epoch and
// paid after that epoch's ledger was built was never posted, and its
// payees never settled what the payer paid. The paid time is the
// marking's, not the receipt's, because charging marks a receipt's
// charges after the receipt is stored, and a cut (with this ledger built
// right after it) can fall in between: a receipt timed before the cut
// whose charges are marked after it has them posted by the next epoch.
// Charges paid before paid times were kept have none; they keep the rule
// of their time: a paid charge of a provider with receipts in the epoch,
// recorded in it.
//
// Charging reads its clock before its store write, so a marking could be
// timed before the cut but written after this ledger read the paid
// charges; the store stamps no paid time before the start of the epoch
// open at the write, read atomically with it
// (hub.ChargeStore.SetChargeStatus), so such a charge is paid in the next
// epoch, and every paid charge this ledger can miss is after End.
func (s *Service) postFees(ctx context.Context, l *settlement.Ledger, ep settlement.Epoch, payees map[string]bool) error {
	paid, err := s.store.ChargesPaid(ctx, ep.From(), ep.End)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(payees))
	for p := range payees {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		cs, err := s.store.ChargesByProvider(ctx, p, ep.From(), ep.End)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.Status == hub.ChargePaid && c.Paid.IsZero() {
				paid = append(paid, c)
			}
		}
	}
	for _, c := range paid {
		if c.Fee != 0 {
			if err := l.Post(settlement.Fee(c.Provider, c.Fee, c.EventID)); err != nil {
				return fmt.Errorf("fee of %s/%s: %w", c.Provider, c.EventID, err)
			}
		}
		for _, sh := range c.Shares {
			if err := l.Post(settlement.Share(c.Provider, sh.Payee, sh.Msat, c.EventID)); err != nil {
				return fmt.Errorf("share of %s/%s to %s: %w", c.Provider, c.EventID, sh.Payee, err)
			}
		}
	}
	return nil
}

// issued is one receipt of an epoch, decoded, with its id.
type issued struct {
	id   [32]byte
	r    channel.Receipt
	hash string
}

// epochReceipts returns the receipts timed in ep, in issue order (time,
// then channel and sequence for payments in the same millisecond): the
// leaves of the epoch's receipts tree, in order.
func (s *Service) epochReceipts(ctx context.Context, ep settlement.Epoch) ([]issued, error) {
	var all []issued
	err := s.scanReceipts(ctx, func(rec hub.ChannelRecord) bool {
		// A channel closed before the epoch began cannot hold its
		// payments; every other one may.
		return !(rec.Status == hub.ChannelClosed && rec.UpdatedAt.Before(ep.From()))
	}, func(r channel.Receipt) bool {
		if ep.Contains(r.Time) && r.Time.Before(ep.End) {
			id := r.ID()
			all = append(all, issued{id: id, r: r, hash: hex.EncodeToString(id[:])})
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i].r, all[j].r
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		if a.Channel != b.Channel {
			return hub.OutpointLess(a.Channel, b.Channel)
		}
		return a.Seq < b.Seq
	})
	return all, nil
}

// scanReceipts calls each with every stored receipt of every channel that
// has payments and that keep accepts, page by page, until each returns
// false.
func (s *Service) scanReceipts(ctx context.Context, keep func(hub.ChannelRecord) bool, each func(channel.Receipt) bool) error {
	recs, err := s.store.Channels(ctx)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.Funding == (btcwire.OutPoint{}) || rec.Seq == 0 || !keep(rec) {
			continue
		}
		for from := uint64(1); ; {
			page, err := s.store.Receipts(ctx, rec.Funding, from, defaultReceiptPage)
			if err != nil {
				return err
			}
			for _, raw := range page {
				var r channel.Receipt
				if err := r.UnmarshalBinary(raw); err != nil {
					return fmt.Errorf("receipt of %v: %w", rec.Funding, err)
				}
				from = r.Seq + 1
				if !each(r) {
					return nil
				}
			}
			if len(page) < defaultReceiptPage {
				break
			}
		}
	}
	return nil
}

// paidAtCut returns a channel's cumulative Paid as of the epoch's end: the
// Paid of its last receipt timed before End (0 when none).
func (s *Service) paidAtCut(ctx context.Context, op btcwire.OutPoint, ep settlement.Epoch) (msat.Amount, error) {
	var paid msat.Amount
	for from := uint64(1); ; {
		page, err := s.store.Receipts(ctx, op, from, defaultReceiptPage)
		if err != nil {
			return 0, err
		}
		for _, raw := range page {
			var r channel.Receipt
			if err := r.UnmarshalBinary(raw); err != nil {
				return 0, fmt.Errorf("receipt of %v: %w", op, err)
			}
			from = r.Seq + 1
			if r.Time.Before(ep.End) {
				paid = r.Paid
			}
		}
		if len(page) < defaultReceiptPage {
			return paid, nil
		}
	}
}

// anchor is what the epoch's batch commits to.
func (s *Service) anchor(ctx context.Context, el *epochLedger) (settlement.Anchor, error) {
	a := settlement.Anchor{ReceiptsRoot: el.root}
	if s.cfg.AuditHead != nil {
		h, err := s.cfg.AuditHead(ctx)
		if err != nil {
			return a, fmt.Errorf("audit head: %w", err)
		}
		a.AuditHead = h
	}
	return a, nil
}
