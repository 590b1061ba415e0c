package contracts

import "errors"

var (
	// ErrInvalid reports a contract document that cannot be decoded or
	// breaks a validation rule; the wrapped message says which field.
	ErrInvalid = errors.New("contracts: invalid contract")

	// ErrTooLarge reports a document over MaxSize bytes.
	ErrTooLarge = errors.New("contracts: document too large")

	// ErrBadUsage reports a usage record that the contract cannot price as
	// given: a missing attribute, a wrong unit, periods out of order.
	ErrBadUsage = errors.New("contracts: bad usage")

	// ErrContractMismatch reports a usage record that names another
	// contract hash than the contract asked to price it.
	ErrContractMismatch = errors.New("contracts: usage names another contract")

	// ErrNoPrice reports usage that the contract has no price for, such as
	// a vehicle class missing from a toll table.
	ErrNoPrice = errors.New("contracts: no price for usage")

	// ErrOverLimit reports usage beyond the last bounded volume tier.
	ErrOverLimit = errors.New("contracts: usage over contract limit")

	// ErrOverflow reports an amount that does not fit in a MilliSatoshi.
	ErrOverflow = errors.New("contracts: amount overflows msat")
)
