package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/settlement"
)

// ValidateRun refuses a run no SettlementStore should write: runs are
// keyed by (Epoch.Number, Attempt), and both start at 1. Errors wrap
// ErrInvalid. A store may refuse more (redisstore bounds epoch numbers).
func ValidateRun(r settlement.Run) error {
	if r.Epoch.Number == 0 || r.Attempt == 0 {
		return fmt.Errorf("%w: run of epoch %d attempt %d (both start at 1)", ErrInvalid, r.Epoch.Number, r.Attempt)
	}
	return nil
}

// PaidTime is the paid time a ChargeStore stamps on a charge marked paid
// at while open is the stored open epoch: at, or open's From when at is
// before it (see ChargeStore.SetChargeStatus). A charge marked with a
// time before a cut, but written after the cut, belongs to the open
// epoch: the closed epoch's ledger may have read the paid charges
// already.
func PaidTime(at time.Time, open settlement.Epoch) time.Time {
	if from := open.From(); at.Before(from) {
		return from
	}
	return at
}

// ValidateCut refuses a cut no SettlementStore should write: successor
// follows closed, is open, and closed (unless it is 0, "no epoch yet") has
// its End. Whether closed is the stored open epoch is checked by the store,
// atomically (ErrEpochConflict). Errors wrap ErrInvalid.
func ValidateCut(closed, successor settlement.Epoch) error {
	switch {
	case successor.Number != closed.Number+1:
		return fmt.Errorf("%w: epoch %d cannot follow epoch %d", ErrInvalid, successor.Number, closed.Number)
	case !successor.Open():
		return fmt.Errorf("%w: successor epoch %d has an end", ErrInvalid, successor.Number)
	case closed.Number > 0 && closed.Open():
		return fmt.Errorf("%w: cut epoch %d has no end", ErrInvalid, closed.Number)
	}
	return nil
}

// ValidateRollover refuses a rollover no SettlementStore should commit
// (see CommitRollover): the run must be valid, every old channel named
// once and spent by one of the run's transactions, and every next record
// valid, funded, and named (by pending id or funding) once across old and
// next. It returns, for every outpoint the run's transactions spend, the
// txid that spends it: an old channel's CloseTx. Whether the old channels
// are still open and the next ones new is checked by the store,
// atomically. Errors wrap ErrInvalid.
func ValidateRollover(r settlement.Run, old []ChannelRecord, next []ChannelRecord) (map[wire.OutPoint]chainhash.Hash, error) {
	if err := ValidateRun(r); err != nil {
		return nil, err
	}
	spender := make(map[wire.OutPoint]chainhash.Hash)
	for i, raw := range r.Txs {
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("%w: run transaction %d: %v", ErrInvalid, i, err)
		}
		txid := tx.TxHash()
		for _, in := range tx.TxIn {
			spender[in.PreviousOutPoint] = txid
		}
	}
	seen := make(map[wire.OutPoint]bool, len(old)+len(next))
	for _, c := range old {
		op := c.Funding
		if seen[op] {
			return nil, fmt.Errorf("%w: channel %s named twice", ErrInvalid, op)
		}
		if _, ok := spender[op]; !ok {
			return nil, fmt.Errorf("%w: no transaction of the run spends channel %s", ErrInvalid, op)
		}
		seen[op] = true
	}
	pids := make(map[[32]byte]bool, len(next))
	for _, c := range next {
		if err := c.Validate(); err != nil {
			return nil, err
		}
		switch {
		case c.Funding == wire.OutPoint{}:
			return nil, fmt.Errorf("%w: next channel %x has no funding", ErrInvalid, c.PendingID)
		case seen[c.Funding] || pids[c.PendingID]:
			return nil, fmt.Errorf("%w: next channel %x or its funding %s named twice", ErrInvalid, c.PendingID, c.Funding)
		}
		seen[c.Funding], pids[c.PendingID] = true, true
	}
	return spender, nil
}

// ErrEpochConflict is returned when a cut does not close the open epoch
// (another cut happened first).
var ErrEpochConflict = errors.New("hub: epoch already cut")

// ErrRunOpen is returned when a settlement run is still under way: a cut
// while the previous epoch's run has not settled it (settlement.RunState
// Settled), or a run asked for while this hub drives one. One run is open
// at a time, across every hub sharing a store.
var ErrRunOpen = errors.New("hub: a settlement run is under way")

// SettlementStore persists epochs and settlement runs. Every method that
// writes is durable before it returns.
type SettlementStore interface {
	// OpenEpoch returns the open epoch, or ErrNotFound before the first
	// one was stored.
	OpenEpoch(ctx context.Context) (settlement.Epoch, error)

	// CutEpoch atomically stores closed (the open epoch, now with its
	// End) and opens successor. It returns ErrEpochConflict when the
	// stored open epoch is not closed.Number, and ErrRunOpen when the
	// epoch before closed has no run or its latest run has not settled it
	// (its state is not Settled): the check and the cut are one atomic
	// step, so of hubs sharing a store only one run is open at a time.
	// With no epoch stored yet, a closed.Number of 0 stores successor as
	// the first open epoch.
	CutEpoch(ctx context.Context, closed, successor settlement.Epoch) error

	// Epochs returns up to limit epochs, newest first.
	Epochs(ctx context.Context, limit int) ([]settlement.Epoch, error)

	// PutRun stores a run under (Epoch.Number, Attempt), replacing it.
	PutRun(ctx context.Context, r settlement.Run) error

	// Run returns the latest attempt for an epoch, or ErrNotFound.
	Run(ctx context.Context, epoch uint64) (settlement.Run, error)

	// Runs returns up to limit runs (latest attempt per epoch), newest
	// first.
	Runs(ctx context.Context, limit int) ([]settlement.Run, error)

	// CommitRollover atomically stores r and moves the settled channels
	// to their next outputs: each old channel (as the caller read it)
	// becomes ChannelClosed with CloseTx set to the batch txid that spends
	// it, and each record in next is created (new Funding, Seq 0, Paid 0,
	// Owed carried). Nothing is written if any old channel is missing
	// (ErrNotFound), already closed, or no longer at the Seq, Paid and
	// Owed of the record read (ErrSeqConflict): the next records carry
	// what the old ones held, so they must be computed from the stored
	// state, which another writer (another hubd recording a charge) may
	// have moved since the caller read it.
	CommitRollover(ctx context.Context, r settlement.Run, old []ChannelRecord, next []ChannelRecord) error
}
