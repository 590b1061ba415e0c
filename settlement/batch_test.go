package settlement

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/channel"
)

// TestPlanMixed settles three payers (two online, one absent), a prosumer,
// two providers without a channel and one low-value channel, against
// amounts computed by hand (docs/settlement.md walks through them), signs
// the batch for real and runs it through the script engine.
func TestPlanMixed(t *testing.T) {
	const expiry = 900_000
	a := mustParty(t, "payer-a", 100_000, expiry)
	b := mustParty(t, "payer-b", 50_000, expiry)
	c := mustParty(t, "payer-c", 200_000, expiry)
	p := mustParty(t, "prosumer-p", 80_000, expiry)
	d := mustParty(t, "payer-d", 60_000, expiry)
	xScript, yScript, revScript := p2wpkh(t, "provider-x"), p2tr(t, "provider-y"), p2tr(t, "hub-revenue")

	// The epoch's ledger.
	l := NewLedger(5)
	for _, post := range []Posting{
		Charge("a", "x", 25_000_500, "e1"),
		Charge("b", "x", 10_000_999, "e2"),
		Charge("c", "x", 20_000_000, "e3"),
		Charge("c", "y", 12_000_000, "e4"),
		Charge("c", "p", 8_000_000, "e5"), // the prosumer sells energy to c
		Charge("p", "x", 4_999_750, "e6"), // and buys bandwidth from x
		Charge("d", "x", 100_000, "e7"),
		Fee("x", 5_100_549, "fees"),
	} {
		mustPost(t, l, post)
	}
	wantNets := map[string]Msat{
		"a": -25_000_500, "b": -10_000_999, "c": -40_000_000, "p": 3_000_250,
		"d": -100_000, "x": 55_000_700, "y": 12_000_000,
	}
	for id, n := range wantNets {
		if l.Net(id) != n {
			t.Fatalf("net %s = %d, want %d", id, l.Net(id), n)
		}
	}

	claimB := b.claim(t, 7, 10_000_999)
	in := PlanInput{
		Channels: []ChannelInput{
			{Participant: "a", Output: a.out, Funding: a.funding, Net: l.Net("a"), Cooperative: true},
			{Participant: "b", Output: b.out, Funding: b.funding, Claim: claimB, Net: l.Net("b")},
			{Participant: "c", Output: c.out, Funding: c.funding, Net: l.Net("c"), Cooperative: true},
			{Participant: "p", Output: p.out, Funding: p.funding, Net: l.Net("p"), Cooperative: true},
			{Participant: "d", Output: d.out, Funding: d.funding, Net: l.Net("d"), Cooperative: true},
		},
		Payouts: []PayoutInput{
			{Participant: "x", Net: l.Net("x"), Script: xScript},
			{Participant: "y", Net: l.Net("y"), Script: yScript},
		},
		RevenueScript: revScript,
		Anchor:        Anchor{ReceiptsRoot: NewMerkleTree(ids(7)).Root(), AuditHead: chainhash.HashH([]byte("audit"))},
		FeeRate:       2000, // 2 sat/vB
		Height:        800_000,
		ExpiryMargin:  144,
	}
	plan, err := in.Plan()
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Txs) != 1 {
		t.Fatalf("%d transactions", len(plan.Txs))
	}
	tx := plan.Txs[0]

	// Weight: fixed 4×(4+4+1+1)+2 = 42; three cooperative pairs 3×403;
	// one claim pair 604; P2WPKH payout 124; P2TR payout 172; revenue 172;
	// anchor 4×(8+1+70) = 316. Total 2639 WU; fee ⌈2639×2000/4000⌉ = 1320.
	// The hub settles −(−25000 −10000 −40000 +3000 +55000 +12000) = 5000
	// sat; its revenue output is 5000 − 1320 = 3680 sat.
	want := []struct {
		value  int64
		script []byte
	}{
		{75_000, a.out.PkScript()},  // a: 100,000 − 25,000 (500 msat carried)
		{40_000, b.out.PkScript()},  // b: claim of 10,000 sat (999 msat owed, carried)
		{160_000, c.out.PkScript()}, // c: 200,000 − 40,000
		{83_000, p.out.PkScript()},  // p: 80,000 + 3,000 (250 msat carried)
		{55_000, xScript},           // x (700 msat carried)
		{12_000, yScript},           // y
		{3_680, revScript},          // hub revenue
		{0, in.Anchor.Script()},     // anchor
	}
	if len(tx.Tx.TxOut) != len(want) || len(tx.Tx.TxIn) != 4 {
		t.Fatalf("%d inputs, %d outputs", len(tx.Tx.TxIn), len(tx.Tx.TxOut))
	}
	for i, w := range want {
		o := tx.Tx.TxOut[i]
		if o.Value != w.value || string(o.PkScript) != string(w.script) {
			t.Errorf("output %d: %d sat to %x, want %d sat to %x", i, o.Value, o.PkScript, w.value, w.script)
		}
	}
	for i, f := range []wire.OutPoint{a.funding, b.funding, c.funding, p.funding} {
		if tx.Tx.TxIn[i].PreviousOutPoint != f {
			t.Errorf("input %d spends %v", i, tx.Tx.TxIn[i].PreviousOutPoint)
		}
	}
	if tx.Weight != 2639 || tx.Fee != 1320 || tx.Revenue != 3680 || tx.RevenueIndex != 6 || tx.AnchorIndex != 7 {
		t.Fatalf("weight %d fee %d revenue %d at %d, anchor at %d", tx.Weight, tx.Fee, tx.Revenue, tx.RevenueIndex, tx.AnchorIndex)
	}

	// Conservation on chain: inputs = outputs + fee, and the hub's side
	// is its revenue plus the fee.
	var inSum, outSum int64
	for _, txIn := range tx.Tx.TxIn {
		inSum += tx.PrevOuts().FetchPrevOutput(txIn.PreviousOutPoint).Value
	}
	for _, o := range tx.Tx.TxOut {
		outSum += o.Value
	}
	if inSum != outSum+int64(tx.Fee) || plan.HubSettled() != plan.Revenue+plan.Fee {
		t.Fatalf("inputs %d, outputs %d, fee %d; hub settled %d", inSum, outSum, tx.Fee, plan.HubSettled())
	}
	// Each cooperative participant's output is capacity + net, to the sat.
	for _, pc := range tx.Channels {
		if pc.Mode != ModeCooperative {
			continue
		}
		sat, _ := wantNets[pc.Participant].Split()
		if got := btcutil.Amount(tx.Tx.TxOut[pc.Index].Value); got != pc.Output.Params().Capacity+sat {
			t.Errorf("%s: next channel %d sat, capacity %d + net %d", pc.Participant, got, pc.Output.Params().Capacity, sat)
		}
	}
	wantSettled := map[string]btcutil.Amount{"a": -25_000, "b": -10_000, "c": -40_000, "p": 3_000, "x": 55_000, "y": 12_000}
	if len(plan.Settled) != len(wantSettled) {
		t.Errorf("settled %v", plan.Settled)
	}
	for id, s := range wantSettled {
		if plan.Settled[id] != s {
			t.Errorf("settled %s = %d, want %d", id, plan.Settled[id], s)
		}
	}
	wantCarried := map[string]CarryReason{"a": CarryRemainder, "b": CarryDebt, "p": CarryRemainder, "d": CarryLowValue, "x": CarryRemainder}
	if len(plan.Carried) != len(wantCarried) {
		t.Errorf("carried %+v", plan.Carried)
	}
	for _, cr := range plan.Carried {
		if wantCarried[cr.Participant] != cr.Reason {
			t.Errorf("carried %s: %d msat, %s", cr.Participant, cr.Amount, cr.Reason)
		}
	}

	// Close the ledger with the plan: what each carries is its net less
	// what settled, and the hub carries what it fronted plus its fees.
	closing, next, err := l.Close(plan.Settled)
	if err != nil {
		t.Fatal(err)
	}
	for id, c := range map[string]Msat{"a": -500, "b": -999, "c": 0, "p": 250, "d": -100_000, "x": 700, "y": 0} {
		if closing.CarriedNet(id) != c || next.Net(id) != c {
			t.Errorf("carried %s = %d, want %d", id, closing.CarriedNet(id), c)
		}
	}
	if closing.HubSettled != 5_000 || closing.Carried[HubFees] != 100_549 {
		t.Errorf("hub settled %d, carried %d", closing.HubSettled, closing.Carried[HubFees])
	}
	for _, cr := range plan.Carried {
		if closing.CarriedNet(cr.Participant) != cr.Amount {
			t.Errorf("plan carries %d msat of %s, ledger %d", cr.Amount, cr.Participant, closing.CarriedNet(cr.Participant))
		}
	}

	// Sign for real: MuSig2 on the key path for a, c and p, the hub's
	// claim signature for b; then the script engine.
	for i, pt := range map[int]party{0: a, 2: c, 3: p} {
		if err := tx.SetCoopSignature(i, coopSign(t, tx, i, pt)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.SignClaim(1, b.hub); err != nil {
		t.Fatal(err)
	}
	if !tx.Signed() {
		t.Fatal("not fully signed")
	}
	mustExecuteAll(t, tx)
	if w := weight(tx.Tx); w != tx.Weight {
		t.Fatalf("signed weight %d, planned %d", w, tx.Weight)
	}
	if got, idx, err := FindAnchor(tx.Tx); err != nil || got != in.Anchor || idx != 7 {
		t.Fatalf("FindAnchor: %+v %d %v", got, idx, err)
	}

	t.Run("ErrWrongOutput", func(t *testing.T) {
		// The device refuses a pair that pays it a sat less.
		err := VerifyOwnOutput(tx.Tx, 0, a.funding, 75_001, a.out.PkScript())
		if !errors.Is(err, ErrWrongOutput) {
			t.Fatalf("got %v", err)
		}
		if err := VerifyOwnOutput(tx.Tx, 0, a.funding, 75_000, c.out.PkScript()); !errors.Is(err, ErrWrongOutput) {
			t.Fatalf("other script: %v", err)
		}
		if err := VerifyOwnOutput(tx.Tx, 2, a.funding, 75_000, a.out.PkScript()); !errors.Is(err, ErrWrongOutput) {
			t.Fatalf("other index: %v", err)
		}
	})
}

// TestPlanRules covers the fee-aware and fallback rules one at a time.
func TestPlanRules(t *testing.T) {
	rev := p2tr(t, "hub-revenue")
	plan1 := func(t *testing.T, c ChannelInput, height uint32) *Plan {
		t.Helper()
		// A paying channel funds the batch, so only c's fate is tested.
		f := mustParty(t, "funder", 1_000_000, 900_000)
		in := PlanInput{
			Channels: []ChannelInput{
				{Participant: "funder", Output: f.out, Funding: f.funding, Net: -500_000_000, Cooperative: true}, c,
			},
			RevenueScript: rev, FeeRate: 2000, Height: height, ExpiryMargin: 144,
		}
		plan, err := in.Plan()
		if err != nil {
			t.Fatal(err)
		}
		return plan
	}
	q := mustParty(t, "q", 60_000, 900_000)

	t.Run("LowValueSettledNearExpiry", func(t *testing.T) {
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding, Net: -100_000, Cooperative: true}
		if p := plan1(t, c, 800_000); len(p.Txs[0].Channels) != 1 || p.Carried[0].Reason != CarryLowValue {
			t.Fatalf("far from expiry: %+v", p.Carried)
		}
		if p := plan1(t, c, 900_000-144); len(p.Txs[0].Channels) != 2 || p.Settled["q"] != -100 {
			t.Fatalf("near expiry: settled %v carried %+v", p.Settled, p.Carried)
		}
	})
	t.Run("RenewExpiry", func(t *testing.T) {
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding, Net: 0, Cooperative: true, NewExpiry: 950_000}
		p := plan1(t, c, 899_990)
		pc := p.Txs[0].Channels[1]
		renewed, err := channel.NewOutput(pc.Next)
		if err != nil {
			t.Fatal(err)
		}
		if pc.Next.Expiry != 950_000 || pc.Next.Capacity != 60_000 || string(pc.NextScript) != string(renewed.PkScript()) ||
			string(pc.NextScript) == string(q.out.PkScript()) {
			t.Fatalf("renewed channel %+v", pc.Next)
		}
	})
	t.Run("AbsentProsumerPaidOut", func(t *testing.T) {
		// Spent 10,000.5 sat (signed) and earned 2,000 sat while offline:
		// the claim takes 10,000 sat from the channel, the earnings go
		// to the payout script.
		payout := p2tr(t, "q-payout")
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding,
			Claim: q.claim(t, 3, 10_000_500), Net: -10_000_500 + 2_000_000, PayoutScript: payout}
		p := plan1(t, c, 800_000)
		tx := p.Txs[0]
		if tx.Channels[1].Mode != ModeClaim || tx.Tx.TxOut[1].Value != 50_000 {
			t.Fatalf("claim pair: %+v, next %d", tx.Channels[1].Mode, tx.Tx.TxOut[1].Value)
		}
		// rest = −10,000,500 + 2,000,000 + 10,000,000 = 1,999,500 msat → 1,999 sat paid out, 500 msat carried.
		if len(tx.Payouts) != 1 || tx.Payouts[0].Value != 1_999 || p.Settled["q"] != -10_000+1_999 {
			t.Fatalf("payouts %+v settled %d", tx.Payouts, p.Settled["q"])
		}
		if len(p.Carried) != 1 || p.Carried[0].Amount != 500 || p.Carried[0].Participant != "q" {
			// The funder's −500,000,000 splits exactly, so only q carries.
			t.Fatalf("carried %+v", p.Carried)
		}
	})
	t.Run("AbsentWithoutClaim", func(t *testing.T) {
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding,
			Claim: channel.Claim{State: channel.Initial(q.funding)}, Net: -5_000_000}
		if p := plan1(t, c, 899_990); len(p.Txs[0].Channels) != 1 || p.Carried[0].Reason != CarryNoClaim {
			t.Fatalf("carried %+v", p.Carried)
		}
	})
	t.Run("UnfundedCarriedNotError", func(t *testing.T) {
		// The hub owes q 5,000 sat and nobody pays in: the batch
		// cannot fund it, so q is carried, not the plan failed.
		in := PlanInput{
			Channels:      []ChannelInput{{Participant: "q", Output: q.out, Funding: q.funding, Net: 5_000_000, Cooperative: true}},
			RevenueScript: rev, FeeRate: 2000,
		}
		p, err := in.Plan()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Txs) != 0 || len(p.Carried) != 1 || p.Carried[0].Reason != CarryUnfunded || p.Carried[0].Amount != 5_000_000 {
			t.Fatalf("txs %d carried %+v", len(p.Txs), p.Carried)
		}
	})
	t.Run("DustNearExpiryLeftToRefund", func(t *testing.T) {
		// A 5-sat claim near expiry alone in the batch cannot pay its
		// fee: it is left to the device's refund, with its reason.
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding, Claim: q.claim(t, 1, 5_000), Net: -5_000}
		in := PlanInput{Channels: []ChannelInput{c}, RevenueScript: rev, FeeRate: 2000, Height: 900_000 - 10, ExpiryMargin: 144}
		p, err := in.Plan()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Txs) != 0 || len(p.Carried) != 1 || p.Carried[0].Reason != CarryRefund {
			t.Fatalf("txs %d carried %+v", len(p.Txs), p.Carried)
		}
	})
	t.Run("ExpiredLeftToRefund", func(t *testing.T) {
		// Its refund is valid in the next block: it stays out of the
		// batch even though it is worth settling.
		e := mustParty(t, "e", 60_000, 800_100)
		c := ChannelInput{Participant: "e", Output: e.out, Funding: e.funding, Net: -20_000_000, Cooperative: true}
		if p := plan1(t, c, 800_100-RefundGuard); len(p.Txs[0].Channels) != 1 || p.Carried[0].Reason != CarryRefund {
			t.Fatalf("carried %+v", p.Carried)
		}
	})
	t.Run("ForeignClaimCarriedInvalid", func(t *testing.T) {
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding, Net: -1_000_000,
			Claim: mustParty(t, "z", 1000, 5).claim(t, 1, 0)}
		if p := plan1(t, c, 800_000); len(p.Txs[0].Channels) != 1 || p.Carried[0].Reason != CarryInvalid {
			t.Fatalf("carried %+v", p.Carried)
		}
	})
	t.Run("ErrBadInput", func(t *testing.T) {
		c := ChannelInput{Participant: "q", Output: q.out, Funding: q.funding, Net: -5_000_000, Cooperative: true}
		for name, in := range map[string]PlanInput{
			"duplicate":  {Channels: []ChannelInput{c, c}, RevenueScript: rev},
			"no revenue": {Channels: []ChannelInput{c}},
			"no output":  {Channels: []ChannelInput{{Participant: "q", Funding: q.funding}}, RevenueScript: rev},
		} {
			if _, err := in.Plan(); !errors.Is(err, ErrBadInput) {
				t.Errorf("%s: got %v", name, err)
			}
		}
	})
}
