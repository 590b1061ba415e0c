package m2mclient_test

import (
	"fmt"

	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// ExampleDevice_Pay opens a channel from a car to a hub and pays a charge
// point from it: each Pay is one signed channel state, answered by the
// hub's receipt. The hub is a real one running in this process on a btcd
// regtest node (hubtest), so the channel is funded on chain first.
func ExampleDevice_Pay() {
	run := hubtest.NewRunner()
	defer run.Close()
	h := hubtest.Start(run, hubtest.Config{})
	carKey, _ := h.EnrolDevice(run, hub.RolePayer)
	_, chargePoint := h.EnrolDevice(run, hub.RoleProvider)

	// The car's side: a session pinned to the hub's key, and a device
	// that pays within its spending policy.
	sess := h.Dial(run, carKey)
	car, err := m2mclient.NewDevice(sess, m2mclient.DeviceConfig{
		Key: carKey, HubKey: h.PubKey(), Params: h.Params(), Dir: run.TempDir(),
		Policy: m2mclient.Policy{
			MaxPerPayment: 1_000_000, MaxPerHour: 5_000_000, AllowedProviders: []string{chargePoint},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer car.Close()
	ch := h.OpenChannel(run, car, 100_000) // 100,000 sat, funded and confirmed

	ctx := run.Context()
	for _, use := range []struct {
		amount msat.Amount
		memo   string
	}{{250_000, "2.5 kWh"}, {120_000, "1.2 kWh"}} {
		r, err := car.Pay(ctx, ch.ID, chargePoint, use.amount, use.memo)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("receipt %d: %s for %q, %s paid in all\n", r.Seq, r.Amount, r.Memo, r.Paid)
	}
	// A payment past the policy never leaves the device.
	_, err = car.Pay(ctx, ch.ID, chargePoint, 2_000_000, "too much")
	fmt.Println("over the limit:", err != nil)
	// Output:
	// receipt 1: 250000 mSAT for "2.5 kWh", 250000 mSAT paid in all
	// receipt 2: 120000 mSAT for "1.2 kWh", 370000 mSAT paid in all
	// over the limit: true
}
