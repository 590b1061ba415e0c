package m2mclient

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/msat"
)

// signReceiptHex is r for events, signed by hub, hex as the hub
// publishes it.
func signReceiptHex(t *testing.T, hub *btcec.PrivateKey, r channel.Receipt, events ...string) string {
	t.Helper()
	root, n, err := channel.EventsRoot(events)
	if err != nil {
		t.Fatal(err)
	}
	r.EventsRoot, r.EventCount, r.HubKey = root, n, [33]byte(hub.PubKey().SerializeCompressed())
	if err := r.Sign(hub); err != nil {
		t.Fatal(err)
	}
	raw, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(raw)
}

// paidReceiptHex is a hub-signed receipt of payment seq paying provider
// "toll" 1000 msat for events.
func paidReceiptHex(t *testing.T, hub *btcec.PrivateKey, seq uint64, events ...string) string {
	t.Helper()
	return signReceiptHex(t, hub, channel.Receipt{Seq: seq, Payer: "car", Payee: "toll", Amount: 1_000,
		Paid: msat.Amount(seq * 1_000), Time: time.Now(), Contract: [32]byte{1}}, events...)
}

// TestMeterDeliversReceiptOnce: the hub publishes a receipt at least once
// (a hubd that died after publishing it leaves it to another, which may
// batch it with others). The Meter delivers and counts each receipt once:
// a repeat, alone or inside a "receipts" message, is dropped, and the
// batch's new receipt still delivered.
func TestMeterDeliversReceiptOnce(t *testing.T) {
	hub, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	m := &Meter{cfg: MeterConfig{ProviderID: "toll", HubKey: hub.PubKey()}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	first, second := paidReceiptHex(t, hub, 1, "e1", "e2"), paidReceiptHex(t, hub, 2, "e3")
	msg := func(v map[string]any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	alone := msg(map[string]any{"kind": "receipt", "receipt": first, "events": []string{"e1", "e2"}})
	batch := msg(map[string]any{"kind": "receipts", "receipts": []map[string]any{
		{"receipt": first, "events": []string{"e1", "e2"}},
		{"receipt": second, "events": []string{"e3"}},
	}})
	for i, step := range []struct {
		b    []byte
		want []uint64 // the seqs of the receipts delivered
	}{
		{alone, []uint64{1}},
		{alone, nil},
		{batch, []uint64{2}},
		{batch, nil},
	} {
		ns := m.decode(step.b)
		if len(ns) != len(step.want) {
			t.Fatalf("step %d: %d notices, want %d", i, len(ns), len(step.want))
		}
		for j, n := range ns {
			if n.Receipt == nil || n.Receipt.Seq != step.want[j] {
				t.Fatalf("step %d: notice %+v, want the receipt of payment %d", i, n, step.want[j])
			}
		}
	}
	in := m.Income(time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if in.Receipts != 2 || in.Events != 3 || in.Gross != 2_000 {
		t.Fatalf("income %+v, want 2 receipts of 3 events, 2000 msat", in)
	}
}
