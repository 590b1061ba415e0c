package settlement

import (
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil"
)

// Epoch is one settlement period. An open epoch has a zero End; payments
// time-stamped in [Start, End) belong to it. Heights are the chain tip seen
// at the cut.
type Epoch struct {
	Number      uint64    `json:"number"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end,omitzero"`
	StartHeight uint32    `json:"start_height"`
	EndHeight   uint32    `json:"end_height,omitempty"`
}

// FirstEpoch opens epoch 1 at now and height. now is when the hub opened
// it (its first start with settlement); epoch 1 also holds every payment
// timed before it (see Contains), so a hub that ran before settlement was
// switched on settles its history too.
func FirstEpoch(now time.Time, height uint32) Epoch {
	return Epoch{Number: 1, Start: now, StartHeight: height}
}

// Open reports whether e has not been cut yet.
func (e Epoch) Open() bool { return e.End.IsZero() }

// Contains reports whether a payment at t belongs to e. The end is
// exclusive, so a payment at the very instant of a cut goes to the next
// epoch, and every instant belongs to exactly one epoch: epoch 1 has no
// lower bound (payments made before it was opened are its own).
func (e Epoch) Contains(t time.Time) bool {
	return !t.Before(e.From()) && (e.Open() || t.Before(e.End))
}

// From is the earliest payment time e holds: Start, or for epoch 1, which
// also holds what was paid before it was opened, the Unix epoch (receipt
// and charge times start there; stores index them from there).
func (e Epoch) From() time.Time {
	if e.Number == 1 && e.Start.After(time.Unix(0, 0)) {
		return time.Unix(0, 0).UTC()
	}
	return e.Start
}

// Cut closes e at now and height and opens its successor starting at the
// same instant and height: there is no gap in which a payment has no epoch,
// so payments never pause for a cut. It returns an error wrapping
// ErrBadTransition when e is already cut, or when now or height go
// backwards.
func (e Epoch) Cut(now time.Time, height uint32) (closed, successor Epoch, err error) {
	switch {
	case !e.Open():
		return Epoch{}, Epoch{}, fmt.Errorf("%w: epoch %d already cut", ErrBadTransition, e.Number)
	case now.Before(e.Start) || height < e.StartHeight:
		return Epoch{}, Epoch{}, fmt.Errorf("%w: cut of epoch %d before its start", ErrBadTransition, e.Number)
	}
	closed = e
	closed.End, closed.EndHeight = now, height
	successor = Epoch{Number: e.Number + 1, Start: now, StartHeight: height}
	return closed, successor, nil
}

// CutRule is the operator's settlement period: an epoch is due for a cut
// once Period has passed since its start or Blocks blocks have been mined
// since, whichever comes first. A zero field is not used; with both zero
// epochs are cut only on demand.
type CutRule struct {
	Period time.Duration `json:"period"`
	Blocks uint32        `json:"blocks"`
}

// Due reports whether the open epoch e should be cut at now and height.
func (r CutRule) Due(e Epoch, now time.Time, height uint32) bool {
	if !e.Open() {
		return false
	}
	if r.Period > 0 && !now.Before(e.Start.Add(r.Period)) {
		return true
	}
	return r.Blocks > 0 && height >= e.StartHeight+r.Blocks
}

// NextCut returns when the time part of the rule makes e due, for a timer on
// an injected clock, and false when the rule has no period.
func (r CutRule) NextCut(e Epoch) (time.Time, bool) {
	if r.Period <= 0 {
		return time.Time{}, false
	}
	return e.Start.Add(r.Period), true
}

// RunState is where a settlement run is. A run moves
//
//	planned → signing → signed → broadcast → confirmed
//
// and may fall back: signing → planned when the cooperative round has to be
// redone (a participant dropped out; the next attempt draws fresh nonces),
// confirmed → broadcast when a reorg unconfirms the batch. failed and
// replaced are final: failed before anything was broadcast, replaced when a
// conflicting spend (a device's refund, say) confirmed instead; the epoch's
// nets are then settled by a new run. planned → empty is the end of a run
// whose plan has no transaction (nothing to move on chain): it is never
// broadcast, has no txid, and its closing carries every balance forward.
type RunState string

// Run states.
const (
	RunPlanned   RunState = "planned"
	RunSigning   RunState = "signing"
	RunSigned    RunState = "signed"
	RunBroadcast RunState = "broadcast"
	RunConfirmed RunState = "confirmed"
	RunFailed    RunState = "failed"
	RunReplaced  RunState = "replaced"
	RunEmpty     RunState = "empty"
)

// next is the state machine: the states each state may move to. A switch
// rather than a package-level map keeps the table immutable.
func next(from RunState) []RunState {
	switch from {
	case RunPlanned:
		return []RunState{RunSigning, RunEmpty, RunFailed}
	case RunSigning:
		return []RunState{RunSigned, RunPlanned, RunFailed}
	case RunSigned:
		return []RunState{RunBroadcast, RunFailed}
	case RunBroadcast:
		return []RunState{RunConfirmed, RunReplaced}
	case RunConfirmed:
		return []RunState{RunBroadcast}
	}
	return nil
}

// CanTransition reports whether a run may move from one state to another.
func CanTransition(from, to RunState) bool {
	for _, s := range next(from) {
		if s == to {
			return true
		}
	}
	return false
}

// Final reports whether s is a state a run never leaves without having
// settled its epoch (failed or replaced: a new attempt follows). A
// confirmed run is not final: a reorg can unconfirm it. An empty run never
// moves again either, but it settled its epoch (see Settled).
func (s RunState) Final() bool {
	return s == RunFailed || s == RunReplaced
}

// Settled reports whether a run in state s has settled its epoch as far as
// the next epoch is concerned: its batch is broadcast (or confirmed), or it
// had nothing to broadcast (empty). Only then may the next epoch be cut:
// until then a run is open, and one run is open at a time.
func (s RunState) Settled() bool {
	for _, x := range SettledStates() {
		if s == x {
			return true
		}
	}
	return false
}

// SettledStates lists the states Settled accepts, for a store that checks
// them in its own language (the Redis cut script).
func SettledStates() []RunState {
	return []RunState{RunBroadcast, RunConfirmed, RunEmpty}
}

// Run is the durable record of one settlement run: everything the hub needs
// to resume after a crash at any step. The hub persists it after every
// transition; the raw transactions are written before the state that
// broadcasts them, so a restarted hub rebroadcasts the same txids instead of
// building new ones (an epoch settles once).
type Run struct {
	Epoch Epoch `json:"epoch"`

	// Attempt counts runs of this epoch, from 1; a run replaced on chain
	// is followed by one with Attempt+1.
	Attempt uint32   `json:"attempt"`
	State   RunState `json:"state"`

	// Txs are the batch transactions, serialized (with witnesses once
	// signed), in broadcast order.
	Txs [][]byte `json:"txs"`

	// Anchor is what every transaction of the batch commits to.
	Anchor Anchor `json:"anchor"`

	// Closing has the epoch's nets, the on-chain settlement per
	// participant and the balances carried into the next epoch.
	Closing *Closing `json:"closing,omitempty"`

	// Fee is the total mining fee of Txs.
	Fee btcutil.Amount `json:"fee_sat"`

	// ConfirmHeight is the height of the block that confirmed the last
	// transaction, while State is confirmed.
	ConfirmHeight uint32 `json:"confirm_height,omitempty"`

	// Error says why a run failed or was replaced.
	Error string `json:"error,omitempty"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`

	// Entered records when the run last entered each state.
	Entered map[RunState]time.Time `json:"entered"`
}

// NewRun starts a run of epoch in state planned.
func NewRun(epoch Epoch, attempt uint32, now time.Time) *Run {
	return &Run{
		Epoch:   epoch,
		Attempt: attempt,
		State:   RunPlanned,
		Created: now,
		Updated: now,
		Entered: map[RunState]time.Time{RunPlanned: now},
	}
}

// Transition moves r to state to at now. It returns an error wrapping
// ErrBadTransition, changing nothing, when the state machine does not allow
// the move.
func (r *Run) Transition(to RunState, now time.Time) error {
	if !CanTransition(r.State, to) {
		return fmt.Errorf("%w: %s → %s", ErrBadTransition, r.State, to)
	}
	r.State = to
	r.Updated = now
	if r.Entered == nil {
		r.Entered = make(map[RunState]time.Time)
	}
	r.Entered[to] = now
	return nil
}
