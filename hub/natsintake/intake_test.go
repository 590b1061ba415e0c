package natsintake_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPermissions(t *testing.T) {
	e := newEnv(t, false)
	a, b := e.addProvider(), e.addProvider()
	errs := make(chan error, 8)
	nc := e.connect(a, errs)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("OK_PublishOwnSubject", func(t *testing.T) {
		ack := e.publish(js, metering.UsageSubject(a.dev.ID), e.event(a, "own-1"))
		if ack.Stream != metering.UsageStream {
			t.Fatalf("stored in %q", ack.Stream)
		}
	})
	t.Run("ErrPermission_PublishOtherSubject", func(t *testing.T) {
		if err := nc.Publish(metering.UsageSubject(b.dev.ID), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mustPermissionError(t, errs, "publish", metering.UsageSubject(b.dev.ID))
		// Through JetStream too: no acknowledgement, nothing stored.
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if _, err := js.Publish(short, metering.UsageSubject(b.dev.ID), []byte(`{}`)); err == nil {
			t.Fatal("publish on another provider's subject was acknowledged")
		}
		s, err := e.js.Stream(ctx, metering.UsageStream)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetLastMsgForSubject(ctx, metering.UsageSubject(b.dev.ID)); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("stream holds a message on %s: %v", b.dev.ID, err)
		}
	})
	t.Run("ErrPermission_SubscribeOtherReceipts", func(t *testing.T) {
		drain(errs)
		sub, err := nc.SubscribeSync(metering.ReceiptsSubject(b.dev.ID))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mustPermissionError(t, errs, "subscription", metering.ReceiptsSubject(b.dev.ID))
		if err := e.nc.Publish(metering.ReceiptsSubject(b.dev.ID), []byte("secret")); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
			t.Fatalf("read another provider's receipt %q", m.Data)
		}
	})
	t.Run("OK_ReceiptsThroughOwnConsumer", func(t *testing.T) {
		for _, p := range []provider{a, b} {
			if _, err := e.js.Publish(ctx, metering.ReceiptsSubject(p.dev.ID), []byte("for "+p.dev.ID)); err != nil {
				t.Fatal(err)
			}
		}
		c, err := js.Consumer(ctx, metering.ReceiptsStream, metering.ReceiptsConsumer(a.dev.ID))
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Next(jetstream.FetchMaxWait(3 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data()) != "for "+a.dev.ID {
			t.Fatalf("got %q", m.Data())
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
			t.Fatal("a second receipt arrived for a")
		}
	})
	t.Run("ErrPermission_OtherConsumer", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := js.Consumer(short, metering.ReceiptsStream, metering.ReceiptsConsumer(b.dev.ID)); err == nil {
			t.Fatal("a bound to b's receipts consumer")
		}
		if _, err := js.CreateOrUpdateConsumer(short, metering.ReceiptsStream, jetstream.ConsumerConfig{
			Durable: "sneaky", FilterSubject: metering.ReceiptsSubject(b.dev.ID),
		}); err == nil {
			t.Fatal("a created a consumer on b's receipts")
		}
	})
	t.Run("ErrAuthorization_Removed", func(t *testing.T) {
		if err := e.issuer.RemoveNATS(ctx, b.dev.ID); err != nil {
			t.Fatal(err)
		}
		opt, err := nats.NkeyOptionFromSeed(b.seed)
		if err != nil {
			t.Fatal(err)
		}
		if nc, err := nats.Connect(e.srv.ClientURL(), opt, nats.NoReconnect()); err == nil {
			nc.Close()
			t.Fatal("a removed provider connected")
		}
	})
}

func mustPermissionError(t *testing.T, errs <-chan error, kind, subject string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
			t.Fatalf("got %v, want a %s permission violation on %s", err, kind, subject)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("no permission violation for %s on %s", kind, subject)
	}
}

func drain(errs chan error) {
	for {
		select {
		case <-errs:
		default:
			return
		}
	}
}

func TestDeadLetters(t *testing.T) {
	e := newEnv(t, false)
	a, revoked := e.addProvider(), e.addProvider()
	ctx := context.Background()
	c := newCharger()
	c.reject = func(u charging.Usage) (string, string) {
		switch {
		case hex.EncodeToString(u.Contract[:]) != testContract:
			return "unknown-contract", "no contract " + hex.EncodeToString(u.Contract[:])
		case u.Payer == "dev-unknown":
			return "unknown-device", "no device " + u.Payer
		}
		return "", ""
	}
	in := e.intake(e.nc, c, nil)
	js, err := jetstream.New(e.connect(a, nil))
	if err != nil {
		t.Fatal(err)
	}

	good := e.event(a, "good")
	forged := e.event(a, "forged")
	forged.Data.Quantity = "1000" // after signing
	other := e.event(revoked, "claims-other-source")
	future := e.event(a, "future")
	future.Time = e.now.Add(time.Hour).Format(time.RFC3339)
	_ = metering.Sign(&future, a.key)
	contract := e.event(a, "unknown-contract")
	contract.Data.Contract = strings.Repeat("ab", 32)
	_ = metering.Sign(&contract, a.key)
	device := e.event(a, "unknown-device")
	device.Subject = "dev-unknown"
	_ = metering.Sign(&device, a.key)
	e.publish(js, metering.UsageSubject(a.dev.ID), good, forged, other, future, contract, device)
	e.publishRaw(js, metering.UsageSubject(a.dev.ID), []byte(`{"id":1}`), "junk")

	// A revoked provider's events are refused even though NATS still
	// admits it (its credentials were not removed).
	if _, err := e.reg.Revoke(ctx, revoked.dev.ID, "test", "stolen"); err != nil {
		t.Fatal(err)
	}
	rjs, err := jetstream.New(e.connect(revoked, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(rjs, metering.UsageSubject(revoked.dev.ID), e.event(revoked, "after-revoke"))

	waitFor(t, "three messages handled", func() bool { return in.Stats().Messages == 3 })
	if c.count(a.dev.ID, "good") != 1 || c.total() != 1 {
		t.Fatalf("charger saw %v, want only the good event", c.seen)
	}
	want := map[string]string{ // event id (or raw body) -> reason
		"forged":              metering.ReasonSignature,
		"claims-other-source": metering.ReasonSourceMismatch,
		"future":              metering.ReasonFuture,
		"unknown-contract":    "unknown-contract",
		"unknown-device":      "unknown-device",
		`{"id":1}`:            metering.ReasonMalformed,
		"after-revoke":        metering.ReasonSourceInactive,
	}
	got := map[string]string{}
	for _, m := range e.deadLetters() {
		key := string(m.Data())
		if evs, err := metering.ParseBatch(m.Data()); err == nil {
			key = evs[0].ID
		}
		got[key] = m.Headers().Get(metering.HeaderReason)
		if m.Headers().Get(metering.HeaderDetail) == "" {
			t.Errorf("%s: no detail", key)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("dead letters %v, want %v", got, want)
	}
	for k, r := range want {
		if got[k] != r {
			t.Errorf("%s: reason %q, want %q", k, got[k], r)
		}
	}
	st := in.Stats()
	if st.Charged != 1 || st.DeadLettered != 7 || st.Malformed != 1 || st.Naks != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDuplicates(t *testing.T) {
	e := newEnv(t, false)
	a := e.addProvider()
	c := newCharger()
	in := e.intake(e.nc, c, nil)
	js, err := jetstream.New(e.connect(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	ev := e.event(a, "once")
	subj := metering.UsageSubject(a.dev.ID)
	// Three quick retries of the same message: JetStream keeps one.
	for i := range 3 {
		ack := e.publish(js, subj, ev)
		if ack.Duplicate != (i > 0) {
			t.Fatalf("publish %d: duplicate=%v", i, ack.Duplicate)
		}
	}
	// The same event in another batch (another Nats-Msg-Id) passes the
	// stream's window: the charger's durable record catches it.
	e.publish(js, subj, ev, e.event(a, "second"))
	waitFor(t, "two messages", func() bool { return in.Stats().Messages == 2 })
	st := in.Stats()
	if st.Charged != 2 || st.Duplicates != 1 || st.Events != 3 {
		t.Fatalf("stats %+v, want 2 charged, 1 duplicate of 3 events", st)
	}
	if len(e.deadLetters()) != 0 {
		t.Fatal("a duplicate was dead-lettered")
	}
}

func TestChargeErrorRedelivers(t *testing.T) {
	e := newEnv(t, false)
	a := e.addProvider()
	c := newCharger()
	c.failures = 2
	in := e.intake(e.nc, c, nil)
	js, err := jetstream.New(e.connect(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(js, metering.UsageSubject(a.dev.ID), e.event(a, "retry"))
	waitFor(t, "the message acked", func() bool { return in.Stats().Messages == 1 })
	st := in.Stats()
	if st.Naks != 2 || st.ChargeErrors != 2 || st.Charged != 1 || c.count(a.dev.ID, "retry") != 1 {
		t.Fatalf("stats %+v, charger %v", st, c.seen)
	}
	mustDrained(t, e)
}

// mustDrained checks the intake's consumer has nothing pending or unacked.
func mustDrained(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitFor(t, "consumer drained", func() bool {
		cons, err := e.js.Consumer(ctx, metering.UsageStream, "hub-intake")
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.NumAckPending == 0 && info.NumPending == 0
	})
}

// TestAckOnlyAfterCharge kills the intake's connection while Charge runs:
// the charge then completes but its ack cannot reach JetStream, so the
// next intake gets the message again, and the charger's record turns it
// into a duplicate. Nothing is lost and nothing is charged twice.
func TestAckOnlyAfterCharge(t *testing.T) {
	e := newEnv(t, false)
	a := e.addProvider()
	c := newCharger()
	c.block = make(chan struct{})
	c.entered = make(chan struct{}, 1)
	nc1 := e.connectHub()
	in1 := e.intake(nc1, c, func(cfg *natsintake.Config) { cfg.AckWait = time.Second })
	js, err := jetstream.New(e.connect(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(js, metering.UsageSubject(a.dev.ID), e.event(a, "crash"))
	select {
	case <-c.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("charge never started")
	}
	nc1.Close() // the process dies mid-charge
	close(c.block)
	if err := in1.Close(); err != nil {
		t.Fatal(err)
	}
	if in1.Stats().Messages != 0 {
		t.Fatal("the first intake counted the message as acknowledged")
	}
	c.mu.Lock()
	c.block, c.entered = nil, nil
	c.mu.Unlock()

	in2 := e.intake(e.connectHub(), c, func(cfg *natsintake.Config) { cfg.AckWait = time.Second })
	waitFor(t, "redelivery handled", func() bool { return in2.Stats().Messages == 1 })
	if st := in2.Stats(); st.Duplicates != 1 || st.Charged != 0 {
		t.Fatalf("second intake stats %+v, want the event as a duplicate", st)
	}
	if c.count(a.dev.ID, "crash") != 2 {
		t.Fatalf("charger saw the event %d times, want 2 (charge, then duplicate)", c.count(a.dev.ID, "crash"))
	}
	mustDrained(t, e)
}

// TestMsgIDScopedToProvider is the attack of a provider on another's
// de-duplication: JetStream drops any message whose Nats-Msg-Id it saw in
// its window, across every usage.* subject. Provider E publishes
// messages under the ids provider V's events would have had (the event id,
// and V's id prefixed): V's event is still stored, not answered as a
// duplicate, and charged; E's messages, whose ids are not their own, are
// dead-lettered bad-msg-id. A new provider whose event ids others have
// used is not answered duplicate either.
func TestMsgIDScopedToProvider(t *testing.T) {
	e := newEnv(t, false)
	evil, victim, fresh := e.addProvider(), e.addProvider(), e.addProvider()
	c := newCharger()
	in := e.intake(e.nc, c, nil)
	ejs := e.providerJS(evil)
	squat := []string{"session-413", victim.dev.ID + "/session-413"}
	for i, id := range squat {
		body, err := metering.EncodeBatch([]metering.Event{e.event(evil, fmt.Sprint("squat-", i))})
		if err != nil {
			t.Fatal(err)
		}
		e.publishRaw(ejs, metering.UsageSubject(evil.dev.ID), body, id)
	}
	vjs := e.providerJS(victim)
	if ack := e.publish(vjs, metering.UsageSubject(victim.dev.ID), e.event(victim, "session-413")); ack.Duplicate {
		t.Fatal("the victim's event was answered duplicate: JetStream dropped it unseen")
	}
	// A new provider reusing ids others sent within the window, in
	// single messages and in batches.
	fjs := e.providerJS(fresh)
	for i := range 18 {
		evs := []metering.Event{e.event(fresh, fmt.Sprint(i))}
		vevs := []metering.Event{e.event(victim, fmt.Sprint(i))}
		if i%2 == 1 {
			evs = append(evs, e.event(fresh, fmt.Sprint(i, "b")))
			vevs = append(vevs, e.event(victim, fmt.Sprint(i, "b")))
		}
		e.publish(vjs, metering.UsageSubject(victim.dev.ID), vevs...)
		if ack := e.publish(fjs, metering.UsageSubject(fresh.dev.ID), evs...); ack.Duplicate {
			t.Fatalf("the new provider's message %d was answered duplicate", i)
		}
	}
	waitFor(t, "every message handled", func() bool { return in.Stats().Messages == 2+1+2*18 })
	if c.count(victim.dev.ID, "session-413") != 1 || c.count(fresh.dev.ID, "17b") != 1 {
		t.Fatalf("charger saw %v", c.seen)
	}
	if c.count(evil.dev.ID, "squat-0")+c.count(evil.dev.ID, "squat-1") != 0 {
		t.Fatal("a message under another id than its own was charged")
	}
	dead := e.deadLetters()
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want the 2 squatting messages", len(dead))
	}
	for _, m := range dead {
		if r := m.Headers().Get(metering.HeaderReason); r != metering.ReasonMsgID || m.Subject() != metering.DLQSubject(evil.dev.ID) {
			t.Fatalf("dead letter on %s: reason %q (%s)", m.Subject(), r, m.Headers().Get(metering.HeaderDetail))
		}
	}
}

// TestNoMsgIDAccepted: a message without Nats-Msg-Id claims no
// de-duplication and is charged; the charger's record catches a resend.
func TestNoMsgIDAccepted(t *testing.T) {
	e := newEnv(t, false)
	a := e.addProvider()
	c := newCharger()
	in := e.intake(e.nc, c, nil)
	js := e.providerJS(a)
	body, err := metering.EncodeBatch([]metering.Event{e.event(a, "no-header")})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := js.Publish(t.Context(), metering.UsageSubject(a.dev.ID), body); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both messages handled", func() bool { return in.Stats().Messages == 2 })
	if st := in.Stats(); st.Charged != 1 || st.Duplicates != 1 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
}
