package m2mclient_test

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/metering"
)

// exampleToll is a toll table: 1,000 msat a passage for a car, 1% to the
// hub.
const exampleToll = `{"kind":"toll","version":1,"id":"example-toll","currency":"msat","fee":{"bps":"100"},` +
	`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000"}}}`

// ExampleMeter_Meter has a toll gantry meter two passages of a car over
// NATS: the hub prices them with the published toll table, charges the
// car's channel (the car's device pays within its policy), and sends the
// gantry a signed receipt naming the events it covers. The hub, its NATS
// and the chain run in this process (hubtest).
func ExampleMeter_Meter() {
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

	// The gantry's side: its Meter over its own NATS credentials.
	meter := met.NewMeter(run, gantry, m2mclient.MeterConfig{})
	ctx := run.Context()
	notices, err := meter.Receipts(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	hash := toll.Hash()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var passages []metering.Event
	for _, id := range []string{"passage-1", "passage-2"} {
		passages = append(passages, metering.Event{ID: id, Subject: carID, Time: now, Data: metering.Data{
			Contract: hex.EncodeToString(hash[:]), Quantity: "1", Unit: "passage", VehicleClass: "car",
		}})
	}
	if err := meter.Meter(ctx, passages...); err != nil {
		fmt.Println(err)
		return
	}
	// Receipts may cover one or both passages each.
	covered, paid := 0, uint64(0)
	for covered < len(passages) {
		select {
		case n := <-notices:
			if n.Receipt != nil {
				covered += len(n.Receipt.Events)
				paid += uint64(n.Receipt.Amount)
			}
		case <-time.After(30 * time.Second):
			fmt.Println("no receipt")
			return
		}
	}
	fmt.Printf("%d passages paid, %d msat from the car\n", covered, paid)
	// Output:
	// 2 passages paid, 2000 msat from the car
}
