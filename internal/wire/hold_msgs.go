package wire

import (
	"bytes"
	"io"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// HoldRequest asks for a pre-authorisation of up to Max until Expires. A
// provider sends it to the hub; the hub forwards it to the payer device with
// Provider set.
type HoldRequest struct {
	// HoldID is chosen at random by the provider.
	HoldID [16]byte // record 0
	// Payer is the device id to charge.
	Payer string      // record 2
	Max   msat.Amount // record 4
	// Expires is in unix seconds.
	Expires uint64 // record 6
	Memo    string // record 1, optional ("" = absent)
	// Provider is set by the hub when forwarding ("" = absent); the hub
	// ignores it from providers and uses the session's id.
	Provider string // record 3
}

// HoldAuthorize is the device's signed consent to a hold.
type HoldAuthorize struct {
	HoldID   [16]byte      // record 0
	ChanID   wire.OutPoint // record 2
	Provider string        // record 4
	Max      msat.Amount   // record 6
	Expires  uint64        // record 8, unix seconds
	// Sig is the device key's BIP-340 signature over
	// channel.HoldDigest(HoldID, ChanID, Provider, Max, Expires).
	Sig [64]byte // record 10
}

// HoldResultStatus is the outcome a HoldResult reports.
type HoldResultStatus string

// Hold outcomes; decoding rejects any other value.
const (
	HoldAuthorized HoldResultStatus = "authorized"
	HoldRefused    HoldResultStatus = "refused"
)

// HoldResult tells the provider whether the device authorised its hold.
type HoldResult struct {
	HoldID [16]byte         // record 0
	Status HoldResultStatus // record 2
	// Code and Message say why a hold was refused ("" = absent).
	Code    ChanCode // record 1
	Message string   // record 3
}

// Capture charges Amount against an active hold.
type Capture struct {
	HoldID [16]byte    // record 0
	Amount msat.Amount // record 2
	Memo   string      // record 1, optional ("" = absent)
}

// PaymentRequest asks the device to pay Amount to Payee, usually for a
// capture; the device answers with a Pay carrying ReqID.
type PaymentRequest struct {
	ReqID  uint64        // record 0
	ChanID wire.OutPoint // record 2
	Payee  string        // record 4
	Amount msat.Amount   // record 6
	HoldID *[16]byte     // record 1, optional
	Memo   string        // record 3, optional ("" = absent)
}

// Release ends a hold; what was not captured is free again.
type Release struct {
	HoldID [16]byte // record 0
}

// HoldCloseReason says why a hold ended.
type HoldCloseReason string

// Reasons a hold closes; decoding rejects any other value.
const (
	HoldReleased      HoldCloseReason = "released"
	HoldExpired       HoldCloseReason = "expired"
	HoldChannelClosed HoldCloseReason = "channel-closed"
)

// HoldClosed tells device and provider that a hold ended and how much it
// captured.
type HoldClosed struct {
	HoldID   [16]byte        // record 0
	Captured msat.Amount     // record 2
	Reason   HoldCloseReason // record 4
}

// ReceiptNotice hands the payee provider the receipt of a payment to it.
type ReceiptNotice struct {
	// Receipt is a channel.Receipt binary encoding
	// (1..MaxReceiptSize bytes).
	Receipt []byte // record 0
}

var (
	_ Message = (*HoldRequest)(nil)
	_ Message = (*HoldAuthorize)(nil)
	_ Message = (*HoldResult)(nil)
	_ Message = (*Capture)(nil)
	_ Message = (*PaymentRequest)(nil)
	_ Message = (*Release)(nil)
	_ Message = (*HoldClosed)(nil)
	_ Message = (*ReceiptNotice)(nil)
)

// MsgType returns MsgHoldRequest.
func (*HoldRequest) MsgType() MessageType { return MsgHoldRequest }

// Encode writes the TLV payload of m.
func (m *HoldRequest) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *HoldRequest) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *HoldRequest) fields() []field {
	return []field{
		arrayField(0, m.HoldID[:]),
		memoField(1, &m.Memo),
		idField(2, &m.Payer),
		optStringField(3, &m.Provider, MaxIDSize),
		msatField(4, &m.Max),
		u64Field(6, &m.Expires),
	}
}

// MsgType returns MsgHoldAuthorize.
func (*HoldAuthorize) MsgType() MessageType { return MsgHoldAuthorize }

// Encode writes the TLV payload of m.
func (m *HoldAuthorize) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *HoldAuthorize) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *HoldAuthorize) fields() []field {
	return []field{
		arrayField(0, m.HoldID[:]),
		outPointField(2, &m.ChanID),
		idField(4, &m.Provider),
		msatField(6, &m.Max),
		u64Field(8, &m.Expires),
		arrayField(10, m.Sig[:]),
	}
}

// MsgType returns MsgHoldResult.
func (*HoldResult) MsgType() MessageType { return MsgHoldResult }

// Encode writes the TLV payload of m.
func (m *HoldResult) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *HoldResult) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *HoldResult) fields() []field {
	return []field{
		arrayField(0, m.HoldID[:]),
		optStringField(1, &m.Code, MaxIDSize),
		enumField(2, &m.Status, HoldAuthorized, HoldRefused),
		optStringField(3, &m.Message, MaxErrorMessageSize),
	}
}

// MsgType returns MsgCapture.
func (*Capture) MsgType() MessageType { return MsgCapture }

// Encode writes the TLV payload of m.
func (m *Capture) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *Capture) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *Capture) fields() []field {
	return []field{
		arrayField(0, m.HoldID[:]),
		memoField(1, &m.Memo),
		msatField(2, &m.Amount),
	}
}

// MsgType returns MsgPaymentRequest.
func (*PaymentRequest) MsgType() MessageType { return MsgPaymentRequest }

// Encode writes the TLV payload of m.
func (m *PaymentRequest) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *PaymentRequest) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *PaymentRequest) fields() []field {
	return []field{
		u64Field(0, &m.ReqID),
		optHoldIDField(1, &m.HoldID),
		outPointField(2, &m.ChanID),
		memoField(3, &m.Memo),
		idField(4, &m.Payee),
		msatField(6, &m.Amount),
	}
}

// MsgType returns MsgRelease.
func (*Release) MsgType() MessageType { return MsgRelease }

// Encode writes the TLV payload of m.
func (m *Release) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *Release) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *Release) fields() []field {
	return []field{arrayField(0, m.HoldID[:])}
}

// MsgType returns MsgHoldClosed.
func (*HoldClosed) MsgType() MessageType { return MsgHoldClosed }

// Encode writes the TLV payload of m.
func (m *HoldClosed) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *HoldClosed) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *HoldClosed) fields() []field {
	return []field{
		arrayField(0, m.HoldID[:]),
		msatField(2, &m.Captured),
		enumField(4, &m.Reason, HoldReleased, HoldExpired, HoldChannelClosed),
	}
}

// MsgType returns MsgReceiptNotice.
func (*ReceiptNotice) MsgType() MessageType { return MsgReceiptNotice }

// Encode writes the TLV payload of m.
func (m *ReceiptNotice) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ReceiptNotice) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ReceiptNotice) fields() []field {
	return []field{bytesField(0, &m.Receipt, MaxReceiptSize)}
}
