package hub

import (
	"context"
	"errors"
	"fmt"

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
	// to their next outputs: each channel funded by an outpoint in old
	// becomes ChannelClosed with CloseTx set to the batch txid that spends
	// it, and each record in next is created (new Funding, Seq 0, Paid 0,
	// Owed carried). Nothing is written if any old channel is missing
	// (ErrNotFound) or already closed (ErrChannelState-like conflict:
	// ErrSeqConflict).
	CommitRollover(ctx context.Context, r settlement.Run, old []wire.OutPoint, next []ChannelRecord) error
}
