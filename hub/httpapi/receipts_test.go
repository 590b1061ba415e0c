package httpapi_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// TestChannelReceipts stores two payments' receipts and lists them back
// through the API, decoded and with their encoding for receipt verify.
func TestChannelReceipts(t *testing.T) {
	a := newFullAPI(t)
	ctx := context.Background()
	op := wire.OutPoint{Hash: chainhash.Hash{0xc3}, Index: 2}
	hubKey, _ := btcec.NewPrivateKey()
	if err := a.store.PutChannel(ctx, hub.ChannelRecord{PendingID: [32]byte{3}, Funding: op, DeviceID: "car-1",
		Capacity: 100_000, Expiry: 900, Status: hub.ChannelReady, MinDepth: 1, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var want []channel.Receipt
	var paid uint64
	for seq := uint64(1); seq <= 2; seq++ {
		paid += 1_500 * seq
		rc := channel.Receipt{Channel: op, Seq: seq, Payer: "car-1", Payee: "gantry-7", Amount: 1_500 * msat.Amount(seq),
			Paid: msat.Amount(paid), Time: time.UnixMilli(1_780_000_000_000 + int64(seq)).UTC(), Memo: "toll"}
		if err := rc.Sign(hubKey); err != nil {
			t.Fatal(err)
		}
		enc, err := rc.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.store.ApplyPayment(ctx, hub.PaymentUpdate{Channel: op, Seq: seq, Paid: rc.Paid, Amount: rc.Amount, Receipt: enc, Time: rc.Time}); err != nil {
			t.Fatal(err)
		}
		want = append(want, rc)
	}
	cl := httpapi.NewClient(strings.TrimPrefix(a.srv.URL, "http://"), token)
	got, err := cl.ChannelReceipts(ctx, op, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d receipts, want 2", len(got))
	}
	for i, g := range got {
		w := want[i]
		if g.ID != w.ID() || g.Seq != w.Seq || g.Amount != w.Amount || g.Paid != w.Paid || g.Payee != w.Payee || !g.Time.Equal(w.Time) {
			t.Errorf("receipt %d: %+v, want %+v", i, g, w)
		}
		raw, _ := hex.DecodeString(g.Receipt)
		var back channel.Receipt
		if err := back.UnmarshalBinary(raw); err != nil || back.ID() != w.ID() {
			t.Errorf("receipt %d's encoding does not decode to it: %v", i, err)
		}
	}
	if got, err := cl.ChannelReceipts(ctx, op, 2, 1); err != nil || len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("from 2, limit 1: %+v, %v", got, err)
	}
	_, err = cl.ChannelReceipts(ctx, wire.OutPoint{Hash: chainhash.Hash{0xee}}, 0, 0)
	var api *httpapi.APIError
	if err != nil && (!errors.As(err, &api) || api.Status != http.StatusNotFound) {
		t.Fatalf("unknown channel: %v", err)
	}
}
