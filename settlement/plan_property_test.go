package settlement

import (
	"fmt"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"

	"github.com/m2mhub/m2mhub/channel"
)

// TestPlanNeverFailsAndConserves draws random channel populations, tiny
// and large, far from expiry, near it and past it, online and absent, with
// and without a signed claim, participants whose channel is gone (refunded:
// they are payouts now) and providers with and without payout scripts, runs
// an epoch of charges and fees through the ledger, and checks that Plan
// never fails and that the plan and the ledger's Close account for every
// msat: per participant settled + carried = net, the plan's carries say the
// same, the hub's side is revenue + fee, every transaction pays its inputs
// out exactly, and no channel whose refund is valid is spent.
func TestPlanNeverFailsAndConserves(t *testing.T) {
	const height = 100_000
	rev := p2tr(t, "hub-revenue")
	hubKey := mustKey(t, "hub")
	// Keys are costly to derive; a small pool serves every draw.
	devices := make([]party, 12)
	for i := range devices {
		devices[i] = party{name: fmt.Sprintf("d%d", i), device: mustKey(t, fmt.Sprintf("d%d/device", i)), hub: hubKey}
	}

	rapid.Check(t, func(rt *rapid.T) {
		feeRate := FeeRate(rapid.SampledFrom([]int{1000, 2000, 25_000}).Draw(rt, "fee rate"))
		margin := uint32(rapid.IntRange(0, 200).Draw(rt, "expiry margin"))
		n := rapid.IntRange(0, len(devices)).Draw(rt, "channels")
		var chans []ChannelInput
		var payers []string
		for i := range n {
			p := devices[i]
			capacity := btcutil.Amount(rapid.OneOf(
				rapid.Int64Range(int64(channel.Reserve)+1, 2_000), // tiny
				rapid.Int64Range(2_000, 200_000),
				rapid.Int64Range(1_000_000, 100_000_000), // large
			).Draw(rt, "capacity"))
			expiry := uint32(rapid.OneOf(
				rapid.Int64Range(height-10, height+RefundGuard),                            // expired or refundable next block
				rapid.Int64Range(height+RefundGuard+1, height+int64(margin)+RefundGuard+1), // near
				rapid.Int64Range(height+1_000, height+100_000),                             // far
			).Draw(rt, "expiry"))
			out, err := channel.NewOutput(channel.Params{
				DeviceKey: p.device.PubKey(), HubKey: hubKey.PubKey(), Capacity: capacity, Expiry: expiry,
			})
			if err != nil {
				rt.Fatal(err)
			}
			p.out = out
			p.funding = wire.OutPoint{Hash: chainhash.HashH([]byte(p.name)), Index: uint32(i)}
			c := ChannelInput{Participant: p.name, Output: out, Funding: p.funding,
				Cooperative: rapid.Bool().Draw(rt, "online")}
			c.Claim = channel.Claim{State: channel.Initial(p.funding)}
			if !c.Cooperative && rapid.Bool().Draw(rt, "signed") {
				paid := msat.Amount(rapid.Uint64Range(0, uint64(out.Params().MaxPaid())).Draw(rt, "paid"))
				c.Claim = p.claim(t, uint64(rapid.IntRange(1, 50).Draw(rt, "seq")), paid)
			}
			if rapid.Bool().Draw(rt, "payout script") {
				c.PayoutScript = p2tr(t, p.name+"/payout")
			}
			chans = append(chans, c)
			payers = append(payers, p.name)
		}
		// Participants without a channel: providers, and payers whose
		// channel the device refunded (still owing what they spent).
		others := []string{"prov-a", "prov-b", "prov-c", "refunded-x", "refunded-y"}
		payers = append(payers, "refunded-x", "refunded-y")
		everyone := append(append([]string{}, payers...), others[:3]...)

		l := NewLedger(7)
		amount := rapid.OneOf(
			rapid.Uint64Range(1, 5_000), // sub-satoshi and dust
			rapid.Uint64Range(5_000, 5_000_000),
			rapid.Uint64Range(5_000_000, 2_000_000_000),
		)
		for i := range rapid.IntRange(0, 40).Draw(rt, "charges") {
			payer := rapid.SampledFrom(payers).Draw(rt, "payer")
			payee := rapid.SampledFrom(everyone).Draw(rt, "payee")
			if payee == payer {
				continue
			}
			a := msat.Amount(amount.Draw(rt, "amount"))
			if err := l.Post(Charge(payer, payee, a, fmt.Sprint(i))); err != nil {
				rt.Fatal(err)
			}
			if rapid.Bool().Draw(rt, "fee") {
				if err := l.Post(Fee(payee, a/10, fmt.Sprint(i))); err != nil {
					rt.Fatal(err)
				}
			}
		}

		nets := l.Nets()
		for i := range chans {
			chans[i].Net = nets[chans[i].Participant]
		}
		in := PlanInput{Channels: chans, RevenueScript: rev, Anchor: Anchor{}, FeeRate: feeRate,
			Height: height, ExpiryMargin: margin}
		for _, id := range others {
			if nets[id] == 0 {
				continue
			}
			po := PayoutInput{Participant: id, Net: nets[id]}
			if rapid.Bool().Draw(rt, "provider script") {
				po.Script = p2wpkh(t, id)
			}
			in.Payouts = append(in.Payouts, po)
		}

		plan, err := in.Plan()
		if err != nil {
			rt.Fatalf("plan: %v", err)
		}
		hubBefore := l.Balance(HubFees)
		closing, next, err := l.Close(plan.Settled)
		if err != nil {
			rt.Fatalf("close: %v", err)
		}

		// Per participant: settled + carried = net, in the ledger and
		// in the plan's carry list alike.
		carriedByPlan := make(map[string]Msat)
		for _, c := range plan.Carried {
			carriedByPlan[c.Participant] += c.Amount
			if c.Reason == "" || c.Amount == 0 {
				rt.Fatalf("carry without reason or amount: %+v", c)
			}
		}
		ids := make(map[string]bool)
		for id := range nets {
			ids[id] = true
		}
		for id := range plan.Settled {
			ids[id] = true
		}
		for id := range ids {
			n := nets[id]
			if got := FromSat(closing.Settled[id]) + closing.CarriedNet(id); got != n {
				rt.Fatalf("%s: settled %d sat + carried %d msat != net %d msat", id, closing.Settled[id], closing.CarriedNet(id), n)
			}
			if got := FromSat(plan.Settled[id]) + carriedByPlan[id]; got != n {
				rt.Fatalf("%s: plan settles %d sat and carries %d msat of net %d msat", id, plan.Settled[id], carriedByPlan[id], n)
			}
		}
		// The hub's side: it pays the fee out of its settlement, and its
		// fees account carries the rest.
		if closing.HubSettled != plan.HubSettled() || plan.HubSettled() != plan.Revenue+plan.Fee {
			rt.Fatalf("hub settled %d, plan %d, revenue %d + fee %d", closing.HubSettled, plan.HubSettled(), plan.Revenue, plan.Fee)
		}
		if FromSat(closing.HubSettled)+closing.Carried[HubFees] != hubBefore {
			rt.Fatalf("hub fees: settled %d sat + carried %d != %d", closing.HubSettled, closing.Carried[HubFees], hubBefore)
		}
		var sum Msat
		for a, c := range closing.Carried {
			sum += c
			if next.Balance(a) != c {
				rt.Fatalf("next ledger %s = %d, carried %d", a, next.Balance(a), c)
			}
		}
		if sum != 0 || closing.Carried[HubChain] != 0 {
			rt.Fatalf("carried sums to %d, clearing account %d", sum, closing.Carried[HubChain])
		}

		// Every transaction: inputs = outputs + fee, the fee covers its
		// weight, outputs above dust, no refundable channel spent, no
		// channel twice.
		spent := make(map[wire.OutPoint]bool)
		var fee, revenue btcutil.Amount
		for _, tx := range plan.Txs {
			var inSum, outSum int64
			for _, txIn := range tx.Tx.TxIn {
				prev := tx.PrevOuts().FetchPrevOutput(txIn.PreviousOutPoint)
				if prev == nil || spent[txIn.PreviousOutPoint] {
					rt.Fatalf("input %v unknown or spent twice", txIn.PreviousOutPoint)
				}
				spent[txIn.PreviousOutPoint] = true
				inSum += prev.Value
			}
			for i, o := range tx.Tx.TxOut {
				outSum += o.Value
				if i != tx.AnchorIndex && btcutil.Amount(o.Value) < Dust(o.PkScript) {
					rt.Fatalf("output %d of %d sat is dust", i, o.Value)
				}
			}
			if btcutil.Amount(inSum-outSum) != tx.Fee || tx.Fee < feeRate.Fee(tx.Weight) || tx.Weight > MaxStandardWeight {
				rt.Fatalf("tx in %d out %d fee %d weight %d", inSum, outSum, tx.Fee, tx.Weight)
			}
			for _, pc := range tx.Channels {
				if uint64(height)+RefundGuard >= uint64(pc.Output.Params().Expiry) {
					rt.Fatalf("refundable channel of %s in the batch", pc.Participant)
				}
			}
			fee += tx.Fee
			revenue += tx.Revenue
		}
		if fee != plan.Fee || revenue != plan.Revenue {
			rt.Fatalf("fees %d/%d revenue %d/%d", fee, plan.Fee, revenue, plan.Revenue)
		}
		// A channel is either in the batch or carried with its reason.
		for _, c := range chans {
			if spent[c.Funding] || c.Net == 0 {
				continue
			}
			found := false
			for _, cr := range plan.Carried {
				found = found || (cr.Funding != nil && *cr.Funding == c.Funding)
			}
			if !found {
				rt.Fatalf("channel of %s neither settled nor carried", c.Participant)
			}
		}
	})
}
