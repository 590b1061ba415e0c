package m2mclient_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/metering"
)

// splitPayee is a payee of a revenue split with a channel of its own: its
// Meter's share notices are what its Device counts as earned.
type splitPayee struct {
	id    string
	meter *m2mclient.Meter
	ch    *m2mclient.Channel
	// notices are the payee's verified share notices, read by the test.
	notices <-chan m2mclient.Notice
}

// TestSplitPayeeCosigns: a toll gantry's contract gives a service
// provider 100 msat a passage and 15 % of the rest of the gantry's part.
// The payee gets a share notice for the receipt of each paid passage and
// counts its shares as its earnings; the hub's settlement asks it to
// co-sign for exactly that, and it signs (its channel is settled on the
// key path). A second payee whose own count is 2 sat off the hub's (a
// wrong share) refuses, and is carried instead of settled.
func TestSplitPayeeCosigns(t *testing.T) {
	// Both passages are charged on credit before the car pays for them.
	h, st := hubtest.StartSettling(t, hubtest.Config{Channels: func(c *channels.Config) { c.CreditLimit = 10_000_000 }})
	met := h.StartMetering(t, hubtest.MeteringConfig{})
	gantry := met.AddProvider(t)
	if _, err := h.Registry().SetPayout(t.Context(), gantry.ID, hubtest.P2TR(t), "operator"); err != nil {
		t.Fatal(err)
	}
	payee := func(skew msat.Amount) *splitPayee {
		key, id := h.EnrolDevice(t, hub.RolePayer, hub.RoleProvider)
		_, seed, err := met.Issuer.IssueNATS(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		p := &splitPayee{id: id, meter: met.NewMeter(t, hubtest.Provider{ID: id, Key: key, Seed: seed}, m2mclient.MeterConfig{})}
		if p.notices, err = p.meter.Receipts(t.Context()); err != nil {
			t.Fatal(err)
		}
		dev := h.NewDevice(t, h.Dial(t, key), key, m2mclient.DeviceConfig{
			Earnings: func(context.Context, uint64) (msat.Amount, error) {
				return p.meter.Income(time.Time{}, time.Now().Add(time.Hour)).Shares + skew, nil
			},
		})
		p.ch = h.OpenChannel(t, dev, 100_000)
		h.WaitSession(t, id)
		return p
	}
	emp, wrong := payee(0), payee(2000)

	toll := met.PublishContract(t, []byte(`{"kind":"toll","version":1,"id":"split-toll","currency":"msat","fee":{"bps":"100"},`+
		`"splits":[{"payee":"`+emp.id+`","fixed_msat":"100","bps":"1500"},{"payee":"`+wrong.id+`","bps":"100"}],`+
		`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000000"}}}`))
	carID := newCar(t, h, gantry.ID)

	meter := met.NewMeter(t, gantry, m2mclient.MeterConfig{})
	hash := toll.Hash()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var passages []metering.Event
	for i := range 2 {
		passages = append(passages, metering.Event{ID: fmt.Sprintf("passage-%d", i), Subject: carID, Time: now, Data: metering.Data{
			Contract: hex.EncodeToString(hash[:]), Quantity: "1", Unit: "passage", VehicleClass: "car",
		}})
	}
	if err := meter.Meter(t.Context(), passages...); err != nil {
		t.Fatal(err)
	}
	// 1,000,000 a passage, a 10,000 fee: 990,000 for the providers. The
	// first payee: 100 + floor(989,900 × 0.15) = 148,585; the second
	// floor(989,900 × 0.01) = 9,899.
	for _, w := range []struct {
		p    *splitPayee
		want msat.Amount
	}{{emp, 2 * 148_585}, {wrong, 2 * 9_899}} {
		var got msat.Amount
		for got < w.want {
			select {
			case n := <-w.p.notices:
				if n.Share == nil || n.Share.Receipt.Payee != gantry.ID {
					t.Fatalf("payee %s got notice %+v, want a share of the gantry's receipt", w.p.id, n)
				}
				got += n.Share.Msat
			case <-time.After(30 * time.Second):
				t.Fatalf("payee %s: shares of %d msat after 30 s, want %d", w.p.id, got, w.want)
			}
		}
		if got != w.want || w.p.meter.Income(time.Time{}, time.Now().Add(time.Hour)).Shares != w.want {
			t.Fatalf("payee %s told of %d msat, want %d", w.p.id, got, w.want)
		}
	}

	s := st.NewSettlement(t, nil)
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = st.Confirm(t, s, r.Epoch.Number)
	tx, err := h.LookupTx(t.Context(), hubtest.RunTxids(t, r)[0])
	if err != nil {
		t.Fatal(err)
	}
	i := hubtest.IndexOfInput(tx, emp.ch.ID)
	if i < 0 || len(tx.TxIn[i].Witness) != 1 || tx.TxOut[i].Value != 100_000+297 {
		t.Fatalf("payee's channel: input %d of %v, want co-signed into 100,297 sat", i, tx)
	}
	if hubtest.IndexOfInput(tx, wrong.ch.ID) >= 0 {
		t.Fatalf("the payee that counted a wrong share was settled")
	}
	if got := r.Closing.CarriedNet(wrong.id); got != 2*9_899 {
		t.Fatalf("the refusing payee carries %d msat, want its 19,798 msat of shares", got)
	}
	if got := r.Closing.CarriedNet(emp.id); got != 170 {
		t.Fatalf("payee carries %d msat, want 170", got)
	}
}

// newCar enrols a car with a funded channel whose policy lets it pay
// provider, and returns its id.
func newCar(t *testing.T, h *hubtest.Hub, provider string) string {
	key, id := h.EnrolDevice(t, hub.RolePayer)
	car := h.NewDevice(t, h.Dial(t, key), key, m2mclient.DeviceConfig{
		Policy: m2mclient.Policy{MaxPerPayment: 10_000_000, MaxPerHour: 100_000_000, AllowedProviders: []string{provider}},
	})
	h.OpenChannel(t, car, 100_000)
	h.WaitSession(t, id)
	return id
}
