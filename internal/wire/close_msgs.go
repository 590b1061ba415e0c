package wire

import (
	"bytes"
	"io"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// CloseRequest starts a cooperative close: the device names where its share
// goes and sends its MuSig2 nonce for the key-path signature.
type CloseRequest struct {
	ChanID wire.OutPoint // record 0
	// PkScript receives the device's share (1..MaxPkScriptSize bytes).
	PkScript []byte // record 2
	// DeviceNonce is a fresh MuSig2 public nonce, never reused.
	DeviceNonce [NonceSize]byte // record 4
}

// CloseProposal carries the hub's unsigned close transaction and its nonce.
// The hub signs last (docs/protocol.md §2.7): its partial signature is
// made only once the device's CloseSign arrives, and leaves the hub only
// inside the broadcast transaction, so a device never holds a close it
// could broadcast after paying on.
type CloseProposal struct {
	ChanID wire.OutPoint // record 0
	// Tx is the serialized unsigned close transaction
	// (1..MaxCloseTxSize bytes); the device checks its output before
	// signing.
	Tx       []byte          // record 2
	HubNonce [NonceSize]byte // record 4
}

// CloseSign carries the device's MuSig2 partial signature for the proposed
// close transaction.
type CloseSign struct {
	ChanID           wire.OutPoint // record 0
	DevicePartialSig [32]byte      // record 2
}

// ChannelClosed tells the device the close transaction is broadcast.
type ChannelClosed struct {
	ChanID wire.OutPoint // record 0
	// Txid is in internal byte order, like wire.OutPoint.Hash.
	Txid chainhash.Hash // record 2
}

var (
	_ Message = (*CloseRequest)(nil)
	_ Message = (*CloseProposal)(nil)
	_ Message = (*CloseSign)(nil)
	_ Message = (*ChannelClosed)(nil)
)

// MsgType returns MsgCloseRequest.
func (*CloseRequest) MsgType() MessageType { return MsgCloseRequest }

// Encode writes the TLV payload of m.
func (m *CloseRequest) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *CloseRequest) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *CloseRequest) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		bytesField(2, &m.PkScript, MaxPkScriptSize),
		arrayField(4, m.DeviceNonce[:]),
	}
}

// MsgType returns MsgCloseProposal.
func (*CloseProposal) MsgType() MessageType { return MsgCloseProposal }

// Encode writes the TLV payload of m.
func (m *CloseProposal) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *CloseProposal) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *CloseProposal) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		bytesField(2, &m.Tx, MaxCloseTxSize),
		arrayField(4, m.HubNonce[:]),
	}
}

// MsgType returns MsgCloseSign.
func (*CloseSign) MsgType() MessageType { return MsgCloseSign }

// Encode writes the TLV payload of m.
func (m *CloseSign) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *CloseSign) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *CloseSign) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		arrayField(2, m.DevicePartialSig[:]),
	}
}

// MsgType returns MsgChannelClosed.
func (*ChannelClosed) MsgType() MessageType { return MsgChannelClosed }

// Encode writes the TLV payload of m.
func (m *ChannelClosed) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelClosed) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelClosed) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		arrayField(2, m.Txid[:]),
	}
}
