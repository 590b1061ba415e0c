package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/tlv"
	"github.com/m2mhub/m2mhub/msat"
)

// Resynchronisation message types (docs/protocol.md, "Resynchronisation"):
// a device that restarted from an older copy of its store learns the latest
// state it signed. They continue the settlement numbers and are even for the
// same reason as the others.
const (
	MsgChannelSync  = TypeBase + 0x2E // device → hub
	MsgChannelState = TypeBase + 0x30 // hub → device
)

// ChannelSync asks the hub for the latest state of one of the device's
// channels. The hub answers ChannelState, or ChannelError with ChanID set
// ("unknown-channel", "not-owner").
type ChannelSync struct {
	ChanID wire.OutPoint // record 0
}

// ChannelState is the latest state of a channel the hub holds, with the
// device's own claim signature over it: the device checks that signature
// with its own key before it adopts the state, so a hub cannot make it
// believe it paid what it never signed. The hub sends it in answer to
// ChannelSync and right before refusing a Pay with "stale-state" or
// "seq-gap".
type ChannelState struct {
	ChanID wire.OutPoint // record 0
	Seq    uint64        // record 2
	Paid   msat.Amount   // record 4
	// Sig is the device's claim signature for State{ChanID, Seq, Paid}.
	// The hub sends it whenever Seq > 0 (a channel nothing was paid on
	// has no signed state); a device adopts no state above seq 0 without
	// one that verifies.
	Sig *[64]byte // record 5
	// Holds are the channel's active holds, at most MaxSyncHolds, each
	// with the device's own hold signature (record 7; absent when none).
	Holds []HoldState
}

// MaxSyncHolds bounds the holds one ChannelState carries; the hub sends
// the ones that expire first when a channel has more.
const MaxSyncHolds = 256

// HoldState is one active hold in a ChannelState.
type HoldState struct {
	ID       [16]byte
	Max      msat.Amount
	Captured msat.Amount
	Expires  uint64
	Provider string
	// Sig is the device's BIP-340 signature over the hold digest
	// (channel.SignHold), which the device checks before adopting it.
	Sig [64]byte
}

// holdStateMin is the size of a hold entry with a one-byte provider.
const holdStateMin = 16 + 8 + 8 + 8 + 1 + 1 + 64

func (h *HoldState) check() error {
	switch {
	case len(h.Provider) < 1 || len(h.Provider) > MaxIDSize || !utf8.ValidString(h.Provider):
		return fmt.Errorf("hold provider of %d bytes", len(h.Provider))
	case h.Max > MaxMilliSatoshi || h.Captured > h.Max:
		return fmt.Errorf("hold captured %d of max %d msat", uint64(h.Captured), uint64(h.Max))
	}
	return nil
}

// holdsField is the optional record of concatenated hold entries:
// hold_id (16) || max_msat (u64) || captured_msat (u64) || expires (u64)
// || provider_len (u8) || provider || sig (64).
func holdsField(typ tlv.Type, v *[]HoldState) field {
	enc := func(w io.Writer, _ interface{}, _ *[8]byte) error {
		_, err := w.Write(encodeHolds(*v))
		return err
	}
	dec := func(r io.Reader, _ interface{}, _ *[8]byte, l uint64) error {
		if l > MaxSyncHolds*(holdStateMin-1+MaxIDSize) {
			return fmt.Errorf("%d bytes of holds", l)
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		hs, err := decodeHolds(b)
		if err != nil {
			return err
		}
		*v = hs
		return nil
	}
	size := func() uint64 { return uint64(len(encodeHolds(*v))) }
	return field{
		rec:      tlv.MakeDynamicRecord(typ, v, size, enc, dec),
		optional: true,
		present:  func() bool { return len(*v) > 0 },
		check: func() error {
			if len(*v) > MaxSyncHolds {
				return fmt.Errorf("%d holds, limit %d", len(*v), MaxSyncHolds)
			}
			for i := range *v {
				if err := (*v)[i].check(); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func encodeHolds(hs []HoldState) []byte {
	var b []byte
	for _, h := range hs {
		b = append(b, h.ID[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(h.Max))
		b = binary.BigEndian.AppendUint64(b, uint64(h.Captured))
		b = binary.BigEndian.AppendUint64(b, h.Expires)
		b = append(b, byte(len(h.Provider)))
		b = append(b, h.Provider...)
		b = append(b, h.Sig[:]...)
	}
	return b
}

func decodeHolds(b []byte) ([]HoldState, error) {
	var hs []HoldState
	for len(b) > 0 {
		if len(b) < holdStateMin || len(hs) == MaxSyncHolds {
			return nil, errors.New("malformed hold entries")
		}
		var h HoldState
		copy(h.ID[:], b)
		h.Max = msat.Amount(binary.BigEndian.Uint64(b[16:]))
		h.Captured = msat.Amount(binary.BigEndian.Uint64(b[24:]))
		h.Expires = binary.BigEndian.Uint64(b[32:])
		n := int(b[40])
		b = b[41:]
		if n < 1 || len(b) < n+64 {
			return nil, errors.New("malformed hold entry")
		}
		h.Provider = string(b[:n])
		copy(h.Sig[:], b[n:n+64])
		b = b[n+64:]
		hs = append(hs, h)
	}
	return hs, nil
}

var (
	_ Message = (*ChannelSync)(nil)
	_ Message = (*ChannelState)(nil)
)

// MsgType returns MsgChannelSync.
func (*ChannelSync) MsgType() MessageType { return MsgChannelSync }

// Encode writes the TLV payload of m.
func (m *ChannelSync) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelSync) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelSync) fields() []field {
	return []field{outPointField(0, &m.ChanID)}
}

// MsgType returns MsgChannelState.
func (*ChannelState) MsgType() MessageType { return MsgChannelState }

// Encode writes the TLV payload of m.
func (m *ChannelState) Encode(b *bytes.Buffer, _ uint32) error { return encodeFields(b, m) }

// Decode reads m from a TLV payload; errors wrap ErrProtocol.
func (m *ChannelState) Decode(r io.Reader, _ uint32) error { return decodeFields(r, m) }

func (m *ChannelState) fields() []field {
	return []field{
		outPointField(0, &m.ChanID),
		u64Field(2, &m.Seq),
		msatField(4, &m.Paid),
		optArrayField(5, &m.Sig, 64, func(a *[64]byte) []byte { return a[:] }),
		holdsField(7, &m.Holds),
	}
}
