package charging_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// recPublisher records what charging publishes to providers. It stands in
// for the NATS connection in these unit tests; the end-to-end test uses
// the real embedded JetStream.
type recPublisher struct {
	mu   sync.Mutex
	msgs []published
}

type published struct {
	subject string
	msg     charging.ProviderMessage
}

func (p *recPublisher) Publish(_ context.Context, subject string, data []byte) error {
	var m charging.ProviderMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	p.mu.Lock()
	p.msgs = append(p.msgs, published{subject, m})
	p.mu.Unlock()
	return nil
}

func (p *recPublisher) take(kind string) []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out, rest []published
	for _, m := range p.msgs {
		if m.msg.Kind == kind {
			out = append(out, m)
		} else {
			rest = append(rest, m)
		}
	}
	p.msgs = rest
	return out
}

// chargeEnv is a hub (real bbolt store, registry, BOLT 8 server, channel
// manager on a fake chain) with charging on top, a payer with a funded
// channel and a provider, both connected over raw wire sessions.
type chargeEnv struct {
	t     *testing.T
	h     *chantest.Harness
	chg   *charging.Service
	pub   *recPublisher
	clock *clock.TestClock
	payer *chantest.Device
	prov  *chantest.Device
	ch    *chantest.Channel
}

var chargeStart = time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)

// testInstance owns the charge claims of chargeEnv's charging, before and
// after a restart: the bbolt store keeps claims in memory, so a restarted
// hubd, which opens the file again, finds none; the test keeps the store
// open and stands in the same owner for that.
const testInstance = "hubd-test"

func newChargeEnv(t *testing.T, credit msat.Amount) *chargeEnv {
	t.Helper()
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.CreditLimit = credit })
	env := &chargeEnv{t: t, h: h, pub: &recPublisher{}, clock: clock.NewTestClock(chargeStart)}
	env.payer = h.Enrol(hub.RolePayer)
	env.prov = h.Enrol(hub.RoleProvider)
	env.ch = env.payer.Open(f, 1_000_000, chantest.TestHeight+500)
	chg, err := charging.New(charging.Config{
		Contracts: h.Store, Charges: h.Store, Devices: h.Reg, Channels: h.Ch, Freezer: h.Reg,
		Publisher: env.pub, Clock: env.clock, FlushInterval: time.Hour, Logger: chantest.Quiet(), CDRs: h.Store,
		Instance: testInstance,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.chg = chg
	return env
}

// publish stores an example contract and returns it.
func (env *chargeEnv) publish(kind string) *contracts.Contract {
	env.t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", kind+".json"))
	if err != nil {
		env.t.Fatal(err)
	}
	return env.publishDoc(b)
}

// publishDoc parses and stores a contract document and returns it.
func (env *chargeEnv) publishDoc(b []byte) *contracts.Contract {
	env.t.Helper()
	k, err := contracts.Parse(b)
	if err != nil {
		env.t.Fatal(err)
	}
	err = env.h.Store.PutContract(context.Background(), hub.ContractRecord{
		Hash: k.Hash(), Kind: string(k.Kind), Name: k.ID, Version: int(k.Version), Document: k.Canonical(), Published: chargeStart,
	})
	if err != nil {
		env.t.Fatal(err)
	}
	return k
}

// event builds a usage event from an example usage record.
func (env *chargeEnv) event(k *contracts.Contract, kind, id string) charging.Usage {
	env.t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "usage", kind+".json"))
	if err != nil {
		env.t.Fatal(err)
	}
	u, err := contracts.ParseUsage(b)
	if err != nil {
		env.t.Fatal(err)
	}
	h := k.Hash()
	u.Contract = hex.EncodeToString(h[:])
	at := u.EventTime
	if at.IsZero() {
		at = u.Start
	}
	if at.IsZero() {
		at = chargeStart
	}
	return charging.Usage{ID: id, Provider: env.prov.ID, Payer: env.payer.ID, Contract: h, Time: at, Usage: u}
}

func (env *chargeEnv) charge(evs ...charging.Usage) []charging.Outcome {
	env.t.Helper()
	out, err := env.chg.ChargeUsage(context.Background(), evs)
	if err != nil {
		env.t.Fatal(err)
	}
	if len(out) != len(evs) {
		env.t.Fatalf("%d outcomes for %d events", len(out), len(evs))
	}
	return out
}

// payRequest flushes, reads the payment request the payer gets, pays it
// and returns the receipt the provider was published.
func (env *chargeEnv) payRequest(want msat.Amount) (*wire.PaymentRequest, channel.Receipt, []string) {
	env.t.Helper()
	env.chg.Flush(context.Background())
	req := chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != want || req.Payee != env.prov.ID || req.ChanID != env.ch.Op || req.HoldID != nil {
		env.t.Fatalf("payment request %+v, want %d msat to %s", req, want, env.prov.ID)
	}
	m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	id := req.ReqID
	m.ReqID = &id
	env.payer.Send(m)
	ack := chantest.Expect[*wire.PayAck](env.payer)
	env.ch.Seq++
	env.ch.Paid += req.Amount
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	env.chg.Flush(context.Background())
	got := env.pub.take(charging.ProviderMsgReceipt)
	if len(got) != 1 || got[0].subject != "receipts."+env.prov.ID {
		env.t.Fatalf("published receipts %+v", got)
	}
	raw, err := hex.DecodeString(got[0].msg.Receipt)
	if err != nil || string(raw) != string(ack.Receipt) {
		env.t.Fatalf("published receipt differs from the ack's (%v)", err)
	}
	var r channel.Receipt
	if err := r.UnmarshalBinary(raw); err != nil {
		env.t.Fatal(err)
	}
	if err := r.VerifyKey(env.h.HubKey.PubKey()); err != nil {
		env.t.Fatal(err)
	}
	if !r.CoversEvents(got[0].msg.Events) || r.Amount != want || r.Payer != env.payer.ID || r.Payee != env.prov.ID {
		env.t.Fatalf("receipt %+v does not cover %v", r, got[0].msg.Events)
	}
	return req, r, got[0].msg.Events
}

func (env *chargeEnv) stored(id string) hub.Charge {
	env.t.Helper()
	c, err := env.h.Store.Charge(context.Background(), env.prov.ID, id)
	if err != nil {
		env.t.Fatal(err)
	}
	return c
}

func TestChargingKinds(t *testing.T) {
	chantest.CheckLeaks(t)
	tests := []struct {
		kind       string
		total, fee msat.Amount
	}{
		// The figures of contracts' TestExampleUsage (docs/contracts.md),
		// except bandwidth: the hub counts the volume itself, so the
		// first 20 MB of the window are priced from 0 MB, not from the
		// example's 990.
		{"ev_charging", 3_256_000, 32_560},
		{"toll", 60_000, 300},
		{"energy", 308_000, 3_080},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			env := newChargeEnv(t, 100_000_000)
			k := env.publish(tt.kind)
			ev := env.event(k, tt.kind, "ev-1")
			out := env.charge(ev)
			if !out[0].Charged || out[0].Status != hub.ChargeOwed || out[0].Amount != tt.total {
				t.Fatalf("outcome %+v, want owed %d", out[0], tt.total)
			}
			_, r, ids := env.payRequest(tt.total)
			if r.Contract != k.Hash() || len(ids) != 1 || ids[0] != "ev-1" {
				t.Fatalf("receipt contract %x events %v", r.Contract, ids)
			}
			c := env.stored("ev-1")
			if c.Status != hub.ChargePaid || c.Amount != tt.total || c.Fee != tt.fee || c.Payer != env.payer.ID {
				t.Fatalf("stored %+v", c)
			}
		})
	}
	t.Run("bandwidth", func(t *testing.T) {
		env := newChargeEnv(t, 100_000_000)
		k := env.publish("bandwidth")
		var want msat.Amount
		var evs []charging.Usage
		for i, cum := range []string{"0", "20", "40"} {
			ev := env.event(k, "bandwidth", "bw-"+string(rune('a'+i)))
			u := ev.Usage
			u.Device, u.Provider, u.EventTime, u.CumulativeMB = env.payer.ID, env.prov.ID, ev.Time, contracts.MustDec(cum)
			b, err := contracts.Price(k, u)
			if err != nil {
				t.Fatal(err)
			}
			want += b.TotalMsat
			evs = append(evs, ev)
		}
		out := env.charge(evs...)
		var sum msat.Amount
		for _, o := range out {
			sum += o.Amount
		}
		if sum != want {
			t.Fatalf("charged %d msat, want %d (volumes 0, 20, 40 MB)", sum, want)
		}
		env.payRequest(want)
	})
	t.Run("conditional_release", func(t *testing.T) {
		for name, tc := range map[string]struct {
			readings []string
			total    msat.Amount
		}{
			"Release": {[]string{"4.5", "5.1", "6.0", "7.9"}, 27_500_000},
			"Penalty": {[]string{"4.5", "5.1", "8.3", "6.0"}, 5_500_000},
		} {
			t.Run(name, func(t *testing.T) {
				env := newChargeEnv(t, 100_000_000)
				k := env.publish("conditional_release")
				start := env.event(k, "conditional_release", "job-start")
				start.Usage.Readings = nil
				out := env.charge(start)
				if !out[0].Charged || out[0].Status != hub.ChargeHeld || out[0].Amount != 27_500_000 {
					t.Fatalf("start %+v", out[0])
				}
				end := env.event(k, "conditional_release", "job-end")
				end.Usage.End = chargeStart
				end.Usage.Readings = nil
				for _, v := range tc.readings {
					end.Usage.Readings = append(end.Usage.Readings, contracts.Reading{Time: chargeStart, Value: contracts.MustDec(v)})
				}
				out = env.charge(end)
				if !out[0].Charged || out[0].Amount != tc.total {
					t.Fatalf("end %+v, want %d", out[0], tc.total)
				}
				env.payRequest(tc.total)
				if c := env.stored("hold/shipment-4411"); c.Status != hub.ChargeUnpaid {
					t.Fatalf("hold left %s", c.Status)
				}
				// The provider's income: the end charge is what the job
				// earned; what the contract kept back from the hold is
				// withheld, and nothing is unpaid.
				in, err := env.chg.Income(t.Context(), env.prov.ID, time.Time{}, chargeStart.Add(time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				if in.Unpaid != 0 || in.Held != 0 || in.Withheld != 27_500_000-tc.total {
					t.Fatalf("income %+v: want unpaid 0, held 0, withheld %d", in, 27_500_000-tc.total)
				}
				// A second end for the same job has no hold left.
				again := end
				again.ID = "job-end-2"
				if out := env.charge(again); out[0].Rejected != charging.RejectNoHold {
					t.Fatalf("second end %+v", out[0])
				}
			})
		}
	})
}

func TestChargingDuplicates(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("toll")
	a, b := env.event(k, "toll", "p-1"), env.event(k, "toll", "p-2")
	out := env.charge(a, b, a)
	if !out[0].Charged || !out[1].Charged || !out[2].Duplicate {
		t.Fatalf("first batch %+v", out)
	}
	out = env.charge(a, b)
	if !out[0].Duplicate || !out[1].Duplicate {
		t.Fatalf("redelivery %+v", out)
	}
	// Charged once: one request for two passages.
	env.payRequest(120_000)
}

// TestChargingIDConflict: an event under an id the provider was charged
// for, with other content, is neither charged nor taken for a
// redelivery: it is rejected id-conflict (the intake dead-letters it),
// also after a restart; the true redelivery stays a duplicate.
func TestChargingIDConflict(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("toll")
	first := env.event(k, "toll", "session-413")
	first.Digest = hub.Hash{1}
	other := first
	other.Digest = hub.Hash{2}
	other.Time = first.Time.Add(time.Minute)
	out := env.charge(first, other)
	if !out[0].Charged || out[1].Rejected != charging.RejectIDConflict || out[1].Duplicate || out[1].Charged {
		t.Fatalf("same id, other content in one batch: %+v", out)
	}
	if !strings.Contains(out[1].Detail, `"session-413"`) {
		t.Fatalf("detail %q does not name the id", out[1].Detail)
	}
	env.restart()
	t.Cleanup(func() { env.chg.Close() })
	out = env.charge(other, first)
	if out[0].Rejected != charging.RejectIDConflict || !out[1].Duplicate {
		t.Fatalf("after a restart: %+v, want id-conflict then duplicate", out)
	}
	// Without digests (charges recorded before they were kept), the
	// payer, contract, time and quantity tell the events apart.
	legacy := env.event(k, "toll", "legacy-1")
	moved := legacy
	moved.Time = legacy.Time.Add(time.Second)
	out = env.charge(legacy)
	if !out[0].Charged {
		t.Fatalf("legacy %+v", out)
	}
	out = env.charge(legacy, moved)
	if !out[0].Duplicate || out[1].Rejected != charging.RejectIDConflict {
		t.Fatalf("without digests: %+v, want duplicate then id-conflict", out)
	}
	// Charged once each: one request for the two passages.
	env.payRequest(120_000)

	t.Run("SecondStartOfAHeldSession", func(t *testing.T) {
		env := newChargeEnv(t, 100_000_000)
		t.Cleanup(func() { env.chg.Close() })
		k := env.publish("conditional_release")
		start := env.event(k, "conditional_release", "job-start")
		start.Usage.Readings, start.Digest = nil, hub.Hash{3}
		again := start
		again.ID, again.Digest = "job-start-2", hub.Hash{4}
		out := env.charge(start, again, start)
		if !out[0].Charged || out[1].Rejected != charging.RejectIDConflict || !out[2].Duplicate {
			t.Fatalf("%+v: want held, id-conflict, duplicate", out)
		}
		if !strings.Contains(out[1].Detail, `session "shipment-4411"`) {
			t.Fatalf("detail %q does not name the session", out[1].Detail)
		}
	})
}

func TestChargingRejections(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("toll")
	ctx := context.Background()

	unknown := env.event(k, "toll", "r-1")
	unknown.Contract = hub.Hash{1}
	unknown.Usage.Contract = ""
	stranger := env.event(k, "toll", "r-2")
	stranger.Payer = "dev-nobody"
	// An inactive provider is refused by the intake before charging
	// (natsintake TestDeadLetters, "after-revoke").
	mismatch := env.event(k, "toll", "r-4")
	mismatch.Usage.Contract = strings.Repeat("ab", 32)
	out := env.charge(unknown, stranger, mismatch)
	for i, want := range []string{charging.RejectUnknownContract, charging.RejectUnknownDevice, charging.RejectContractMismatch} {
		if out[i].Rejected != want || out[i].Charged {
			t.Errorf("event %d: %+v, want %s", i, out[i], want)
		}
	}
	if _, err := env.h.Reg.Revoke(ctx, env.payer.ID, "test", "stolen"); err != nil {
		t.Fatal(err)
	}
	env.clock.SetTime(chargeStart.Add(2 * time.Second)) // past the device cache
	if out := env.charge(env.event(k, "toll", "r-5")); out[0].Rejected != charging.RejectRevoked {
		t.Fatalf("revoked payer: %+v", out[0])
	}
}

func TestChargingSecurityFreeze(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("toll") // max 4 events per device per 60 s
	ctx := context.Background()
	var evs []charging.Usage
	for i := range 6 {
		evs = append(evs, env.event(k, "toll", "flood-"+string(rune('a'+i))))
	}
	out := env.charge(evs...)
	for i := range 4 {
		if !out[i].Charged {
			t.Fatalf("event %d: %+v", i, out[i])
		}
	}
	if out[4].Rejected != charging.RejectSecurity || !strings.Contains(out[4].Detail, "max_event_rate") {
		t.Fatalf("5th event %+v", out[4])
	}
	if out[5].Rejected != charging.RejectFrozen {
		t.Fatalf("6th event %+v", out[5])
	}
	d, err := env.h.Reg.Device(ctx, env.payer.ID)
	if err != nil || d.Status != hub.StatusFrozen {
		t.Fatalf("payer %+v %v", d, err)
	}
	if p, _ := env.h.Reg.Device(ctx, env.prov.ID); p.Status != hub.StatusActive {
		t.Fatal("the provider was frozen too")
	}
	entries, err := env.h.Reg.Audit(ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1]
	if last.Kind != hub.AuditFreeze || last.Subject != env.payer.ID || last.Actor != "system" ||
		!strings.Contains(string(last.Detail), "security rule 0 (max_event_rate)") {
		t.Fatalf("audit entry %+v %s", last, last.Detail)
	}
	rec, err := env.h.Ch.Channel(ctx, env.ch.Op)
	if err != nil || rec.Status != hub.ChannelFrozen {
		t.Fatalf("channel %s %v", rec.Status, err)
	}
}

func TestChargingCreditLimit(t *testing.T) {
	chantest.CheckLeaks(t)
	// Room on credit for one toll passage (60,000 msat), not two.
	env := newChargeEnv(t, 100_000)
	k := env.publish("toll")
	out := env.charge(env.event(k, "toll", "c-1"), env.event(k, "toll", "c-2"))
	if out[0].Status != hub.ChargeOwed || out[1].Status != hub.ChargeUnpaid || !out[1].Charged {
		t.Fatalf("outcomes %+v", out)
	}
	got := env.pub.take(charging.ProviderMsgUnpaid)
	if len(got) != 1 {
		t.Fatalf("enforcement %+v", got)
	}
	m := got[0].msg
	if m.Payer != env.payer.ID || m.Reason != charging.UnpaidCreditLimit || m.StopService != "true" ||
		len(m.EventIDs) != 1 || m.EventIDs[0] != "c-2" {
		t.Fatalf("enforcement %+v", m)
	}
	// The owed one is still requested and paid.
	env.payRequest(60_000)

	// A payer that refuses: the provider is told to stop.
	env.charge(env.event(k, "toll", "c-3"))
	env.chg.Flush(context.Background())
	req := chantest.Expect[*wire.PaymentRequest](env.payer)
	id := req.ReqID
	env.payer.Send(&wire.ChannelError{Code: wire.ChanPolicyRefused, Message: "no", ReqID: &id, ChanID: &req.ChanID})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		env.chg.Flush(context.Background())
		if got = env.pub.take(charging.ProviderMsgUnpaid); len(got) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("refusal not handled")
		}
	}
	if got[0].msg.Reason != charging.UnpaidPolicyRefused || got[0].msg.EventIDs[0] != "c-3" {
		t.Fatalf("refusal enforcement %+v", got[0].msg)
	}
	if c := env.stored("c-3"); c.Status != hub.ChargeUnpaid {
		t.Fatalf("refused charge %s", c.Status)
	}
}

func TestChargingNoChannel(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("toll")
	other := env.h.Enrol(hub.RolePayer)
	ev := env.event(k, "toll", "n-1")
	ev.Payer = other.ID
	out := env.charge(ev)
	if out[0].Status != hub.ChargeUnpaid {
		t.Fatalf("outcome %+v", out[0])
	}
	got := env.pub.take(charging.ProviderMsgUnpaid)
	if len(got) != 1 || got[0].msg.Reason != charging.UnpaidNoChannel {
		t.Fatalf("enforcement %+v", got)
	}
}

// TestChargingReceiptsGathered: two payments to one provider answered
// before the same settle (one per contract) reach the provider as one
// "receipts" message holding both receipts, each verifiable on its own,
// and every charge is marked paid.
func TestChargingReceiptsGathered(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	toll, energy := env.publish("toll"), env.publish("energy")
	env.charge(env.event(toll, "toll", "t-1"), env.event(energy, "energy", "e-1"))
	env.chg.Flush(context.Background())
	reqs := []*wire.PaymentRequest{
		chantest.Expect[*wire.PaymentRequest](env.payer),
		chantest.Expect[*wire.PaymentRequest](env.payer),
	}
	acks := map[string]bool{}
	var total msat.Amount
	for _, req := range reqs {
		m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
		id := req.ReqID
		m.ReqID = &id
		env.payer.Send(m)
		ack := chantest.Expect[*wire.PayAck](env.payer)
		acks[hex.EncodeToString(ack.Receipt)] = true
		env.ch.Seq++
		env.ch.Paid += req.Amount
		total += req.Amount
		chantest.Expect[*wire.ReceiptNotice](env.prov)
	}
	env.chg.Flush(context.Background())
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 0 {
		t.Fatalf("%d single receipt messages, want them gathered", len(got))
	}
	got := env.pub.take(charging.ProviderMsgReceipts)
	if len(got) != 1 || got[0].subject != "receipts."+env.prov.ID || len(got[0].msg.Receipts) != 2 {
		t.Fatalf("published %+v, want one receipts message with two receipts", got)
	}
	var paid msat.Amount
	events := map[string]bool{}
	for _, pr := range got[0].msg.Receipts {
		if !acks[pr.Receipt] {
			t.Fatalf("receipt %s was not acknowledged to the payer", pr.Receipt)
		}
		raw, err := hex.DecodeString(pr.Receipt)
		if err != nil {
			t.Fatal(err)
		}
		var r channel.Receipt
		if err := r.UnmarshalBinary(raw); err != nil {
			t.Fatal(err)
		}
		if err := r.VerifyKey(env.h.HubKey.PubKey()); err != nil || !r.CoversEvents(pr.Events) {
			t.Fatalf("receipt %+v for %v: %v", r, pr.Events, err)
		}
		paid += r.Amount
		for _, id := range pr.Events {
			events[id] = true
		}
	}
	if paid != total || !events["t-1"] || !events["e-1"] || len(events) != 2 {
		t.Fatalf("receipts pay %d msat for %v, want %d for t-1 and e-1", paid, events, total)
	}
	for _, id := range []string{"t-1", "e-1"} {
		if c := env.stored(id); c.Status != hub.ChargePaid {
			t.Fatalf("charge %s is %s", id, c.Status)
		}
	}
}
