// Package settlement is the pure settlement domain: the double-entry ledger
// that nets every participant per epoch, the epoch cut rule and the durable
// run state machine, the batch builder that turns nets into transactions,
// and the Merkle tree and OP_RETURN anchor that commit an epoch's receipts
// and the audit-log head on chain.
//
// It imports no store, bus or RPC client; the chain adapter lives in
// settlement/btcdchain and the hub wires the two together. docs/settlement.md
// specifies the formats byte for byte.
package settlement
