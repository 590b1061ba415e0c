package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/metering"
)

// TestUsageIDsPerProvider runs the attack on the usage stream's
// de-duplication through the real hubd and the provider client: JetStream
// de-duplicates on Nats-Msg-Id across every provider's subject, so a
// provider that publishes under the ids another provider's events will
// have could get them answered as duplicates, acknowledged to the victim
// and never charged. The payer has no channel, so every charge is recorded
// unpaid at 1,000 msat and the income counts charges, whatever payments do.
func TestUsageIDsPerProvider(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd with its regtest btcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := startMeterHub(t, t.TempDir())
	flat := h.publish(t, ctx, flatContract)
	_, payerID := h.enrol(t, ctx, "car", hub.RolePayer)
	at := rfc(time.Now().UTC().Add(-time.Minute))
	passage := func(id string) metering.Event {
		return metering.Event{ID: id, Subject: payerID, Time: at,
			Data: metering.Data{Contract: flat, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
	}
	evil := h.addProvider(t, ctx, nil, "toll-gantry")
	victim := h.addProvider(t, ctx, nil, "toll-gantry")
	charged := func(t *testing.T, p *meterProvider, events int) {
		t.Helper()
		h.drained(t, ctx)
		if in := h.income(t, ctx, p.id); in.Events != events || in.Unpaid != msat.Amount(events)*1000 {
			t.Fatalf("%s: %d charges (%d msat unpaid), want %d", p.id, in.Events, in.Unpaid, events)
		}
	}

	t.Run("OtherProviderSquatsTheID", func(t *testing.T) {
		// The evil provider publishes first under the ids the victim's
		// event session-413 would travel under.
		ejs, err := jetstream.New(evil.nc)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range []string{"session-413", victim.id + "/session-413"} {
			ev := passage(fmt.Sprint("squat-", i))
			ev.Source, ev.SpecVersion, ev.Type = evil.id, metering.SpecVersion, metering.EventType
			if err := metering.Sign(&ev, evil.key); err != nil {
				t.Fatal(err)
			}
			body, err := metering.EncodeBatch([]metering.Event{ev})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ejs.Publish(ctx, metering.UsageSubject(evil.id), body, jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
		}
		victim.send(t, ctx, passage("session-413"))
		charged(t, victim, 1)
		// The squatting messages carry ids that are not their own:
		// refused, with the reason, on the evil provider's dead letters.
		for _, id := range []string{"squat-0", "squat-1"} {
			if reason, detail := h.deadLetter(t, ctx, evil.id, id); reason != metering.ReasonMsgID {
				t.Fatalf("%s dead-lettered %q (%s), want %s", id, reason, detail, metering.ReasonMsgID)
			}
		}
		charged(t, evil, 0)
	})

	t.Run("NewProviderIsNotAnsweredDuplicate", func(t *testing.T) {
		// The victim sends 18 events with plain ids, alone and in pairs;
		// a provider enrolled after it sends the same ids at once.
		var evs []metering.Event
		for i := range 18 {
			evs = append(evs, passage(fmt.Sprint(i)))
		}
		for i := 0; i < len(evs); i += 1 + i%2 {
			victim.send(t, ctx, evs[i:min(len(evs), i+1+i%2)]...)
		}
		newcomer := h.addProvider(t, ctx, nil, "toll-gantry")
		for i := 0; i < len(evs); i += 1 + i%2 {
			newcomer.send(t, ctx, evs[i:min(len(evs), i+1+i%2)]...)
		}
		charged(t, newcomer, 18)
		charged(t, victim, 1+18)
	})

	t.Run("SameIDOtherContentDeadLettered", func(t *testing.T) {
		// Another passage (a second later) under the charged id.
		other := passage("session-413")
		other.Time = rfc(time.Now().UTC().Add(-time.Minute + time.Second))
		victim.send(t, ctx, other)
		h.drained(t, ctx)
		reason, detail := h.deadLetter(t, ctx, victim.id, "session-413")
		if reason != charging.RejectIDConflict || !strings.Contains(detail, "session-413") {
			t.Fatalf("dead-lettered %q (%s), want %s naming the id", reason, detail, charging.RejectIDConflict)
		}
		charged(t, victim, 1+18)
	})

	t.Run("SameContentChargedOnceAfterRestart", func(t *testing.T) {
		h.p.stop(t)
		h.hub.Close()
		h.start()
		h.connectProvider(t, ctx, victim)
		// The same event again after the restart, in a message with a new
		// one: another Nats-Msg-Id, so no JetStream window can catch it;
		// the hub's own record finds it charged.
		before := h.usageMsgs(t, ctx)
		victim.send(t, ctx, passage("session-413"), passage("after-restart"))
		if got := h.usageMsgs(t, ctx) - before; got != 1 {
			t.Fatalf("the usage stream took %d messages, want 1", got)
		}
		charged(t, victim, 1+18+1)
	})
}
