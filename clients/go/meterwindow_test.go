package m2mclient_test

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/metering"
)

// TestMeterWindow: a Meter with a window of 2 events publishes two
// passages the hub never answers (their contract is unknown: dead-
// lettered), then cannot publish a third until they stop counting after
// WindowTTL; the third's receipt frees the window, and two more go at
// once.
func TestMeterWindow(t *testing.T) {
	run := hubtest.NewRunner()
	defer run.Close()
	h := hubtest.Start(run, hubtest.Config{})
	met := h.StartMetering(run, hubtest.MeteringConfig{})
	toll := met.PublishContract(run, []byte(exampleToll))
	gantry := met.AddProvider(run)
	carKey, carID := h.EnrolDevice(run, hub.RolePayer)
	car := h.NewDevice(run, h.Dial(run, carKey), carKey, m2mclient.DeviceConfig{
		Policy: m2mclient.Policy{MaxPerPayment: 10_000, MaxPerHour: 100_000, AllowedProviders: []string{gantry.ID}},
	})
	h.OpenChannel(run, car, btcutil.Amount(100_000))
	h.WaitSession(run, carID)

	meter := met.NewMeter(run, gantry, m2mclient.MeterConfig{Window: 2, WindowTTL: time.Second})
	ctx := t.Context()
	notices, err := meter.Receipts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	passage := func(id, contract string) metering.Event {
		return metering.Event{ID: id, Subject: carID, Time: now, Data: metering.Data{
			Contract: contract, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
	}
	hash := toll.Hash()
	known, unknown := hex.EncodeToString(hash[:]), hex.EncodeToString(make([]byte, 32))

	if err := meter.Meter(ctx, passage("lost-1", unknown), passage("lost-2", unknown)); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = meter.Meter(short, passage("p-1", known))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || meter.Outstanding() != 2 {
		t.Fatalf("a third event with two unanswered: %v, %d outstanding; want it held back (deadline exceeded), 2 outstanding", err, meter.Outstanding())
	}
	if err := meter.Meter(ctx, passage("p-1", known)); err != nil { // once the two lapse
		t.Fatal(err)
	}
	for got := false; !got; {
		select {
		case n := <-notices:
			got = n.Receipt != nil && len(n.Receipt.Events) == 1 && n.Receipt.Events[0] == "p-1"
		case <-ctx.Done():
			t.Fatal("no receipt for p-1")
		}
	}
	if n := meter.Outstanding(); n != 0 {
		t.Fatalf("%d outstanding after p-1's receipt, want 0", n)
	}
	short, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := meter.Meter(short, passage("p-2", known), passage("p-3", known)); err != nil {
		t.Fatalf("two events into an empty window of 2: %v", err)
	}
}
