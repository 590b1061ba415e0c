package settler_test

import (
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// TestSettleNetting settles one epoch of three payers (two online, one
// offline), two providers without channels and an energy prosumer that
// buys and sells, on regtest, and reads every party's output back from the
// confirmed batch: each equals its ledger net rounded toward zero, and the
// sub-satoshi remainders carry into the next epoch, which settles them.
func TestSettleNetting(t *testing.T) {
	e := newSettleEnv(t)
	p1, p2, p3 := e.device("p1", true), e.device("p2", false), e.device("p3", true)
	pro := e.device("prosumer", true)
	a, b := "provider-a", "provider-b"
	e.payouts[a], e.payouts[b] = hubtest.P2TR(t), hubtest.P2TR(t)
	c1 := e.openChannel(p1, 100_000)
	c2 := e.openChannel(p2, 100_000)
	c3 := e.openChannel(p3, 100_000)
	ce := e.openChannel(pro, 100_000)
	e.h.Mine(t, 1)

	e.pay(c1, p1, a, 10_000_500)
	e.pay(c1, p1, pro, 5_000_250) // p1 buys energy from the prosumer
	e.pay(c2, p2, b, 20_000_000)
	e.pay(c3, p3, a, 7_000_777)
	e.pay(ce, pro, b, 3_000_000) // the prosumer buys bandwidth
	e.fee(a, p1, c1, 1_000_000)
	e.fee(b, p2, c2, 2_000_000)
	e.fee(pro, p1, c1, 250_000)

	s := e.settlement(nil)
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.State != settlement.RunBroadcast || len(r.Txs) != 1 {
		t.Fatalf("run %s with %d txs", r.State, len(r.Txs))
	}
	r = e.confirm(s, r.Epoch.Number)
	tx := e.chainTx(hubtest.RunTxids(t, r)[0])
	t.Logf("closing %+v\ntx in %d out %d", r.Closing, len(tx.TxIn), len(tx.TxOut))

	// Nets by hand (msat): p1 −15,000,750; p2 −20,000,000 (claim);
	// p3 −7,000,777; prosumer +5,000,250 −250,000 −3,000,000 = +1,750,250;
	// a +16,001,277; b +21,000,000.
	wantNext := map[btcwire.OutPoint]int64{c1: 85_000, c2: 80_000, c3: 93_000, ce: 101_750}
	for op, want := range wantNext {
		i := hubtest.IndexOfInput(tx, op)
		if i < 0 {
			t.Fatalf("channel %v not in the batch", op)
		}
		if got := tx.TxOut[i].Value; got != want {
			t.Errorf("next channel of %v: %d sat, want %d", op, got, want)
		}
	}
	if i := hubtest.IndexOfInput(tx, c2); len(tx.TxIn[i].Witness) != 4 {
		t.Errorf("offline p2 settled with a %d-element witness, want a claim (4)", len(tx.TxIn[i].Witness))
	}
	if i := hubtest.IndexOfInput(tx, c1); len(tx.TxIn[i].Witness) != 1 {
		t.Errorf("online p1 settled with a %d-element witness, want the key path (1)", len(tx.TxIn[i].Witness))
	}
	for id, want := range map[string]int64{a: 16_001, b: 21_000} {
		if got, ok := valueTo(tx, e.payouts[id]); !ok || got != want {
			t.Errorf("payout of %s: %d sat (found %v), want %d", id, got, ok, want)
		}
	}
	var in, out int64
	for _, v := range wantNext {
		out += v
	}
	in = 400_000
	rev, _ := valueTo(tx, e.revenue)
	fee := in - out - 16_001 - 21_000 - rev
	if fee <= 0 || rev <= 0 || fee+rev != in-out-37_001 {
		t.Errorf("revenue %d, fee %d", rev, fee)
	}
	if _, _, err := settlement.FindAnchor(tx); err != nil {
		t.Errorf("anchor: %v", err)
	}
	cl := r.Closing
	for id, want := range map[string]settlement.Msat{p1: -750, p3: -777, pro: 250, a: 277} {
		if got := cl.CarriedNet(id); got != want {
			t.Errorf("carried of %s: %d msat, want %d", id, got, want)
		}
	}
	if len(e.reuse) > 0 {
		t.Errorf("nonces reused: %v", e.reuse)
	}

	// Epoch 2: p1 pays 3,000,250 msat on its next channel; with the
	// carried −750 its net is exactly −3,001 sat.
	recs, err := e.h.Store().ChannelsByDevice(t.Context(), p1)
	if err != nil {
		t.Fatal(err)
	}
	var next btcwire.OutPoint
	for _, rec := range recs {
		if rec.Status == hub.ChannelReady {
			next = rec.Funding
		}
	}
	if next.Hash != tx.TxHash() {
		t.Fatalf("p1's ready channel %v is not the batch's output", next)
	}
	e.pay(next, p1, a, 3_000_250)
	e.fee(a, p1, next, 1_000_000)
	r2, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r2 = e.confirm(s, r2.Epoch.Number)
	tx2 := e.chainTx(hubtest.RunTxids(t, r2)[0])
	i := hubtest.IndexOfInput(tx2, next)
	if i < 0 || tx2.TxOut[i].Value != 85_000-3_001 {
		t.Fatalf("p1 in epoch 2: input %d, want output %d", i, 85_000-3_001)
	}
	if got, _ := valueTo(tx2, e.payouts[a]); got != 2_000 {
		t.Errorf("payout of a in epoch 2: %d, want 2000 (277 + 3,000,250 − 1,000,000 msat)", got)
	}
	if got := r2.Closing.CarriedNet(p1); got != 0 {
		t.Errorf("p1 carries %d msat after epoch 2", got)
	}
	if got := r2.Closing.CarriedNet(a); got != 527 {
		t.Errorf("a carries %d msat after epoch 2, want 527", got)
	}
	_ = btcutil.Amount(0)
}
