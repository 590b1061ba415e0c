package m2mclient_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement"
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
		return newSplitPayee(t, h, met, func(p *splitPayee, _ uint64) msat.Amount {
			return p.meter.Income(time.Time{}, time.Now().Add(time.Hour)).Shares + skew
		})
	}
	emp, wrong := payee(0), payee(2000)

	meterPassages(t, h, met, gantry, "split-toll",
		`{"payee":"`+emp.id+`","fixed_msat":"100","bps":"1500"},{"payee":"`+wrong.id+`","bps":"100"}`)
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

// newSplitPayee enrols a split payee with a channel of its own whose
// device counts as its earnings in an epoch what earned says.
func newSplitPayee(t *testing.T, h *hubtest.Hub, met *hubtest.Metering, earned func(p *splitPayee, epoch uint64) msat.Amount) *splitPayee {
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
		Earnings: func(_ context.Context, epoch uint64) (msat.Amount, error) { return earned(p, epoch), nil },
	})
	p.ch = h.OpenChannel(t, dev, 100_000)
	h.WaitSession(t, id)
	return p
}

// TestSplitPayeePaidNextEpoch: passages charged on credit in epoch 1 and
// paid by the car only in epoch 2 settle the payee's shares in epoch 2:
// the payee counts its shares by epoch (the shares whose charges were
// paid in the epoch's period, Meter.Income), is asked to co-sign for
// exactly that in each epoch, signs, and is paid its share to the msat
// (sat into its channel, the remainder carried), the operator its rest.
// Before paid times, epoch 2's settlement did not post the shares of
// charges recorded in epoch 1: the hub's figure was 0, the payee refused
// and was never paid.
func TestSplitPayeePaidNextEpoch(t *testing.T) {
	// Charging requests payment only when the test flushes it.
	h, st := hubtest.StartSettling(t, hubtest.Config{Channels: func(c *channels.Config) { c.CreditLimit = 10_000_000 }})
	met := h.StartMetering(t, hubtest.MeteringConfig{Charging: func(c *charging.Config) {
		c.FlushInterval, c.FlushThreshold = time.Hour, 1<<40
	}})
	gantry := met.AddProvider(t)
	if _, err := h.Registry().SetPayout(t.Context(), gantry.ID, hubtest.P2TR(t), "operator"); err != nil {
		t.Fatal(err)
	}
	// The settlement service, made once the payee is enrolled; its
	// device asks it for the epoch's period from its own goroutine.
	var svc atomic.Pointer[settler.Service]
	emp := newSplitPayee(t, h, met, func(p *splitPayee, epoch uint64) msat.Amount {
		eps, err := svc.Load().Epochs(t.Context(), 10)
		if err != nil {
			t.Error(err)
			return 0
		}
		for _, ep := range eps {
			if ep.Number == epoch {
				return p.meter.Income(ep.From(), ep.End).Shares
			}
		}
		t.Errorf("asked about epoch %d, not among %+v", epoch, eps)
		return 0
	})
	carID, passages := meterPassages(t, h, met, gantry, "late-toll", `{"payee":"`+emp.id+`","fixed_msat":"100","bps":"1500"}`)
	hubtest.WaitFor(t, 30*time.Second, "passages charged", func() bool {
		for _, ev := range passages {
			if c, err := h.Store().Charge(t.Context(), gantry.ID, ev.ID); err != nil || c.Status != hub.ChargeOwed {
				return false
			}
		}
		return true
	})

	s := st.NewSettlement(t, nil)
	svc.Store(s)
	r1, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r1.State != settlement.RunEmpty {
		r1 = st.Confirm(t, s, r1.Epoch.Number)
	}
	if got := r1.Closing.CarriedNet(emp.id); got != 0 {
		t.Fatalf("the payee carries %d msat out of epoch 1, want nothing (nothing was paid)", got)
	}

	// Epoch 2: the car pays. 1,000,000 a passage, a 10,000 fee, then
	// 100 + floor(989,900 × 0.15) = 148,585 to the payee and 841,415 to
	// the gantry.
	met.Charging.Flush(t.Context())
	var got msat.Amount
	for got < 2*148_585 {
		select {
		case n := <-emp.notices:
			if n.Share == nil || n.Share.Paid.Before(r1.Epoch.End) {
				t.Fatalf("payee got notice %+v, want a share paid after epoch 1's cut %v", n, r1.Epoch.End)
			}
			got += n.Share.Msat
		case <-time.After(30 * time.Second):
			t.Fatalf("payee: shares of %d msat after 30 s, want %d", got, 2*148_585)
		}
	}
	r2, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r2 = st.Confirm(t, s, r2.Epoch.Number)
	tx, err := h.LookupTx(t.Context(), hubtest.RunTxids(t, r2)[0])
	if err != nil {
		t.Fatal(err)
	}
	i := hubtest.IndexOfInput(tx, emp.ch.ID)
	if i < 0 || len(tx.TxIn[i].Witness) != 1 || tx.TxOut[i].Value != 100_000+297 {
		t.Fatalf("payee's channel: input %d of %v, want co-signed into 100,297 sat", i, tx)
	}
	// The epoch's nets: the car paid 2,000,000, the payee's shares and
	// the gantry's rest are what the charges gave them, the hub kept the
	// fees; the payee's sub-satoshi remainder carries.
	nets := r2.Closing.Nets
	if nets[carID] != -2_000_000 || nets[emp.id] != 2*148_585 || nets[gantry.ID] != 2*841_415 ||
		nets[carID]+nets[emp.id]+nets[gantry.ID] != -2*10_000 {
		t.Fatalf("epoch 2 nets %v, want car -2,000,000, payee 297,170, gantry 1,682,830", nets)
	}
	var sum settlement.Msat
	for _, b := range r2.Closing.Carried {
		sum += b
	}
	if r2.Closing.CarriedNet(emp.id) != 170 || sum != 0 {
		t.Fatalf("carried: payee %d msat (want 170), all %d (want 0)", r2.Closing.CarriedNet(emp.id), sum)
	}
}

// meterPassages publishes toll contract id, 1,000,000 msat a car's
// passage with a 1 % fee and the given splits (JSON objects), enrols a
// car allowed to pay gantry, and has gantry meter two passages of it
// under the contract. It returns the car's id and the passages.
func meterPassages(t *testing.T, h *hubtest.Hub, met *hubtest.Metering, gantry hubtest.Provider, id, splits string) (string, []metering.Event) {
	toll := met.PublishContract(t, []byte(`{"kind":"toll","version":1,"id":"`+id+`","currency":"msat","fee":{"bps":"100"},`+
		`"splits":[`+splits+`],"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000000"}}}`))
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
	return carID, passages
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
