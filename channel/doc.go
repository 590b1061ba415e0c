// Package channel defines the on-chain shape of an m2mhub payment channel and
// the rules for moving it forward, with no I/O of its own.
//
// A channel is one taproot output funded by a device. Its key path is the
// MuSig2 aggregate of the device and hub keys (cooperative settlement). Its
// script tree has two leaves: claim (hub and device signatures, so the hub can
// take what it was paid) and refund (the device alone after an absolute
// expiry height, so the device never depends on the hub being alive).
//
// A payment is a cumulative State (channel, seq, paid). The device backs each
// state with a Schnorr signature over the claim leaf, made with
// SIGHASH_SINGLE|SIGHASH_ANYONECANPAY: it commits only to its own input and
// to the output at the same index, the device's next channel output worth
// capacity − floor(paid / 1000) satoshis. Such signatures compose, so the hub
// can put hundreds of claims into one transaction. docs/channel.md specifies
// the scripts, what every signature commits to and the measured weights.
package channel
