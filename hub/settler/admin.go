package settler

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// maxEpochScan bounds the epochs ReceiptProof looks through for a
// receipt's epoch: one epoch a day for over a century.
const maxEpochScan = 50_000

// Preview plans a settlement of the open epoch as if it were cut now and
// stores, signs and broadcasts nothing, and asks no device anything
// (devices online now are planned as cooperative). The run is what Settle
// would start from: state planned, the epoch as the cut would close it,
// the anchor, the closing balances, the fee and the unsigned transactions;
// the plan adds weights, modes and carry reasons. It returns an error
// wrapping ErrPending while the previous epoch's run has not been
// broadcast. It does not wait for a run in progress.
func (s *Service) Preview(ctx context.Context) (settlement.Run, *settlement.Plan, error) {
	height, err := s.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return settlement.Run{}, nil, err
	}
	open, err := s.store.OpenEpoch(ctx)
	if errors.Is(err, hub.ErrNotFound) {
		// What openEpoch would store; Preview stores nothing.
		open, err = settlement.FirstEpoch(cutTime(s.clock.Now()), uint32(height)), nil
	}
	if err != nil {
		return settlement.Run{}, nil, err
	}
	closed, _, err := open.Cut(cutAt(s.clock.Now(), open), max(uint32(height), open.StartHeight))
	if err != nil {
		return settlement.Run{}, nil, err
	}
	chans, err := s.cfg.Channels.OpenChannels(ctx)
	if err != nil {
		return settlement.Run{}, nil, err
	}
	p, err := s.prepare(ctx, closed, chans)
	if err != nil {
		return settlement.Run{}, nil, err
	}
	anchor, plan := p.anchor, p.plan
	closing, _, err := p.el.ledger.Close(plan.Settled)
	if err != nil {
		return settlement.Run{}, nil, fmt.Errorf("close epoch %d: %w", closed.Number, err)
	}
	r := settlement.NewRun(closed, 1, s.clock.Now().UTC())
	r.Anchor, r.Closing, r.Fee = anchor, closing, plan.Fee
	if len(plan.Txs) == 0 {
		// What the cut would record: an empty run.
		if err := r.Transition(settlement.RunEmpty, r.Created); err != nil {
			return settlement.Run{}, nil, err
		}
	}
	for _, t := range plan.Txs {
		var buf bytes.Buffer
		if err := t.Tx.Serialize(&buf); err != nil {
			return settlement.Run{}, nil, err
		}
		r.Txs = append(r.Txs, buf.Bytes())
	}
	return *r, plan, nil
}

// Runs returns up to limit runs (the latest attempt of each epoch),
// newest first.
func (s *Service) Runs(ctx context.Context, limit int) ([]settlement.Run, error) {
	return s.store.Runs(ctx, limit)
}

// Epochs returns up to limit epochs, newest first; the first is the open
// one.
func (s *Service) Epochs(ctx context.Context, limit int) ([]settlement.Epoch, error) {
	return s.store.Epochs(ctx, limit)
}

// ReceiptProof returns the receipt the hub issued under receiptID, its
// Merkle proof in its epoch's receipts tree, and the epoch's run, whose
// anchor commits to that tree's root. It returns an error wrapping
// ErrNotFound for an unknown receipt or one whose epoch has no run yet
// (the open epoch, or one cut a moment ago).
//
// Receipts are stored by channel, not by id, so finding one reads every
// stored receipt, and the proof reads the epoch's again: an operator's
// query, not a device's.
func (s *Service) ReceiptProof(ctx context.Context, receiptID [32]byte) (*channel.Receipt, settlement.Proof, settlement.Run, error) {
	var found *channel.Receipt
	err := s.scanReceipts(ctx, func(hub.ChannelRecord) bool { return true }, func(r channel.Receipt) bool {
		if r.ID() == receiptID {
			found = &r
			return false
		}
		return true
	})
	if err != nil {
		return nil, settlement.Proof{}, settlement.Run{}, err
	}
	if found == nil {
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("%w: receipt %x", hub.ErrNotFound, receiptID)
	}
	eps, err := s.store.Epochs(ctx, maxEpochScan)
	if err != nil {
		return nil, settlement.Proof{}, settlement.Run{}, err
	}
	var ep *settlement.Epoch
	for i := range eps {
		if eps[i].Contains(found.Time) && !eps[i].Open() && found.Time.Before(eps[i].End) {
			ep = &eps[i]
			break
		}
	}
	if ep == nil {
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("%w: receipt %x is in the open epoch", hub.ErrNotFound, receiptID)
	}
	run, err := s.store.Run(ctx, ep.Number)
	if err != nil {
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("run of epoch %d: %w", ep.Number, err)
	}
	if run.Anchor.ReceiptsRoot == ([32]byte{}) {
		// A run that has not planned yet: nothing anchors the tree.
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("%w: epoch %d not planned yet", hub.ErrNotFound, ep.Number)
	}
	all, err := s.epochReceipts(ctx, *ep)
	if err != nil {
		return nil, settlement.Proof{}, settlement.Run{}, err
	}
	ids := make([][32]byte, len(all))
	idx := -1
	for i, x := range all {
		ids[i] = x.id
		if x.id == receiptID {
			idx = i
		}
	}
	if idx < 0 {
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("settler: receipt %x not among epoch %d's", receiptID, ep.Number)
	}
	tree := settlement.NewMerkleTree(ids)
	if tree.Root() != run.Anchor.ReceiptsRoot {
		// The store changed under the epoch (it must not): refuse to
		// hand out a proof that does not verify.
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("settler: epoch %d receipts no longer give the anchored root", ep.Number)
	}
	proof, err := tree.Proof(idx)
	if err != nil {
		return nil, settlement.Proof{}, settlement.Run{}, err
	}
	return found, proof, run, nil
}
