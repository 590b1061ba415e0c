// Package msat is the hub's money: an amount in millisatoshis. It runs from
// a tariff's price through a charge, a payment and a receipt to a settlement
// output, and links nothing but btcutil, so the domain packages stay free of
// lnd (whose lnwire, through its keychain, links btcwallet and btcd's RPC
// client). internal/wire encodes amounts itself, as lnwire would.
package msat

import (
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
)

// scale is the number of millisatoshis in a satoshi.
const scale = 1000

// Amount is an amount of millisatoshis, a thousandth of a satoshi. On chain
// it is rounded down to whole satoshis (ToSatoshis). Its values and String
// match lnd's lnwire.MilliSatoshi, so logs, documents and wire encodings do
// not change with the type.
type Amount uint64

// FromSatoshis returns the amount of sat satoshis.
func FromSatoshis(sat btcutil.Amount) Amount {
	return Amount(uint64(sat) * scale)
}

// ToSatoshis returns a rounded down to whole satoshis.
func (a Amount) ToSatoshis() btcutil.Amount {
	return btcutil.Amount(uint64(a) / scale)
}

// String returns a as "<n> mSAT".
func (a Amount) String() string {
	return fmt.Sprintf("%d mSAT", uint64(a))
}
