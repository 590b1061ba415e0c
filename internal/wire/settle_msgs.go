package wire

import (
	"bytes"
	"io"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// Settlement message types (docs/protocol.md, "Settlement"): the
// cooperative round of a settlement epoch. They continue the channel
// message numbers and are even for the same reason.
const (
	MsgSettleProposal = TypeBase + 0x28 // hub → device
	MsgSettleSign     = TypeBase + 0x2A // device → hub
	MsgSettleDone     = TypeBase + 0x2C // hub → device
)

// ChanSettleRefused is the ChannelError code a device answers a
// SettleProposal with when it will not sign it (wrong amounts, script,
// expiry or input, or its owner vetoed it). The ChannelError names the
// channel in ChanID.
const ChanSettleRefused ChanCode = "settle-refused"

// MaxSettleTemplateSize bounds the template transaction of a
// SettleProposal. A one-input, one-P2TR-output transaction serializes to
// 94 bytes; the bound leaves room without letting a peer make the device
// parse much.
const MaxSettleTemplateSize = 1024

// SettleProposal asks the device to co-sign its channel's pair of the
// epoch's settlement batch: the key-path spend of its current channel
// output (ChanID) into its next channel output.
type SettleProposal struct {
	Epoch uint64 // record 0
	// ChanID is the channel's current funding outpoint, the template's
	// only input.
	ChanID wire.OutPoint // record 2
	// Template is the serialized one-input, one-output transaction
	// (settlement.CoopTemplate) whose SIGHASH_SINGLE|ANYONECANPAY key-path
	// digest at input 0 equals the batch's at the channel's index
	// (1..MaxSettleTemplateSize bytes).
	Template []byte // record 4
	// NextCapacity and NextExpiry are the terms of the next channel, the
	// template's only output.
	NextCapacity btcutil.Amount // record 6
	NextExpiry   uint32         // record 8
	// Spent is what the device paid in the epoch as a payer, Earned what
	// it earned as a provider after fees; the device checks both against
	// its own records.
	Spent  msat.Amount // record 10
	Earned msat.Amount // record 12
	// HubNonce is the hub's fresh MuSig2 public nonce for this proposal.
	HubNonce [NonceSize]byte // record 14
}

// SettleSign is the device's MuSig2 nonce and partial signature for a
// SettleProposal.
type SettleSign struct {
	Epoch       uint64          // record 0
	ChanID      wire.OutPoint   // record 2
	DeviceNonce [NonceSize]byte // record 4
	PartialSig  [32]byte        // record 6
}

// SettleDone tells the device its channel moved: the settlement
// transaction Txid is broadcast and NextOutpoint is the channel id from
// now on, with NextCapacity and NextExpiry, sequence 0 and nothing paid.
type SettleDone struct {
	Epoch uint64 // record 0
	// ChanID is the old channel id, the outpoint the batch spent.
	ChanID       wire.OutPoint  // record 2
	NextOutpoint wire.OutPoint  // record 4
	NextCapacity btcutil.Amount // record 6
	NextExpiry   uint32         // record 8
	// Txid is in internal byte order, like wire.OutPoint.Hash.
	Txid chainhash.Hash // record 10
}

var (
	_ Message = (*SettleProposal)(nil)
	_ Message = (*SettleSign)(nil)
	_ Message = (*SettleDone)(nil)
)

// MsgType returns MsgSettleProposal.
func (*SettleProposal) MsgType() MessageType { return MsgSettleProposal }

// Encode writes the TLV payload of m.
func (m *SettleProposal) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *SettleProposal) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *SettleProposal) fields() []field {
	return []field{
		u64Field(0, &m.Epoch),
		outPointField(2, &m.ChanID),
		bytesField(4, &m.Template, MaxSettleTemplateSize),
		satField(6, &m.NextCapacity),
		u32Field(8, &m.NextExpiry),
		msatField(10, &m.Spent),
		msatField(12, &m.Earned),
		arrayField(14, m.HubNonce[:]),
	}
}

// MsgType returns MsgSettleSign.
func (*SettleSign) MsgType() MessageType { return MsgSettleSign }

// Encode writes the TLV payload of m.
func (m *SettleSign) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *SettleSign) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *SettleSign) fields() []field {
	return []field{
		u64Field(0, &m.Epoch),
		outPointField(2, &m.ChanID),
		arrayField(4, m.DeviceNonce[:]),
		arrayField(6, m.PartialSig[:]),
	}
}

// MsgType returns MsgSettleDone.
func (*SettleDone) MsgType() MessageType { return MsgSettleDone }

// Encode writes the TLV payload of m.
func (m *SettleDone) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *SettleDone) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *SettleDone) fields() []field {
	return []field{
		u64Field(0, &m.Epoch),
		outPointField(2, &m.ChanID),
		outPointField(4, &m.NextOutpoint),
		satField(6, &m.NextCapacity),
		u32Field(8, &m.NextExpiry),
		arrayField(10, m.Txid[:]),
	}
}
