package m2mclient

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/msat"
)

// shareNotice is a hub-signed "share" message to a payee: a receipt timed
// at receiptTime paying provider cpo for one event, the payee's share of
// it, and paid as the hub's paid time (zero: none sent).
func shareNotice(t *testing.T, hub *btcec.PrivateKey, event string, receiptTime, paid time.Time, share msat.Amount) []byte {
	t.Helper()
	receipt := signReceiptHex(t, hub, channel.Receipt{Seq: 1, Payer: "car", Payee: "cpo", Amount: 1_000_000, Paid: 1_000_000,
		Time: receiptTime, Contract: [32]byte{1}}, event)
	msg := map[string]any{"kind": "share", "receipt": receipt, "events": []string{event},
		"shares": []eventShare{{EventID: event, Msat: share}}}
	if !paid.IsZero() {
		msg["paid"] = paid
	}
	b, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestShareIncomeByPaidTime: a payee counts a share in the period that
// holds the time the hub marked its charges paid, which settles it, not
// in the period of the receipt (a receipt timed before a cut whose
// charges were marked paid after it settles in the next epoch); a notice
// without a paid time counts by its receipt's time, as before.
func TestShareIncomeByPaidTime(t *testing.T) {
	hub, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	m := &Meter{cfg: MeterConfig{ProviderID: "emp", HubKey: hub.PubKey()}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cut := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, b := range [][]byte{
		shareNotice(t, hub, "late", cut.Add(-time.Millisecond), cut.Add(5*time.Millisecond), 148_585),
		shareNotice(t, hub, "old-hub", cut.Add(-time.Second), time.Time{}, 9_899),
	} {
		if ns := m.decode(b); len(ns) != 1 || ns[0].Share == nil {
			t.Fatalf("notices %+v, want one share", ns)
		}
	}
	before, after := m.Income(cut.Add(-time.Hour), cut), m.Income(cut, cut.Add(time.Hour))
	if before.Shares != 9_899 || before.ShareNotices != 1 || after.Shares != 148_585 || after.ShareNotices != 1 {
		t.Fatalf("shares before the cut %d (%d notices), after %d (%d); want 9899 (1) and 148585 (1)",
			before.Shares, before.ShareNotices, after.Shares, after.ShareNotices)
	}
}
