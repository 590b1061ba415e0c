package storetest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
)

// NewOutPoint returns a random outpoint, as a fresh funding output.
func NewOutPoint(tb testing.TB) wire.OutPoint {
	tb.Helper()
	var op wire.OutPoint
	if _, err := rand.Read(op.Hash[:]); err != nil {
		tb.Fatal(err)
	}
	op.Index = mrand.Uint32N(4)
	return op
}

// NewChannel returns a ready, funded 1,000,000 sat channel of deviceID
// with a random pending id and funding outpoint, and no payments yet.
func NewChannel(tb testing.TB, deviceID string) hub.ChannelRecord {
	tb.Helper()
	var pid [32]byte
	if _, err := rand.Read(pid[:]); err != nil {
		tb.Fatal(err)
	}
	return hub.ChannelRecord{
		PendingID: pid,
		DeviceID:  deviceID,
		DeviceKey: NewKey(tb),
		HubKey:    NewKey(tb),
		Capacity:  btcutil.Amount(1_000_000),
		Expiry:    840_000,
		Status:    hub.ChannelReady,
		Funding:   NewOutPoint(tb),
		MinDepth:  3,
		CreatedAt: epoch(),
		UpdatedAt: epoch(),
	}
}

// NewHold returns an active hold of up to maxAmt on the channel funded by op.
func NewHold(tb testing.TB, op wire.OutPoint, deviceID string, maxAmt msat.Amount) hub.Hold {
	tb.Helper()
	h := hub.Hold{
		Channel:   op,
		DeviceID:  deviceID,
		Provider:  "charger-7",
		Max:       maxAmt,
		Expires:   epoch().Add(time.Hour),
		Status:    hub.HoldActive,
		Memo:      "session 42",
		CreatedAt: epoch(),
	}
	if _, err := rand.Read(h.ID[:]); err != nil {
		tb.Fatal(err)
	}
	if _, err := rand.Read(h.DeviceSig[:]); err != nil {
		tb.Fatal(err)
	}
	return h
}

// Receipt returns a ReceiptSize receipt that names its channel and seq, so
// a receipt stored under the wrong key is caught.
func Receipt(op wire.OutPoint, seq uint64) []byte {
	r := make([]byte, ReceiptSize)
	copy(r, op.Hash[:])
	binary.BigEndian.PutUint32(r[32:], op.Index)
	binary.BigEndian.PutUint64(r[36:], seq)
	for i := 44; i < len(r); i++ {
		r[i] = byte(seq) ^ byte(i)
	}
	return r
}

// Payment returns the update that moves the channel funded by op to seq
// with paid msat paid, signed by a signature derived from both.
func Payment(op wire.OutPoint, seq uint64, paid msat.Amount) hub.PaymentUpdate {
	u := hub.PaymentUpdate{
		Channel: op,
		Seq:     seq,
		Paid:    paid,
		Receipt: Receipt(op, seq),
		Time:    epoch().Add(time.Duration(seq) * time.Second),
	}
	binary.BigEndian.PutUint64(u.DeviceSig[:], seq)
	binary.BigEndian.PutUint64(u.DeviceSig[8:], uint64(paid))
	copy(u.DeviceSig[16:], op.Hash[:])
	return u
}

// MustPutChannel stores c.
func MustPutChannel(tb testing.TB, s hub.ChannelStore, c hub.ChannelRecord) {
	tb.Helper()
	if err := s.PutChannel(context.Background(), c); err != nil {
		tb.Fatalf("PutChannel(%x): %v", c.PendingID[:4], err)
	}
}

// MustChannel returns the channel funded by op.
func MustChannel(tb testing.TB, s hub.ChannelStore, op wire.OutPoint) hub.ChannelRecord {
	tb.Helper()
	c, err := s.Channel(context.Background(), op)
	if err != nil {
		tb.Fatalf("Channel(%s): %v", op, err)
	}
	return c
}

// MustApplyPayment applies u.
func MustApplyPayment(tb testing.TB, s hub.ChannelStore, u hub.PaymentUpdate) {
	tb.Helper()
	if _, err := s.ApplyPayment(context.Background(), u); err != nil {
		tb.Fatalf("ApplyPayment(%s seq %d): %v", u.Channel, u.Seq, err)
	}
}

func mustHold(tb testing.TB, s hub.ChannelStore, id [16]byte) hub.Hold {
	tb.Helper()
	h, err := s.Hold(context.Background(), id)
	if err != nil {
		tb.Fatalf("Hold(%x): %v", id, err)
	}
	return h
}

func mustPutHold(tb testing.TB, s hub.ChannelStore, h hub.Hold) {
	tb.Helper()
	if err := s.PutHold(context.Background(), h); err != nil {
		tb.Fatalf("PutHold(%x): %v", h.ID, err)
	}
}

func mustReceipts(tb testing.TB, s hub.ChannelStore, op wire.OutPoint, from uint64, limit int) [][]byte {
	tb.Helper()
	rs, err := s.Receipts(context.Background(), op, from, limit)
	if err != nil {
		tb.Fatalf("Receipts(%s, %d, %d): %v", op, from, limit, err)
	}
	return rs
}

// withState returns c as it should read back after u was applied (Owed
// is c's: the caller sets what the store should have lowered it to).
func withState(c hub.ChannelRecord, u hub.PaymentUpdate) hub.ChannelRecord {
	c.Seq, c.Paid, c.DeviceSig, c.UpdatedAt = u.Seq, u.Paid, u.DeviceSig, u.Time
	return c
}

func assertChannel(tb testing.TB, got, want hub.ChannelRecord) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("channel mismatch:\n got  %+v\n want %+v", got, want)
	}
}

func assertHold(tb testing.TB, got, want hub.Hold) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("hold mismatch:\n got  %+v\n want %+v", got, want)
	}
}

// assertUnchanged checks that a refused update left the channel, its
// receipts and (when given) a hold as they were.
func assertUnchanged(tb testing.TB, s hub.ChannelStore, c hub.ChannelRecord, holds ...hub.Hold) {
	tb.Helper()
	assertChannel(tb, MustChannel(tb, s, c.Funding), c)
	if rs := mustReceipts(tb, s, c.Funding, c.Seq+1, 10); len(rs) != 0 {
		tb.Fatalf("refused update stored %d receipts past seq %d", len(rs), c.Seq)
	}
	for _, h := range holds {
		assertHold(tb, mustHold(tb, s, h.ID), h)
	}
}
