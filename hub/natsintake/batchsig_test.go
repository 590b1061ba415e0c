package natsintake_test

import (
	"testing"

	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBatchSignature sends batches whose events carry no m2mhubsig of
// their own, authenticated by the M2M-Batch-Sig header instead.
func TestBatchSignature(t *testing.T) {
	e := newEnv(t, false)
	a, b := e.addProvider(), e.addProvider()
	c := newCharger()
	in := e.intake(e.nc, c, nil)
	js, err := jetstream.New(e.connect(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	unsigned := func(ids ...string) []metering.Event {
		evs := make([]metering.Event, len(ids))
		for i, id := range ids {
			evs[i] = e.event(a, id)
			evs[i].Sig = ""
		}
		return evs
	}
	send := func(evs []metering.Event, sig string) {
		t.Helper()
		body, err := metering.EncodeBatch(evs)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(metering.UsageSubject(a.dev.ID))
		m.Data = body
		m.Header.Set(jetstream.MsgIDHeader, metering.MsgID(a.dev.ID, body, sig))
		if sig != "" {
			m.Header.Set(metering.HeaderBatchSig, sig)
		}
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	sign := func(evs []metering.Event, p provider) string {
		s, err := metering.SignBatch(evs, p.key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// OK: one valid batch signature, no event signatures.
	good := unsigned("ok-1", "ok-2", "ok-3")
	send(good, sign(good, a))
	// A batch signed by another provider's key: every event refused.
	forged := unsigned("forged-1", "forged-2")
	send(forged, sign(forged, b))
	// Signed, then one event changed: every event refused, since the
	// signature no longer says who wrote any of them.
	tampered := unsigned("tampered-1", "tampered-2")
	sig := sign(tampered, a)
	tampered[1].Data.Quantity = "999"
	send(tampered, sig)
	// No batch signature and no event signatures: refused one by one.
	send(unsigned("none-1"), "")

	waitFor(t, "four messages handled", func() bool { return in.Stats().Messages == 4 })
	for _, id := range []string{"ok-1", "ok-2", "ok-3"} {
		if c.count(a.dev.ID, id) != 1 {
			t.Fatalf("%s charged %d times", id, c.count(a.dev.ID, id))
		}
	}
	if c.total() != 3 {
		t.Fatalf("charger saw %v, want only ok-1..3", c.seen)
	}
	got := map[string]string{}
	for _, m := range e.deadLetters() {
		evs, err := metering.ParseBatch(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		got[evs[0].ID] = m.Headers().Get(metering.HeaderReason)
	}
	for _, id := range []string{"forged-1", "forged-2", "tampered-1", "tampered-2", "none-1"} {
		if got[id] != metering.ReasonSignature {
			t.Errorf("%s: reason %q, want %q", id, got[id], metering.ReasonSignature)
		}
	}
	if len(got) != 5 {
		t.Fatalf("dead letters %v", got)
	}
}
