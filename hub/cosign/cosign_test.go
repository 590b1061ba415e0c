package cosign_test

import (
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcwire "github.com/btcsuite/btcd/wire"
	"go.uber.org/goleak"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// TestSettleOverSessions settles one epoch with real devices running the
// client library over BOLT 8: two online payers co-sign their inputs, an
// offline payer is settled by its claim signature, and a provider without
// a channel is paid to the payout script an operator registered. Every
// device's channel then moves to its next outpoint (the offline one when
// it reconnects), and the next payment on it works.
func TestSettleOverSessions(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	h, st := hubtest.StartSettling(t, hubtest.Config{})
	ctx := t.Context()

	_, prov := h.EnrolDevice(t, hub.RoleProvider)
	payout := hubtest.P2TR(t)
	if _, err := h.Registry().SetPayout(ctx, prov, payout, "operator"); err != nil {
		t.Fatal(err)
	}

	type payer struct {
		key  *btcec.PrivateKey
		id   string
		dir  string
		sess *m2mclient.Session
		dev  *m2mclient.Device
		ch   btcwire.OutPoint
	}
	newPayer := func() *payer {
		p := &payer{dir: t.TempDir()}
		p.key, p.id = h.EnrolDevice(t, hub.RolePayer)
		p.sess = h.Dial(t, p.key)
		p.dev = h.NewDevice(t, p.sess, p.key, m2mclient.DeviceConfig{Dir: p.dir})
		p.ch = h.OpenChannel(t, p.dev, 100_000).ID
		return p
	}
	p1, p2, p3 := newPayer(), newPayer(), newPayer()
	for i, p := range []*payer{p1, p2, p3} {
		for range i + 1 {
			if _, err := p.dev.Pay(ctx, p.ch, prov, 3_000_500, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The hub's fee on the provider's income pays the batch's mining fee.
	now := time.Now()
	if _, err := h.Store().RecordCharges(ctx, []hub.Charge{{
		Provider: prov, EventID: "ev-fee", Payer: p1.id, Amount: 2_000_000, Fee: 2_000_000,
		Channel: p1.ch, Status: hub.ChargePaid, EventTime: now, Charged: now,
	}}, 1<<40); err != nil {
		t.Fatal(err)
	}
	// p3 goes offline: the hub can only settle it by its claim.
	_ = p3.dev.Close()
	_ = p3.sess.Close()
	hubtest.WaitFor(t, 10*time.Second, "p3 offline", func() bool { return !st.Cosigners.Online(p3.id) })

	s := st.NewSettlement(t, nil)
	r, err := s.Settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != settlement.RunBroadcast || len(r.Txs) != 1 {
		t.Fatalf("run %s with %d txs", r.State, len(r.Txs))
	}
	r = st.Confirm(t, s, r.Epoch.Number)
	tx, err := h.LookupTx(ctx, hubtest.RunTxids(t, r)[0])
	if err != nil {
		t.Fatal(err)
	}
	want := map[*payer]struct {
		next    int64
		witness int
	}{
		p1: {100_000 - 3_000, 1}, // 3,000,500 msat: 500 carried
		p2: {100_000 - 6_001, 1},
		p3: {100_000 - 9_001, 4}, // claim: capacity − PaidSat
	}
	next := map[*payer]btcwire.OutPoint{}
	for p, w := range want {
		i := hubtest.IndexOfInput(tx, p.ch)
		if i < 0 {
			t.Fatalf("channel of %s not in the batch", p.id)
		}
		if got := tx.TxOut[i].Value; got != w.next {
			t.Errorf("next channel of %s: %d sat, want %d", p.id, got, w.next)
		}
		if got := len(tx.TxIn[i].Witness); got != w.witness {
			t.Errorf("%s settled with a %d-element witness, want %d", p.id, got, w.witness)
		}
		next[p] = btcwire.OutPoint{Hash: tx.TxHash(), Index: uint32(i)}
	}
	// 18,003,000 msat earned less the 2,000,000 msat fee.
	if got := hubtest.OutputPaying(tx, payout); got != 16_003 {
		t.Errorf("provider payout %d sat, want 16,003; closing %+v", got, r.Closing)
	}

	switched := func(p *payer) bool {
		for _, c := range p.dev.Channels() {
			if c.ID == next[p] && c.Status == m2mclient.StatusReady && c.Seq == 0 {
				return true
			}
		}
		return false
	}
	for _, p := range []*payer{p1, p2} {
		hubtest.WaitFor(t, 10*time.Second, p.id+" switched", func() bool { return switched(p) })
	}
	if ps := st.Cosigners.Pending(p3.id); len(ps) != 1 || ps[0].Next != next[p3] {
		t.Fatalf("notices owed to offline p3: %+v", ps)
	}

	// p3 comes back with its own records and is told at once.
	p3.sess = h.Dial(t, p3.key)
	p3.dev = h.NewDevice(t, p3.sess, p3.key, m2mclient.DeviceConfig{Dir: p3.dir})
	hubtest.WaitFor(t, 10*time.Second, "p3 switched after reconnecting", func() bool { return switched(p3) })

	for _, p := range []*payer{p1, p2, p3} {
		rc, err := p.dev.Pay(ctx, next[p], prov, 1_000, "")
		if err != nil {
			t.Fatalf("%s pays on its next channel: %v", p.id, err)
		}
		if rc.Channel != next[p] || rc.Seq != 1 {
			t.Errorf("%s: receipt on %v seq %d", p.id, rc.Channel, rc.Seq)
		}
	}
	// Paying on the next channel acknowledges the switch.
	if err := st.Cosigners.Deliver(ctx); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, 10*time.Second, "notices acknowledged", func() bool {
		_ = st.Cosigners.Deliver(ctx)
		return len(st.Cosigners.Pending(p1.id))+len(st.Cosigners.Pending(p3.id)) == 0
	})
}
