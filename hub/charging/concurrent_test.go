package charging_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
)

// gatedDevices holds the first lookup of one device until released, as a
// slow registry would.
type gatedDevices struct {
	channels.Devices
	slow     string
	entered  chan struct{}
	release  chan struct{}
	gateOnce sync.Once
}

func (g *gatedDevices) Device(ctx context.Context, id string) (hub.Device, error) {
	if id == g.slow {
		g.gateOnce.Do(func() {
			close(g.entered)
			<-g.release
		})
	}
	return g.Devices.Device(ctx, id)
}

// result is what one ChargeUsage call returned.
type result struct {
	out []charging.Outcome
	err error
}

// chargeAsync charges evs in a goroutine of its own and returns where the
// result arrives.
func chargeAsync(chg *charging.Service, evs ...charging.Usage) <-chan result {
	done := make(chan result, 1)
	go func() {
		out, err := chg.ChargeUsage(context.Background(), evs)
		done <- result{out, err}
	}()
	return done
}

// otherPayerNotHeld fails t unless the other payer's one-event batch is
// charged while a gated batch waits on its what, then releases the gate.
func otherPayerNotHeld(t *testing.T, done <-chan result, release chan struct{}, what string) {
	t.Helper()
	defer close(release)
	select {
	case r := <-done:
		if r.err != nil || len(r.out) != 1 || !r.out[0].Charged {
			t.Fatalf("other payer's batch: %+v, %v", r.out, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a batch waited on another batch's %s", what)
	}
}

// TestChargeUsageReadsOutsideItsLock: a batch waiting on a slow device
// lookup does not hold up another intake worker's batch.
func TestChargeUsageReadsOutsideItsLock(t *testing.T) {
	env := newChargeEnv(t, 1_000_000)
	k := env.publish("toll")
	other := env.h.Enrol(hub.RolePayer)
	gate := &gatedDevices{Devices: env.h.Reg, slow: env.payer.ID, entered: make(chan struct{}), release: make(chan struct{})}
	chg, err := charging.New(charging.Config{
		Contracts: env.h.Store, Charges: env.h.Store, Devices: gate, Channels: env.h.Ch, Freezer: env.h.Reg,
		Publisher: env.pub, Clock: env.clock, FlushInterval: time.Hour, Logger: chantest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chg.Close() })

	slowDone := chargeAsync(chg, env.event(k, "toll", "slow-1"))
	<-gate.entered
	fast := env.event(k, "toll", "fast-1")
	fast.Payer = other.ID
	otherPayerNotHeld(t, chargeAsync(chg, fast), gate.release, "device lookup")
	r := <-slowDone
	if r.err != nil || len(r.out) != 1 || !r.out[0].Charged || r.out[0].Status != hub.ChargeOwed {
		t.Fatalf("slow payer's batch: %+v, %v", r.out, r.err)
	}
}

// gatedFreezer holds the first freeze until released, as a slow durable
// write would.
type gatedFreezer struct {
	charging.Freezer
	entered  chan struct{}
	release  chan struct{}
	gateOnce sync.Once
}

func (g *gatedFreezer) Freeze(ctx context.Context, id, actor, reason string) (hub.Device, error) {
	g.gateOnce.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Freezer.Freeze(ctx, id, actor, reason)
}

// TestChargeUsageFreezesOutsideItsLock: a batch whose security rule is
// freezing a party (a durable write) does not hold up another intake
// worker's batch, and the freeze still lands before the batch returns.
func TestChargeUsageFreezesOutsideItsLock(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("toll") // max 4 events per device per 60 s
	other := env.h.Enrol(hub.RolePayer)
	gate := &gatedFreezer{Freezer: env.h.Reg, entered: make(chan struct{}), release: make(chan struct{})}
	chg, err := charging.New(charging.Config{
		Contracts: env.h.Store, Charges: env.h.Store, Devices: env.h.Reg, Channels: env.h.Ch, Freezer: gate,
		Publisher: env.pub, Clock: env.clock, FlushInterval: time.Hour, Logger: chantest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chg.Close() })

	var flood []charging.Usage
	for i := range 6 {
		flood = append(flood, env.event(k, "toll", "flood-"+string(rune('a'+i))))
	}
	floodDone := chargeAsync(chg, flood...)
	<-gate.entered
	fast := env.event(k, "toll", "fast-1")
	fast.Payer = other.ID
	otherPayerNotHeld(t, chargeAsync(chg, fast), gate.release, "freeze")
	r := <-floodDone
	if r.err != nil || len(r.out) != 6 {
		t.Fatalf("flood: %+v, %v", r.out, r.err)
	}
	for i := range 4 {
		if !r.out[i].Charged {
			t.Fatalf("event %d: %+v", i, r.out[i])
		}
	}
	if r.out[4].Rejected != charging.RejectSecurity || r.out[5].Rejected != charging.RejectFrozen {
		t.Fatalf("5th and 6th events: %+v, %+v", r.out[4], r.out[5])
	}
	if d, err := env.h.Reg.Device(context.Background(), env.payer.ID); err != nil || d.Status != hub.StatusFrozen {
		t.Fatalf("payer after the batch: %+v %v", d, err)
	}
}
