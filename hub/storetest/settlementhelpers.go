package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// NewRun returns a run of epoch e with every field set, so a round trip
// through a store that drops or mangles one is caught.
func NewRun(tb testing.TB, e settlement.Epoch, attempt uint32, state settlement.RunState) settlement.Run {
	tb.Helper()
	at := e.Start.Add(time.Duration(attempt) * time.Minute)
	r := settlement.NewRun(e, attempt, at)
	r.State = state
	r.Entered[state] = at
	r.Txs = [][]byte{{0x02, 0x00, 0x00, 0x00, byte(attempt)}}
	if _, err := rand.Read(r.Anchor.ReceiptsRoot[:]); err != nil {
		tb.Fatal(err)
	}
	if _, err := rand.Read(r.Anchor.AuditHead[:]); err != nil {
		tb.Fatal(err)
	}
	r.Closing = &settlement.Closing{
		Epoch:      e.Number,
		Nets:       map[string]settlement.Msat{"payer-1": -1_500_123, "charger-7": 1_500_123},
		Settled:    map[string]btcutil.Amount{"payer-1": -1500, "charger-7": 1500},
		HubSettled: 0,
		Carried:    map[settlement.Account]settlement.Msat{settlement.Payer("payer-1"): -123, settlement.Provider("charger-7"): 123},
	}
	r.Fee = btcutil.Amount(300 + attempt)
	r.Error = "attempt note"
	return *r
}

// NewRollover returns a run of epoch e whose one batch transaction spends
// the funding of every channel in old, and the channels it opens: one per
// old channel, on the same index of the batch, with the old capacity less
// what was paid, no payments, and the old channel's Owed carried.
func NewRollover(tb testing.TB, e settlement.Epoch, attempt uint32, old []hub.ChannelRecord) (settlement.Run, []hub.ChannelRecord) {
	tb.Helper()
	r := NewRun(tb, e, attempt, settlement.RunConfirmed)
	tx := wire.NewMsgTx(2)
	for _, c := range old {
		tx.AddTxIn(wire.NewTxIn(&c.Funding, nil, nil))
		script := append([]byte{0x51, 0x20}, c.HubKey[1:]...) // a taproot-shaped output
		tx.AddTxOut(wire.NewTxOut(int64(c.Capacity-c.Paid.ToSatoshis()), script))
	}
	tx.AddTxOut(r.Anchor.TxOut())
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		tb.Fatal(err)
	}
	r.Txs = [][]byte{buf.Bytes()}
	r.ConfirmHeight = e.EndHeight + 1
	txid := tx.TxHash()

	next := make([]hub.ChannelRecord, len(old))
	for i, c := range old {
		n := NewChannel(tb, c.DeviceID)
		n.DeviceKey, n.HubKey = c.DeviceKey, c.HubKey
		n.Capacity = c.Capacity - c.Paid.ToSatoshis()
		n.Expiry = c.Expiry
		n.Funding = wire.OutPoint{Hash: txid, Index: uint32(i)}
		n.Owed = c.Owed
		n.CreatedAt, n.UpdatedAt = r.Updated, r.Updated
		next[i] = n
	}
	return r, next
}

// MustCut cuts closed into successor.
func MustCut(tb testing.TB, s hub.SettlementStore, closed, successor settlement.Epoch) {
	tb.Helper()
	if err := s.CutEpoch(context.Background(), closed, successor); err != nil {
		tb.Fatalf("CutEpoch(%d → %d): %v", closed.Number, successor.Number, err)
	}
}

// MustCutNext cuts the store's open epoch an hour after its start, six
// blocks higher, and returns the closed epoch and its successor. A cut
// needs the previous epoch settled: when that epoch has no run at all, an
// empty one (attempt 1) is stored first.
func MustCutNext(tb testing.TB, s hub.SettlementStore) (closed, successor settlement.Epoch) {
	tb.Helper()
	open := MustOpenEpoch(tb, s)
	if open.Number > 1 {
		prev := mustEpochs(tb, s, 2)[1]
		if _, err := s.Run(context.Background(), prev.Number); errors.Is(err, hub.ErrNotFound) {
			MustPutRun(tb, s, NewRun(tb, prev, 1, settlement.RunEmpty))
		}
	}
	closed, successor, err := open.Cut(open.Start.Add(time.Hour), open.StartHeight+6)
	if err != nil {
		tb.Fatalf("Cut: %v", err)
	}
	MustCut(tb, s, closed, successor)
	return closed, successor
}

// MustOpenEpoch returns the store's open epoch.
func MustOpenEpoch(tb testing.TB, s hub.SettlementStore) settlement.Epoch {
	tb.Helper()
	e, err := s.OpenEpoch(context.Background())
	if err != nil {
		tb.Fatalf("OpenEpoch: %v", err)
	}
	return e
}

// MustPutRun stores r.
func MustPutRun(tb testing.TB, s hub.SettlementStore, r settlement.Run) {
	tb.Helper()
	if err := s.PutRun(context.Background(), r); err != nil {
		tb.Fatalf("PutRun(%d/%d): %v", r.Epoch.Number, r.Attempt, err)
	}
}

// MustRun returns the latest run of epoch.
func MustRun(tb testing.TB, s hub.SettlementStore, epoch uint64) settlement.Run {
	tb.Helper()
	r, err := s.Run(context.Background(), epoch)
	if err != nil {
		tb.Fatalf("Run(%d): %v", epoch, err)
	}
	return r
}

func mustEpochs(tb testing.TB, s hub.SettlementStore, limit int) []settlement.Epoch {
	tb.Helper()
	es, err := s.Epochs(context.Background(), limit)
	if err != nil {
		tb.Fatalf("Epochs(%d): %v", limit, err)
	}
	return es
}

func mustRuns(tb testing.TB, s hub.SettlementStore, limit int) []settlement.Run {
	tb.Helper()
	rs, err := s.Runs(context.Background(), limit)
	if err != nil {
		tb.Fatalf("Runs(%d): %v", limit, err)
	}
	return rs
}

func mustChannelsByDevice(tb testing.TB, s hub.ChannelStore, deviceID string) []hub.ChannelRecord {
	tb.Helper()
	cs, err := s.ChannelsByDevice(context.Background(), deviceID)
	if err != nil {
		tb.Fatalf("ChannelsByDevice(%s): %v", deviceID, err)
	}
	return cs
}

func assertEpochs(tb testing.TB, got, want []settlement.Epoch) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d epochs, want %d:\n got  %+v\n want %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			tb.Fatalf("epoch %d mismatch:\n got  %+v\n want %+v", i, got[i], want[i])
		}
	}
}

func assertRun(tb testing.TB, got, want settlement.Run) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("run mismatch:\n got  %+v\n want %+v", got, want)
	}
}

func assertRuns(tb testing.TB, got, want []settlement.Run) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d runs, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			tb.Fatalf("run %d mismatch:\n got  %+v\n want %+v", i, got[i], want[i])
		}
	}
}

// assertNoChannel checks that c was not created, under either index.
func assertNoChannel(tb testing.TB, s hub.ChannelStore, c hub.ChannelRecord) {
	tb.Helper()
	if got, err := s.Channel(context.Background(), c.Funding); !errors.Is(err, hub.ErrNotFound) {
		tb.Fatalf("Channel(%s) = %+v, %v; want hub.ErrNotFound", c.Funding, got, err)
	}
	if got, err := s.ChannelByPending(context.Background(), c.PendingID); !errors.Is(err, hub.ErrNotFound) {
		tb.Fatalf("ChannelByPending(%x) = %+v, %v; want hub.ErrNotFound", c.PendingID, got, err)
	}
}

// closedBy returns c as it should read back after a rollover by r closed it
// with the batch transaction txid.
func closedBy(tb testing.TB, c hub.ChannelRecord, r settlement.Run) hub.ChannelRecord {
	tb.Helper()
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(r.Txs[0])); err != nil {
		tb.Fatalf("decode the batch: %v", err)
	}
	txid := tx.TxHash()
	c.Status, c.CloseTx = hub.ChannelClosed, &txid
	if r.Updated.After(c.UpdatedAt) {
		c.UpdatedAt = r.Updated
	}
	return c
}
