package hubtest_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go/jetstream"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/metering"
)

// flatToll prices every passage of any car at pricePerPassage msat, with no
// security rule, so a benchmark's flood is charged, not frozen.
func flatToll(pricePerPassage string) []byte {
	return []byte(`{"kind":"toll","version":1,"id":"bench-flat-toll","currency":"msat","fee":{"bps":"100"},` +
		`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"` + pricePerPassage + `"}}}`)
}

// meterEnv is a harness hub with metering, one provider and payers with
// ready channels that auto-pay.
type meterEnv struct {
	h        *hubtest.Hub
	m        *hubtest.Metering
	prov     hubtest.Provider
	meter    *m2mclient.Meter
	payers   []string
	contract string
}

func newMeterEnv(tb testing.TB, payers int, batch int, price string) *meterEnv {
	tb.Helper()
	h := hubtest.Start(tb, hubtest.Config{Channels: func(c *channels.Config) {
		c.CreditLimit = 10_000_000 // events in flight between two payments
	}})
	m := h.StartMetering(tb, hubtest.MeteringConfig{})
	k := m.PublishContract(tb, flatToll(price))
	hash := k.Hash()
	env := &meterEnv{h: h, m: m, prov: m.AddProvider(tb), contract: hex.EncodeToString(hash[:])}
	env.meter = m.NewMeter(tb, env.prov, m2mclient.MeterConfig{MaxBatch: batch})
	for range payers {
		key, id := h.EnrolDevice(tb, hub.RolePayer)
		d := h.NewDevice(tb, h.Dial(tb, key), key, m2mclient.DeviceConfig{})
		h.OpenChannel(tb, d, btcutil.Amount(5_000_000))
		env.payers = append(env.payers, id)
	}
	return env
}

// events returns n toll passages spread over the payers, ids prefixed.
func (env *meterEnv) events(prefix string, n int) []metering.Event {
	now := time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano)
	evs := make([]metering.Event, n)
	for i := range evs {
		evs[i] = metering.Event{
			ID: fmt.Sprintf("%s-%d", prefix, i), Subject: env.payers[i%len(env.payers)], Time: now,
			Data: metering.Data{Contract: env.contract, Quantity: "1", Unit: "passage", VehicleClass: "car"},
		}
	}
	return evs
}

// collect reads notices until receipts cover want events; it returns the
// receipts and fails on an unpaid notice or after within.
func collect(tb testing.TB, notices <-chan m2mclient.Notice, want int, within time.Duration) []m2mclient.Receipt {
	tb.Helper()
	var got []m2mclient.Receipt
	events := 0
	timeout := time.After(within)
	for events < want {
		select {
		case n, ok := <-notices:
			if !ok {
				tb.Fatal("receipt stream ended")
			}
			if n.Unpaid != nil {
				tb.Fatalf("unpaid notice %+v", *n.Unpaid)
			}
			got = append(got, *n.Receipt)
			events += len(n.Receipt.Events)
		case <-timeout:
			tb.Fatalf("receipts covered %d of %d events after %v", events, want, within)
		}
	}
	return got
}

// TestMeteringBatchSignedEndToEnd: a provider meters batches through the
// client library (batch signatures), the hub charges each event once to
// channels that auto-pay, and the provider gets verified receipts covering
// every event, whose amounts add up to the price.
func TestMeteringBatchSignedEndToEnd(t *testing.T) {
	env := newMeterEnv(t, 2, 50, "1000")
	ctx := t.Context()
	notices, err := env.meter.Receipts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs := env.events("e2e", 120)
	if err := env.meter.Meter(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	rs := collect(t, notices, len(evs), 30*time.Second)
	seen := map[string]int{}
	var total msat.Amount
	for _, r := range rs {
		for _, id := range r.Events {
			seen[id]++
		}
		total += r.Amount
	}
	for _, e := range evs {
		if seen[e.ID] != 1 {
			t.Fatalf("event %s in %d receipts", e.ID, seen[e.ID])
		}
	}
	if want := msat.Amount(1000 * len(evs)); total != want {
		t.Fatalf("receipts pay %d msat, want %d", total, want)
	}
	// The same batches again (a retry): JetStream's dedup window drops
	// them, the intake never sees them.
	if err := env.meter.Meter(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	// The same events regrouped (other message ids, as after the dedup
	// window): the hub's own record finds every one a duplicate.
	if err := env.meter.Meter(ctx, evs[1:]...); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, 10*time.Second, "intake to see the regrouped repeats", func() bool {
		return env.m.Intake.Stats().Events >= uint64(2*len(evs)-1)
	})
	time.Sleep(200 * time.Millisecond) // anything else would show up now
	if st := env.m.Intake.Stats(); st.Events != uint64(2*len(evs)-1) || st.Charged != uint64(len(evs)) ||
		st.Duplicates != uint64(len(evs)-1) || st.DeadLettered != 0 {
		t.Fatalf("intake stats %+v", st)
	}
	in := env.meter.Income(time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if in.Gross != total || in.Events != len(evs) {
		t.Fatalf("income %+v", in)
	}
}

// BenchmarkMeteringEndToEnd measures events from the provider's Meter call
// (encode, batch signature, JetStream publish with the hub's SyncAlways
// setting) to the provider holding verified receipts for all of them:
// intake (parse, one batch signature check per message, validation),
// charging (pricing, exactly-once record), payment requests auto-paid by
// four devices over BOLT 8, receipts back over NATS. One op is one event.
// The ceiling sub-benchmark publishes the same batch messages to a plain
// stream of the same server with nothing consuming them: the bus's limit,
// in events/s, in the same run.
func BenchmarkMeteringEndToEnd(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			env := newMeterEnv(b, 4, batch, "1")
			b.Run("ceiling", func(b *testing.B) { benchCeiling(b, env, batch) })
			b.Run("e2e", func(b *testing.B) { benchE2E(b, env, batch) })
		})
	}
}

func benchE2E(b *testing.B, env *meterEnv, batch int) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	notices, err := env.meter.Receipts(ctx)
	if err != nil {
		b.Fatal(err)
	}
	evs := env.events(fmt.Sprintf("e2e-%d-%d", batch, time.Now().UnixNano()), b.N)
	base := env.m.Intake.Stats().Events
	b.ResetTimer()
	start := time.Now()
	// When the intake has acknowledged every event (charged durably):
	// the part of the time before payments and receipts.
	intakeDone := make(chan time.Duration, 1)
	go func() {
		for env.m.Intake.Stats().Events < base+uint64(b.N) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		intakeDone <- time.Since(start)
	}()
	// Two publishers: each Meter call waits for one JetStream ack at a
	// time, and an fsynced ack takes a disk round trip.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	half := (len(evs) / 2 / batch) * batch
	for _, part := range [][]metering.Event{evs[:half], evs[half:]} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := env.meter.Meter(ctx, part...); err != nil {
				errs <- err
			}
		}()
	}
	collect(b, notices, b.N, 5*time.Minute)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/(<-intakeDone).Seconds(), "charged-events/s")
}

func benchCeiling(b *testing.B, env *meterEnv, batch int) {
	ctx := b.Context()
	js, err := jetstream.New(env.m.Conn, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "CEILING", Subjects: []string{"ceiling.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		b.Fatal(err)
	}
	// The same bodies the e2e run publishes: batch events, batch-signed.
	evs := env.events("ceiling", batch)
	for i := range evs {
		evs[i].Source, evs[i].SpecVersion, evs[i].Type = env.prov.ID, metering.SpecVersion, metering.EventType
	}
	body, err := metering.EncodeBatch(evs)
	if err != nil {
		b.Fatal(err)
	}
	msgs := (b.N + batch - 1) / batch
	b.ResetTimer()
	start := time.Now()
	for range msgs {
		if _, err := js.PublishAsync("ceiling.x", body, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(msgs*batch)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
	if err := js.DeleteStream(ctx, "CEILING"); err != nil {
		b.Fatal(err)
	}
}
