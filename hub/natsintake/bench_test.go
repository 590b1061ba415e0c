package natsintake_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkJetStreamPublishCeiling measures the embedded server alone:
// asynchronous JetStream publishes of 300-byte messages (about one signed
// event) to a file stream, one message per op, with the hub's sync setting
// (SyncAlways, every write fsynced) and with nats-server's default (sync
// every two minutes). It is the baseline for BenchmarkIntake; run both in
// one go test -bench run.
func BenchmarkJetStreamPublishCeiling(b *testing.B) {
	b.Run("sync=always", func(b *testing.B) { benchPublish(b, true) })
	b.Run("sync=default", func(b *testing.B) { benchPublish(b, false) })
}

func benchPublish(b *testing.B, syncAlways bool) {
	e := newEnv(b, syncAlways)
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "CEILING", Subjects: []string{"ceiling.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 300) // about one signed event
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := js.PublishAsync("ceiling.x", body, jetstream.WithStallWait(10*time.Second)); err != nil {
			b.Fatal(err)
		}
		_ = i
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkIntake measures events through the intake: messages of 100
// signed events published by a provider, parsed, checked against the
// registry, verified (BIP-340), validated and handed to a recording
// charger, then acknowledged. One op is one event.
func BenchmarkIntake(b *testing.B) {
	const batch = 100
	e := newEnv(b, true)
	p := e.addProvider()
	c := newCharger()
	in := e.intake(e.nc, c, nil)
	nc := e.connect(p, nil)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		b.Fatal(err)
	}
	// Sign outside the timer: signing is the provider's cost.
	msgs := (b.N + batch - 1) / batch
	bodies := make([]*nats.Msg, msgs)
	for m := range msgs {
		evs := make([]metering.Event, 0, batch)
		for i := range min(batch, b.N-m*batch) {
			evs = append(evs, e.event(p, fmt.Sprintf("b%d-%d", m, i)))
		}
		body, err := metering.EncodeBatch(evs)
		if err != nil {
			b.Fatal(err)
		}
		msg := nats.NewMsg(metering.UsageSubject(p.dev.ID))
		msg.Data = body
		msg.Header.Set(jetstream.MsgIDHeader, metering.MsgID(p.dev.ID, body, ""))
		bodies[m] = msg
	}
	b.ResetTimer()
	start := time.Now()
	for _, m := range bodies {
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for in.Stats().Events < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("intake stalled at %+v", in.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	if st := in.Stats(); st.Charged != uint64(b.N) || st.DeadLettered != 0 {
		b.Fatalf("stats %+v", st)
	}
}
