package wire

import (
	"bytes"
	"io"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// Channel protocol message types (docs/protocol.md, "Channels"). All are
// even: a peer that does not know one must not ignore it.
const (
	MsgOpenChannel    = TypeBase + 0x02 // device → hub
	MsgChannelOffer   = TypeBase + 0x04 // hub → device
	MsgChannelFunded  = TypeBase + 0x06 // device → hub
	MsgChannelReady   = TypeBase + 0x08 // hub → device
	MsgPay            = TypeBase + 0x0A // device → hub
	MsgPayAck         = TypeBase + 0x0C // hub → device
	MsgChannelError   = TypeBase + 0x0E // hub → device or provider
	MsgHoldRequest    = TypeBase + 0x10 // provider → hub, hub → device
	MsgHoldAuthorize  = TypeBase + 0x12 // device → hub
	MsgHoldResult     = TypeBase + 0x14 // hub → provider
	MsgCapture        = TypeBase + 0x16 // provider → hub
	MsgPaymentRequest = TypeBase + 0x18 // hub → device
	MsgRelease        = TypeBase + 0x1A // provider → hub
	MsgHoldClosed     = TypeBase + 0x1C // hub → device and provider
	MsgReceiptNotice  = TypeBase + 0x1E // hub → payee provider
	MsgCloseRequest   = TypeBase + 0x20 // device → hub
	MsgCloseProposal  = TypeBase + 0x22 // hub → device
	MsgCloseSign      = TypeBase + 0x24 // device → hub
	MsgChannelClosed  = TypeBase + 0x26 // hub → device
)

// OpenChannel asks the hub to offer a channel of Capacity that the device can
// refund alone from block Expiry on.
type OpenChannel struct {
	// ReqID is chosen by the device; the answer (ChannelOffer or
	// ChannelError) carries it back.
	ReqID    uint64         // record 0
	Capacity btcutil.Amount // record 2
	// Expiry is the absolute block height of the refund path.
	Expiry uint32 // record 4
}

// ChannelOffer answers OpenChannel: the channel output the device must fund
// with exactly Capacity.
type ChannelOffer struct {
	ReqID uint64 // record 0
	// PendingID names the channel until it has an outpoint and tweaks the
	// hub's channel key.
	PendingID [32]byte // record 2
	// HubChanKey is the hub identity key tweaked by
	// channel.ChannelKeyTweak(deviceKey, PendingID); the device checks it
	// against its pinned hub key before funding. Decoding rejects a point
	// not on the curve.
	HubChanKey *btcec.PublicKey // record 4
	Capacity   btcutil.Amount   // record 6
	Expiry     uint32           // record 8
	// MinDepth is the number of confirmations the hub waits for.
	MinDepth uint32 // record 10
	// PkScript is the taproot output to fund (1..MaxPkScriptSize bytes).
	PkScript []byte // record 12
}

// ChannelFunded tells the hub which output funds an offered channel.
type ChannelFunded struct {
	PendingID [32]byte      // record 0
	Outpoint  wire.OutPoint // record 2
}

// ChannelReady tells the device its channel is confirmed and takes payments.
// Outpoint is the channel id from now on.
type ChannelReady struct {
	PendingID [32]byte       // record 0
	Outpoint  wire.OutPoint  // record 2
	Capacity  btcutil.Amount // record 4
	Expiry    uint32         // record 6
}

// Pay is one signed channel update: the device now owes Paid in total, of
// which Amount goes to Payee with this payment.
type Pay struct {
	ChanID wire.OutPoint // record 0
	Seq    uint64        // record 2
	// Paid is cumulative over the channel's life.
	Paid msat.Amount // record 4
	// Amount must equal Paid minus the previous Paid; it is redundant on
	// purpose so a mismatch is caught.
	Amount msat.Amount // record 6
	Payee  string      // record 8, a provider id
	// Sig is the device's claim signature for State{ChanID, Seq, Paid}.
	Sig [64]byte // record 10
	// Memo is optional ("" = absent).
	Memo string // record 1
	// HoldID, when set, captures the payment against that hold.
	HoldID *[16]byte // record 3
	// ReqID, when set, answers the PaymentRequest with that id.
	ReqID *uint64 // record 5
}

// PayAck acknowledges a durable payment with the hub-signed receipt.
type PayAck struct {
	ChanID wire.OutPoint // record 0
	Seq    uint64        // record 2
	// Receipt is a channel.Receipt binary encoding
	// (1..MaxReceiptSize bytes); the receiver unmarshals and verifies it.
	Receipt []byte // record 4
}

// ChanCode is the machine-readable reason in a ChannelError (and in
// HoldResult). Receivers must treat a code they do not know like
// ChanInternal: the set may grow, so decoding accepts any code of
// 1..MaxIDSize bytes.
type ChanCode string

// ChannelError codes, exactly as they travel.
const (
	ChanUnknownChannel  ChanCode = "unknown-channel"
	ChanNotReady        ChanCode = "not-ready"
	ChanFrozen          ChanCode = "frozen"
	ChanClosed          ChanCode = "closed"
	ChanStaleState      ChanCode = "stale-state"
	ChanSeqGap          ChanCode = "seq-gap"
	ChanBadAmount       ChanCode = "bad-amount"
	ChanOverCapacity    ChanCode = "over-capacity"
	ChanBadSignature    ChanCode = "bad-signature"
	ChanUnknownPayee    ChanCode = "unknown-payee"
	ChanNotOwner        ChanCode = "not-owner"
	ChanHoldExceeded    ChanCode = "hold-exceeded"
	ChanHoldExpired     ChanCode = "hold-expired"
	ChanHoldUnknown     ChanCode = "hold-unknown"
	ChanCreditLimit     ChanCode = "credit-limit"
	ChanRateLimited     ChanCode = "rate-limited"
	ChanTooManyPending  ChanCode = "too-many-pending"
	ChanBadParams       ChanCode = "bad-params"
	ChanFundingMismatch ChanCode = "funding-mismatch"
	ChanPolicyRefused   ChanCode = "policy-refused"
	ChanBusy            ChanCode = "busy"
	ChanInternal        ChanCode = "internal"
	// Each code below took one meaning away from "busy" or "bad-params",
	// which used to cover them too.
	ChanHoldActive   ChanCode = "hold-active"   // close refused: the channel has active holds
	ChanCreditOwed   ChanCode = "credit-owed"   // close refused: service on credit is not paid yet
	ChanClosing      ChanCode = "closing"       // a cooperative close of the channel is being negotiated
	ChanPayerOffline ChanCode = "payer-offline" // a hold request found the payer without a session
	ChanHoldIDInUse  ChanCode = "hold-id-in-use"
	ChanMalformed    ChanCode = "malformed"     // a channel message that does not decode, or is not for the hub
	ChanCloseUnknown ChanCode = "close-unknown" // CloseSign without a CloseProposal still waiting for it
	// ChanRequestUnknown refuses a payment naming a charge request the hub
	// is not waiting for (ended with its session, or given up on): it
	// would pay charges the hub asks for again.
	ChanRequestUnknown ChanCode = "request-unknown"
)

// ChanCodes lists every code of protocol version 1, in the order of
// docs/protocol.md.
func ChanCodes() []ChanCode {
	return []ChanCode{
		ChanUnknownChannel, ChanNotReady, ChanFrozen, ChanClosed,
		ChanStaleState, ChanSeqGap, ChanBadAmount, ChanOverCapacity,
		ChanBadSignature, ChanUnknownPayee, ChanNotOwner, ChanHoldExceeded,
		ChanHoldExpired, ChanHoldUnknown, ChanCreditLimit, ChanRateLimited,
		ChanTooManyPending, ChanBadParams, ChanFundingMismatch,
		ChanPolicyRefused, ChanBusy, ChanInternal, ChanSettleRefused,
		ChanHoldActive, ChanCreditOwed, ChanClosing, ChanPayerOffline,
		ChanHoldIDInUse, ChanMalformed, ChanCloseUnknown, ChanRequestUnknown,
	}
}

// Retryable reports whether a request refused with c may succeed when sent
// again unchanged after a pause: the refusal is about the hub's load or a
// passing condition of the channel, not about the request. Every other code
// needs the sender to change something (or to stop), and retrying it
// unchanged only repeats the refusal.
func (c ChanCode) Retryable() bool {
	switch c {
	case ChanBusy, ChanRateLimited, ChanInternal, ChanClosing, ChanPayerOffline,
		ChanNotReady, ChanTooManyPending:
		return true
	}
	return false
}

// ChannelError refuses a request without closing the session. The optional
// fields name what was refused so the receiver can match it to its request.
type ChannelError struct {
	Code ChanCode // record 0, 1..MaxIDSize bytes
	// Message is for humans, 0..MaxErrorMessageSize bytes.
	Message   string         // record 2
	ChanID    *wire.OutPoint // record 1
	Seq       *uint64        // record 3
	ReqID     *uint64        // record 5
	HoldID    *[16]byte      // record 7
	PendingID *[32]byte      // record 9
}

// Error returns "code: message", so a ChannelError can be returned as an
// error by client code.
func (e *ChannelError) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Every message implements Message through the shared TLV codec.
var (
	_ Message = (*OpenChannel)(nil)
	_ Message = (*ChannelOffer)(nil)
	_ Message = (*ChannelFunded)(nil)
	_ Message = (*ChannelReady)(nil)
	_ Message = (*Pay)(nil)
	_ Message = (*PayAck)(nil)
	_ Message = (*ChannelError)(nil)
)

// MsgType returns MsgOpenChannel.
func (*OpenChannel) MsgType() MessageType { return MsgOpenChannel }

// Encode writes the TLV payload of m.
func (m *OpenChannel) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *OpenChannel) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *OpenChannel) fields() []field {
	return []field{
		u64Field(0, &m.ReqID),
		satField(2, &m.Capacity),
		u32Field(4, &m.Expiry),
	}
}

// MsgType returns MsgChannelOffer.
func (*ChannelOffer) MsgType() MessageType { return MsgChannelOffer }

// Encode writes the TLV payload of m.
func (m *ChannelOffer) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelOffer) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelOffer) fields() []field {
	return []field{
		u64Field(0, &m.ReqID),
		arrayField(2, m.PendingID[:]),
		pubKeyField(4, &m.HubChanKey),
		satField(6, &m.Capacity),
		u32Field(8, &m.Expiry),
		u32Field(10, &m.MinDepth),
		bytesField(12, &m.PkScript, MaxPkScriptSize),
	}
}

// MsgType returns MsgChannelFunded.
func (*ChannelFunded) MsgType() MessageType { return MsgChannelFunded }

// Encode writes the TLV payload of m.
func (m *ChannelFunded) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelFunded) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelFunded) fields() []field {
	return []field{
		arrayField(0, m.PendingID[:]),
		outPointField(2, &m.Outpoint),
	}
}

// MsgType returns MsgChannelReady.
func (*ChannelReady) MsgType() MessageType { return MsgChannelReady }

// Encode writes the TLV payload of m.
func (m *ChannelReady) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelReady) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelReady) fields() []field {
	return []field{
		arrayField(0, m.PendingID[:]),
		outPointField(2, &m.Outpoint),
		satField(4, &m.Capacity),
		u32Field(6, &m.Expiry),
	}
}

// MsgType returns MsgPay.
func (*Pay) MsgType() MessageType { return MsgPay }

// Encode writes the TLV payload of m.
func (m *Pay) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *Pay) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *Pay) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		memoField(1, &m.Memo),
		u64Field(2, &m.Seq),
		optHoldIDField(3, &m.HoldID),
		msatField(4, &m.Paid),
		optU64Field(5, &m.ReqID),
		msatField(6, &m.Amount),
		idField(8, &m.Payee),
		arrayField(10, m.Sig[:]),
	}
}

// MsgType returns MsgPayAck.
func (*PayAck) MsgType() MessageType { return MsgPayAck }

// Encode writes the TLV payload of m.
func (m *PayAck) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *PayAck) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *PayAck) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		u64Field(2, &m.Seq),
		bytesField(4, &m.Receipt, MaxReceiptSize),
	}
}

// MsgType returns MsgChannelError.
func (*ChannelError) MsgType() MessageType { return MsgChannelError }

// Encode writes the TLV payload of m.
func (m *ChannelError) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelError) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelError) fields() []field {
	return []field{
		stringField(0, &m.Code, 1, MaxIDSize),
		optOutPointField(1, &m.ChanID),
		stringField(2, &m.Message, 0, MaxErrorMessageSize),
		optU64Field(3, &m.Seq),
		optU64Field(5, &m.ReqID),
		optHoldIDField(7, &m.HoldID),
		optPendingIDField(9, &m.PendingID),
	}
}
