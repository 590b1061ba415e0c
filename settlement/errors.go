package settlement

import "errors"

// Sentinel errors returned by this package. Callers test them with errors.Is;
// returned errors wrap them with the details.
var (
	// ErrUnbalanced means a posting's entries do not sum to zero, or it has
	// fewer than two entries.
	ErrUnbalanced = errors.New("settlement: unbalanced posting")

	// ErrBadPosting means a posting is malformed: an unknown kind, an empty
	// or unknown account, or an amount out of range.
	ErrBadPosting = errors.New("settlement: bad posting")

	// ErrOverdrawn means a posting would take a hub escrow account below
	// zero: more released or refunded than was captured.
	ErrOverdrawn = errors.New("settlement: escrow overdrawn")

	// ErrClosed means the ledger's epoch is already closed.
	ErrClosed = errors.New("settlement: epoch closed")

	// ErrBadSettlement means the amounts handed to Close cannot be settled:
	// an unknown participant, or an amount the participant's net does not
	// justify.
	ErrBadSettlement = errors.New("settlement: bad settlement")

	// ErrBadTransition means a run state change the state machine does not
	// allow.
	ErrBadTransition = errors.New("settlement: illegal state transition")

	// ErrBadProof means a Merkle proof does not lead from the leaf to the
	// root, or is malformed.
	ErrBadProof = errors.New("settlement: bad merkle proof")

	// ErrBadAnchor means an OP_RETURN script or payload is not an m2mhub
	// anchor.
	ErrBadAnchor = errors.New("settlement: bad anchor")

	// ErrBadInput means a batch plan's input is unusable: a missing
	// script, a duplicate channel, an invalid fee rate.
	ErrBadInput = errors.New("settlement: bad plan input")

	// ErrRevenueShort means a transaction's inputs cannot pay its outputs
	// and fee: the hub's revenue in it would be negative.
	ErrRevenueShort = errors.New("settlement: revenue does not cover outputs and fee")

	// ErrWrongOutput means the output a participant is asked to sign for is
	// not the one it expects (amount or script), or the transaction shape
	// is not what its signature would commit to.
	ErrWrongOutput = errors.New("settlement: wrong output")
)
