package channel

import "errors"

// Sentinel errors returned by this package. Callers test them with errors.Is;
// the returned errors wrap them with the details.
var (
	// ErrInvalidParams means channel parameters are unusable: a missing key,
	// a capacity at or below the reserve, or an expiry that is not a block
	// height.
	ErrInvalidParams = errors.New("channel: invalid params")

	// ErrWrongChannel means a state names a different channel (funding
	// outpoint) than the one it is applied to.
	ErrWrongChannel = errors.New("channel: wrong channel")

	// ErrStaleState means a state's sequence number is not above the
	// current one: a replayed, reordered or old update.
	ErrStaleState = errors.New("channel: stale state")

	// ErrSeqGap means a state skips sequence numbers; updates must arrive
	// one after the other.
	ErrSeqGap = errors.New("channel: sequence gap")

	// ErrPaidDecreased means a state pays less than the current one; paid
	// is cumulative and never goes down.
	ErrPaidDecreased = errors.New("channel: paid decreased")

	// ErrOverCapacity means a state pays more than the channel can: paid
	// must leave the reserve in the next channel output.
	ErrOverCapacity = errors.New("channel: over capacity")

	// ErrBadSignature means a signature does not verify for the state,
	// transaction or key it is checked against.
	ErrBadSignature = errors.New("channel: bad signature")

	// ErrBadEncoding means a binary encoding has the wrong length or
	// content.
	ErrBadEncoding = errors.New("channel: bad encoding")

	// ErrMisaligned means a claim cannot be placed in a transaction because
	// its input and output would not share an index, or the transaction's
	// version or lock time differ from what claim signatures commit to.
	ErrMisaligned = errors.New("channel: misaligned claim")

	// ErrNotParticipant means a key is neither the channel's device key nor
	// its hub key.
	ErrNotParticipant = errors.New("channel: not a participant")

	// ErrSessionState means a MuSig2 session method was called out of
	// order or twice (a second signature would reuse a nonce).
	ErrSessionState = errors.New("channel: musig2 session misuse")
)
