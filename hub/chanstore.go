package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// Channel store errors.
var (
	// ErrSeqConflict is returned by ApplyPayment when the stored state is
	// not the one the update builds on (its Seq is not update.Seq-1): a
	// replayed, reordered or concurrent update. Nothing was written.
	ErrSeqConflict = errors.New("hub: channel state moved")
	// ErrHoldConflict is returned when a payment captures more than a hold
	// has left, or captures against a hold that is not active.
	ErrHoldConflict = errors.New("hub: hold exhausted or closed")
	// ErrHoldRefused is returned when a hold cannot take a charge paid
	// against it: unknown, expired, another party's or channel's, or too
	// small; the message says which.
	ErrHoldRefused = errors.New("hub: hold refused the charge")
	// ErrCreditLimit is returned when service on credit would push a
	// channel's unsigned balance past the hub's per-channel limit (I1).
	ErrCreditLimit = errors.New("hub: credit limit reached")
	// ErrChargeFenced is returned when a payment answering a charge
	// request is no longer the request's to make: its charges' claims no
	// longer name it (ChargeFence).
	ErrChargeFenced = errors.New("hub: charge request superseded")
)

// ChannelStatus is where a channel is in its life.
type ChannelStatus string

// Channel statuses. A channel moves forward only:
// pending → ready → (frozen ⇄ ready) → closing → closed; pending → failed.
const (
	ChannelPending ChannelStatus = "pending" // offered, waiting for a confirmed funding output
	ChannelReady   ChannelStatus = "ready"   // funded at the required depth; payments accepted
	ChannelFrozen  ChannelStatus = "frozen"  // device frozen or revoked: no new payments, settled next period
	ChannelClosing ChannelStatus = "closing" // a close or claim transaction is broadcast
	ChannelClosed  ChannelStatus = "closed"  // the closing transaction confirmed
	ChannelFailed  ChannelStatus = "failed"  // the funding output never matched
)

// ChannelRecord is the hub's durable record of one channel. Its payment state
// (Seq, Paid, DeviceSig) changes only through ChannelStore.ApplyPayment.
type ChannelRecord struct {
	// PendingID names the channel from the offer on, before it has an
	// outpoint; it also tweaks the hub's channel key so every channel has
	// its own address.
	PendingID [32]byte `json:"pending_id"`
	DeviceID  string   `json:"device_id"`
	DeviceKey PubKey   `json:"device_key"`
	// HubKey is the hub's per-channel key: the hub identity key tweaked by
	// PendingID (see docs/protocol.md).
	HubKey   PubKey         `json:"hub_key"`
	Capacity btcutil.Amount `json:"capacity_sat"`
	Expiry   uint32         `json:"expiry_height"`
	Status   ChannelStatus  `json:"status"`

	// Funding is the channel output once the device named it; it is the
	// channel id used on the wire and in every signed state.
	Funding  wire.OutPoint `json:"funding"`
	MinDepth uint32        `json:"min_depth"`

	// Latest acknowledged state and the device's claim signature for it
	// (zero signature while Seq is 0).
	Seq       uint64      `json:"seq"`
	Paid      msat.Amount `json:"paid_msat"`
	DeviceSig [64]byte    `json:"device_sig"`
	// Owed is service charged to the device but not yet covered by a
	// signature (captures while the device was offline); bounded by the
	// hub's per-channel credit limit.
	Owed msat.Amount `json:"owed_msat"`

	CloseTx *chainhash.Hash `json:"close_txid,omitempty"`
	// CloseRaw is the hub's own fully signed close or claim spending the
	// channel, recorded before it is broadcast so the watcher can send it
	// again; empty for a settlement batch (CloseTx names the batch).
	CloseRaw  []byte    `json:"close_tx,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Validate refuses a channel record no store should write: every record
// is keyed by its PendingID and indexed under its DeviceID, and stores end
// a device id with a zero byte in their index keys. Errors wrap ErrInvalid.
// A store may refuse more (redisstore bounds amounts), never less.
func (c ChannelRecord) Validate() error {
	switch {
	case c.PendingID == [32]byte{}:
		return fmt.Errorf("%w: channel without pending id", ErrInvalid)
	case c.DeviceID == "" || strings.IndexByte(c.DeviceID, 0) >= 0:
		return fmt.Errorf("%w: channel %x: device id %q", ErrInvalid, c.PendingID, c.DeviceID)
	}
	return nil
}

// HoldStatus is where a pre-authorisation is in its life.
type HoldStatus string

// Hold statuses.
const (
	HoldActive   HoldStatus = "active"
	HoldReleased HoldStatus = "released" // the provider finished; the rest is free again
	HoldExpired  HoldStatus = "expired"
)

// Hold is a pre-authorisation: the device signed that Provider may charge up
// to Max against the channel until Expires. The hub reserves the capacity;
// every capture is still paid by a device-signed state (see docs/holds.md).
type Hold struct {
	ID       [16]byte      `json:"id"`
	Channel  wire.OutPoint `json:"channel"`
	DeviceID string        `json:"device_id"`
	Provider string        `json:"provider"`
	Max      msat.Amount   `json:"max_msat"`
	Captured msat.Amount   `json:"captured_msat"`
	Expires  time.Time     `json:"expires"`
	Status   HoldStatus    `json:"status"`
	// DeviceSig is the device's signature over the authorisation, the
	// evidence that it agreed to the hold.
	DeviceSig [64]byte  `json:"device_sig"`
	Memo      string    `json:"memo,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Validate refuses a hold no store should write: holds are keyed by ID.
// Errors wrap ErrInvalid.
func (h Hold) Validate() error {
	if h.ID == [16]byte{} {
		return fmt.Errorf("%w: hold without id", ErrInvalid)
	}
	return nil
}

// Remaining is what the hold can still capture.
func (h Hold) Remaining() msat.Amount { return h.Max - h.Captured }

// PaymentUpdate is one acknowledged payment, written atomically.
type PaymentUpdate struct {
	Channel   wire.OutPoint
	Seq       uint64 // must be the stored Seq + 1
	Paid      msat.Amount
	DeviceSig [64]byte
	// HoldID, when set, is the hold this payment captures Amount against.
	HoldID *[16]byte
	// Amount is what the payment moves (Paid - stored Paid); the store
	// also lowers the channel's Owed by it (see ChannelStore.ApplyPayment).
	Amount msat.Amount
	// Receipt is the hub-signed receipt (channel.Receipt encoding) stored
	// under (Channel, Seq) for history and settlement.
	Receipt []byte
	Time    time.Time
	// Fence, on a payment answering a charge request, makes the store
	// apply it only while the request is its charges' live one (see
	// ChargeFence), returning ErrChargeFenced otherwise.
	Fence *ChargeFence
}

// Validate refuses an update no store should apply: states are numbered
// from 1 (Seq 0 is the funded channel before any payment). Whether Seq
// follows the stored state is checked by the store, atomically
// (ErrSeqConflict). Errors wrap ErrInvalid.
func (u PaymentUpdate) Validate() error {
	if u.Seq == 0 {
		return fmt.Errorf("%w: payment with seq 0", ErrInvalid)
	}
	return nil
}

// ChannelStore persists channels, holds and receipts. ApplyPayment is the
// hub's hot path: implementations must make it durable before returning and
// should share fsyncs between concurrent callers (group commit).
type ChannelStore interface {
	// PutChannel creates or replaces a channel record, indexed by PendingID,
	// by Funding once it is set, and by DeviceID. It must not be used to
	// change Seq, Paid or DeviceSig of an existing record (ApplyPayment
	// does that); implementations keep the stored values of those fields.
	PutChannel(ctx context.Context, c ChannelRecord) error

	// ChannelByPending returns the channel offered under id, or ErrNotFound.
	ChannelByPending(ctx context.Context, id [32]byte) (ChannelRecord, error)

	// Channel returns the channel funded by op, or ErrNotFound.
	Channel(ctx context.Context, op wire.OutPoint) (ChannelRecord, error)

	// ChannelsByDevice returns a device's channels, in creation order.
	ChannelsByDevice(ctx context.Context, deviceID string) ([]ChannelRecord, error)

	// Channels returns every channel whose status is one of statuses (all
	// channels when none is given).
	Channels(ctx context.Context, statuses ...ChannelStatus) ([]ChannelRecord, error)

	// ApplyPayment writes u atomically: the new state, the receipt, and the
	// hold capture. It lowers the channel's Owed by the payment inside the
	// same atomic write, new Owed = max(0, stored Owed - u.Amount), and
	// returns that new Owed: never an absolute value computed by the
	// caller, because charges on credit (ApplyOwed, RecordCharges) raise
	// the stored Owed without moving Seq, and another hubd on the same
	// store may have recorded some since the caller read the channel. It
	// returns ErrNotFound for an unknown channel, ErrSeqConflict when the
	// stored Seq is not u.Seq-1, and ErrHoldConflict when the hold is not
	// active or u.Amount exceeds what it has left.
	ApplyPayment(ctx context.Context, u PaymentUpdate) (owed msat.Amount, err error)

	// ApplyOwed records service charged on credit while the device could
	// not sign: it raises the channel's Owed by amount (and the hold's
	// Captured, when holdID is set). It returns ErrCreditLimit, writing
	// nothing, when Owed would exceed limit, ErrHoldConflict as
	// ApplyPayment does, and ErrNotFound for an unknown channel.
	ApplyOwed(ctx context.Context, op wire.OutPoint, holdID *[16]byte, amount, limit msat.Amount) error

	// Receipts returns up to limit stored receipts of a channel with
	// Seq >= from, in order.
	Receipts(ctx context.Context, op wire.OutPoint, from uint64, limit int) ([][]byte, error)

	// PutHold creates or replaces a hold. Captured is only ever raised by
	// ApplyPayment; implementations keep the stored value.
	PutHold(ctx context.Context, h Hold) error

	// Hold returns a hold by id, or ErrNotFound.
	Hold(ctx context.Context, id [16]byte) (Hold, error)

	// Holds returns a channel's holds in any status.
	Holds(ctx context.Context, op wire.OutPoint) ([]Hold, error)

	// ActiveHolds returns the active holds of every channel, in no
	// particular order. A restarted hub reloads them with it instead of
	// asking each channel for its holds.
	ActiveHolds(ctx context.Context) ([]Hold, error)
}
