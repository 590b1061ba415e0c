package settlement

import (
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/channel"
)

// Weights of the parts of a settlement transaction, in weight units, as
// measured on fully signed transactions (channel.TestWeights). Schnorr
// signatures have a fixed size, so these are exact, not estimates.
const (
	// MaxStandardWeight is the largest transaction relayed by default
	// (Bitcoin Core's MAX_STANDARD_TX_WEIGHT).
	MaxStandardWeight = 400_000

	// CoopInputWeight is a key-path input with a 65-byte
	// SIGHASH_SINGLE|ANYONECANPAY signature.
	CoopInputWeight = 231

	// ClaimInputWeight is a claim-leaf input whose hub signature is also
	// SIGHASH_SINGLE|ANYONECANPAY.
	ClaimInputWeight = 432

	// P2TROutputWeight is a P2TR output: value, length and 34-byte script.
	P2TROutputWeight = 172
)

// FeeRate is a fee rate in satoshis per 1000 virtual bytes (sat/kvB), the
// unit btcd and Bitcoin Core use for relay fees: 1 sat/vB is 1000.
type FeeRate btcutil.Amount

// Fee returns the fee for weight at r, rounded up to the satoshi.
func (r FeeRate) Fee(weight int) btcutil.Amount {
	return btcutil.Amount((int64(weight)*int64(r) + 3999) / 4000)
}

// OutputWeight returns the weight of an output with the given script.
func OutputWeight(script []byte) int {
	return 4 * (8 + wire.VarIntSerializeSize(uint64(len(script))) + len(script))
}

// txFixedWeight is the weight of a transaction's fixed part: version and
// lock time, the input and output counts, and the segwit marker and flag.
func txFixedWeight(nIn, nOut int) int {
	return 4*(4+4+wire.VarIntSerializeSize(uint64(nIn))+wire.VarIntSerializeSize(uint64(nOut))) + 2
}

// Dust returns the smallest value an output with script may carry and still
// relay under Bitcoin Core's default dust rule (3 sat/vB for the output and
// the input that would spend it): 330 sat for P2TR, 294 for P2WPKH, 546 for
// P2PKH.
func Dust(script []byte) btcutil.Amount {
	size := 8 + wire.VarIntSerializeSize(uint64(len(script))) + len(script)
	if txscript.IsWitnessProgram(script) {
		size += 32 + 4 + 1 + 107/4 + 4
	} else {
		size += 32 + 4 + 1 + 107 + 4
	}
	return btcutil.Amount(3 * size)
}

// Mode is how a channel is settled.
type Mode string

// Settlement modes.
const (
	// ModeCooperative: the device co-signed the key path with MuSig2, so
	// its next channel can take any value both sides agree on.
	ModeCooperative Mode = "cooperative"

	// ModeClaim: the device was absent; the hub spends the claim leaf with
	// the device's latest claim signature, and the next channel is what
	// that signature commits to.
	ModeClaim Mode = "claim"
)

// CarryReason says why a participant's net was carried to the next epoch
// instead of settled.
type CarryReason string

// Carry reasons.
const (
	CarryLowValue  CarryReason = "low value"        // moving it would cost more than it is worth, and the expiry is far
	CarryNoClaim   CarryReason = "no claim"         // absent, and the channel has no signed state to claim
	CarryDust      CarryReason = "dust"             // the payout would be below the dust limit
	CarryNoScript  CarryReason = "no payout script" // earnings, but nowhere to pay them
	CarryDebt      CarryReason = "debt"             // owes more than its channel can pay now
	CarryUnfunded  CarryReason = "unfunded"         // no transaction had the inputs to pay it
	CarryRemainder CarryReason = "remainder"        // the sub-satoshi part of a settled net
	CarryRefund    CarryReason = "left to refund"   // expired, or near expiry and not worth its own fee: the device's refund takes the channel back
	CarryInvalid   CarryReason = "invalid"          // the channel's terms or claim cannot be spent as given
)

// RefundGuard is how many blocks before its expiry a channel leaves every
// batch: from expiry on the device's refund is valid, and a refund that
// confirms before the batch would make the whole batch invalid, everyone's
// settlement with it. A channel at Height+RefundGuard ≥ Expiry is carried
// ("left to refund"); the hub's own expiry claim comes earlier
// (hub.ChannelsConfig.SafetyMargin).
const RefundGuard = 1

// ChannelInput is one channel the batch may settle.
type ChannelInput struct {
	// Participant owns the channel (its payer id).
	Participant string

	// Output is the channel output being spent, funded at Funding.
	Output  *channel.Output
	Funding wire.OutPoint

	// Claim is the latest acknowledged state with the device's claim
	// signature; Seq 0 means nothing is signed yet.
	Claim channel.Claim

	// Net is the part of the participant's epoch net (earned − spent,
	// carry-ins included) settled through this channel. Give a
	// participant's whole net to one of its channels.
	Net Msat

	// Cooperative is true when the device is online and takes part in
	// the MuSig2 round.
	Cooperative bool

	// NewExpiry, when not zero, is the expiry of the next channel agreed
	// in a cooperative settlement; zero keeps the current one. A claim
	// never changes it.
	NewExpiry uint32

	// PayoutScript receives the participant's earnings when the channel is
	// settled by claim (the claim's next output is fixed by the device's
	// signature and cannot carry them). Nil carries them over.
	PayoutScript []byte
}

// PayoutInput is a provider without a channel, paid to its registered
// payout script.
type PayoutInput struct {
	Participant string
	Net         Msat
	Script      []byte
}

// PlanInput is everything Plan needs.
type PlanInput struct {
	Channels []ChannelInput
	Payouts  []PayoutInput

	// RevenueScript receives the hub's revenue: everything the inputs hold
	// that no other output takes, less the fee.
	RevenueScript []byte

	// Anchor goes into an OP_RETURN output of every transaction.
	Anchor Anchor

	FeeRate FeeRate

	// Height is the current chain tip; a channel whose Expiry is at most
	// Height+ExpiryMargin is settled whatever its value.
	Height       uint32
	ExpiryMargin uint32

	// MaxWeight caps each transaction; zero means MaxStandardWeight.
	MaxWeight int
}

// PlannedChannel is one channel in a planned transaction: input Index
// spends it and output Index is the participant's next channel.
type PlannedChannel struct {
	Participant string
	Mode        Mode
	Index       int

	// Output is the channel spent; Claim is used when Mode is ModeClaim.
	Output *channel.Output
	Claim  channel.Claim

	// Next are the terms of the next channel, the output at Index, and
	// NextScript its script.
	Next       channel.Params
	NextScript []byte

	// Settled is what the pair moves to the participant: Next.Capacity −
	// Output's capacity (negative when it pays).
	Settled btcutil.Amount
}

// PlannedPayout is one payout output.
type PlannedPayout struct {
	Participant string
	Index       int
	Script      []byte
	Value       btcutil.Amount
}

// PlannedTx is one unsigned settlement transaction and what each of its
// inputs and outputs is for. Inputs and outputs 0..len(Channels)-1 are the
// channel pairs, then come the payouts, the hub's revenue (if above dust)
// and the anchor.
type PlannedTx struct {
	Tx       *wire.MsgTx
	Channels []PlannedChannel
	Payouts  []PlannedPayout

	// RevenueIndex is the revenue output's index, -1 when the revenue was
	// below dust and went to the fee.
	RevenueIndex int
	Revenue      btcutil.Amount
	AnchorIndex  int

	// Fee is inputs − outputs; Weight is the weight once fully signed.
	Fee    btcutil.Amount
	Weight int

	prevOuts *txscript.MultiPrevOutFetcher
}

// PrevOuts returns the outputs the transaction's inputs spend, for sighashes
// and the script engine.
func (t *PlannedTx) PrevOuts() txscript.PrevOutputFetcher { return t.prevOuts }

// Carry is a participant's net, or part of it, left for the next epoch.
type Carry struct {
	Participant string
	// Funding is the channel concerned; nil for a payout.
	Funding *wire.OutPoint
	Amount  Msat
	Reason  CarryReason
}

// Plan is a settlement batch: its transactions, what it settles per
// participant (for Ledger.Close) and what it carries.
type Plan struct {
	Txs []*PlannedTx

	// Settled is each participant's on-chain settlement, the argument of
	// Ledger.Close.
	Settled map[string]btcutil.Amount

	// Carried lists what was not settled, and why.
	Carried []Carry

	// Fee is the total fee; Revenue the total of the revenue outputs.
	Fee     btcutil.Amount
	Revenue btcutil.Amount
}

// HubSettled is the hub's side of the batch, −Σ Settled; it equals Revenue +
// Fee, the hub paying the fee and any dust revenue out of its settlement.
func (p *Plan) HubSettled() btcutil.Amount {
	var s btcutil.Amount
	for _, v := range p.Settled {
		s -= v
	}
	return s
}

// pair is a channel chosen for settlement, before layout.
type pair struct {
	pc      PlannedChannel
	funding wire.OutPoint
	in      *wire.TxIn
	out     *wire.TxOut
	prev    *wire.TxOut
	weight  int

	// slot is the channel's index in PlanInput.Channels; net its whole
	// net and near whether its expiry is within ExpiryMargin, for when
	// the pair has to leave its transaction. payout is the claim's
	// payout of earnings, which leaves with it.
	slot   int
	net    Msat
	near   bool
	payout *PlannedPayout
}

// margin is what the pair adds to its transaction's surplus after its own
// marginal fee: negative when the batch pays to include it.
func (p pair) margin(r FeeRate) btcutil.Amount {
	return btcutil.Amount(p.prev.Value-p.out.Value) - r.Fee(p.weight)
}

// Plan builds the settlement batch for in. For each channel:
//
//   - cooperative: key-path input, and the next channel (same terms, or
//     NewExpiry) worth Capacity + the net rounded toward zero to the
//     satoshi, never below Reserve+1;
//   - absent: claim input with the latest signed state, the next channel
//     the device signed for (Capacity − PaidSat), and the rest of the net,
//     if positive, paid to PayoutScript;
//   - carried over when the value it moves does not cover its marginal
//     fee, unless the expiry is within ExpiryMargin.
//
// Payouts without a channel are paid when above dust and their fee. Pairs
// go first, in the order given, then payouts, the revenue and the anchor;
// a new transaction starts only when the next pair would push one past
// MaxWeight.
//
// One channel never fails the plan: a channel whose refund is (nearly)
// valid, or whose terms or claim cannot be spent, is carried with a
// reason, and when a transaction's inputs cannot pay its outputs and fee
// the pairs that cost it most leave it, one at a time, carried as
// "unfunded" (or "left to refund" near expiry). Plan returns an error
// only for input no channel population explains: ErrBadInput for a
// negative fee rate, no revenue script, a MaxWeight above standard or
// too small for one channel, a channel without output or participant, or
// one channel given twice.
func (in PlanInput) Plan() (*Plan, error) {
	maxWeight := in.MaxWeight
	if maxWeight == 0 {
		maxWeight = MaxStandardWeight
	}
	switch {
	case in.FeeRate < 0:
		return nil, fmt.Errorf("%w: negative fee rate", ErrBadInput)
	case len(in.RevenueScript) == 0:
		return nil, fmt.Errorf("%w: no revenue script", ErrBadInput)
	case maxWeight > MaxStandardWeight:
		return nil, fmt.Errorf("%w: max weight %d above standard", ErrBadInput, maxWeight)
	}
	anchorOut := in.Anchor.TxOut()
	revenueWeight := OutputWeight(in.RevenueScript)
	anchorWeight := OutputWeight(anchorOut.PkScript)

	plan := &Plan{Settled: make(map[string]btcutil.Amount)}
	// Carries are collected per channel, so a pair that leaves its
	// transaction replaces its channel's carries with one of its whole
	// net; then come the payouts' and the unfunded payouts'.
	chanCarries := make([][]Carry, len(in.Channels))
	var otherCarries []Carry
	carryTo := func(list *[]Carry) func(string, *wire.OutPoint, Msat, CarryReason) {
		return func(participant string, funding *wire.OutPoint, amount Msat, why CarryReason) {
			if amount != 0 {
				*list = append(*list, Carry{participant, funding, amount, why})
			}
		}
	}
	carry := carryTo(&otherCarries)

	// Decide each channel's fate.
	var pairs []pair
	seen := make(map[wire.OutPoint]bool, len(in.Channels))
	for i := range in.Channels {
		c := &in.Channels[i]
		if c.Output == nil || c.Participant == "" {
			return nil, fmt.Errorf("%w: channel %d lacks output or participant", ErrBadInput, i)
		}
		if seen[c.Funding] {
			return nil, fmt.Errorf("%w: channel %v twice", ErrBadInput, c.Funding)
		}
		seen[c.Funding] = true
		p, err := in.settleChannel(c, carryTo(&chanCarries[i]))
		if err != nil {
			// This channel's input is unusable (a bad claim, terms
			// no next output can have): it alone is carried.
			funding := c.Funding
			chanCarries[i] = nil
			carryTo(&chanCarries[i])(c.Participant, &funding, c.Net, CarryInvalid)
			continue
		}
		if p == nil {
			continue
		}
		p.slot, p.net = i, c.Net
		pairs = append(pairs, *p)
	}
	var standalone []PlannedPayout
	for _, po := range in.Payouts {
		sat, _ := po.Net.Split()
		switch {
		case po.Net <= 0:
			carry(po.Participant, nil, po.Net, CarryDebt)
		case len(po.Script) == 0:
			carry(po.Participant, nil, po.Net, CarryNoScript)
		case sat < Dust(po.Script):
			carry(po.Participant, nil, po.Net, CarryDust)
		case sat < in.FeeRate.Fee(OutputWeight(po.Script)):
			carry(po.Participant, nil, po.Net, CarryLowValue)
		default:
			standalone = append(standalone, PlannedPayout{Participant: po.Participant, Script: po.Script, Value: sat})
			carry(po.Participant, nil, po.Net-FromSat(sat), CarryRemainder)
		}
	}

	// Pack the pairs greedily into transactions under maxWeight, keeping
	// room for the revenue and anchor outputs.
	type draft struct {
		pairs   []pair
		payouts []PlannedPayout
		weight  int // without the fixed part
		surplus btcutil.Amount
	}
	fits := func(d *draft, nIn, nOut, extra int) bool {
		return txFixedWeight(nIn, nOut+2)+d.weight+extra+revenueWeight+anchorWeight <= maxWeight
	}
	var drafts []*draft
	for _, p := range pairs {
		if len(drafts) == 0 {
			drafts = append(drafts, &draft{})
		}
		d := drafts[len(drafts)-1]
		if !fits(d, len(d.pairs)+1, len(d.pairs)+1, p.weight) {
			if len(d.pairs) == 0 {
				return nil, fmt.Errorf("%w: max weight %d holds no channel", ErrBadInput, maxWeight)
			}
			d = &draft{}
			drafts = append(drafts, d)
		}
		d.pairs = append(d.pairs, p)
		d.weight += p.weight
		d.surplus += btcutil.Amount(p.prev.Value - p.out.Value)
	}

	// A transaction whose pairs cannot pay its fee (a tiny channel forced
	// in by its expiry, earnings larger than what the others pay) sheds
	// the pair that costs it most until it can; a transaction left with
	// no pair is dropped.
	kept := drafts[:0]
	for _, d := range drafts {
		for len(d.pairs) > 0 &&
			d.surplus < in.FeeRate.Fee(txFixedWeight(len(d.pairs), len(d.pairs)+1)+d.weight+anchorWeight) {
			worst := 0
			for i, p := range d.pairs {
				if p.margin(in.FeeRate) < d.pairs[worst].margin(in.FeeRate) {
					worst = i
				}
			}
			p := d.pairs[worst]
			d.pairs = append(d.pairs[:worst], d.pairs[worst+1:]...)
			d.weight -= p.weight
			d.surplus -= btcutil.Amount(p.prev.Value - p.out.Value)
			why := CarryUnfunded
			if p.near {
				why = CarryRefund
			}
			funding := p.funding
			chanCarries[p.slot] = nil
			carryTo(&chanCarries[p.slot])(p.pc.Participant, &funding, p.net, why)
		}
		if len(d.pairs) > 0 {
			kept = append(kept, d)
		}
	}
	drafts = kept

	// Payouts (claims' earnings first, in channel order, then providers
	// without a channel) go where the most surplus is left and there is
	// room, so each transaction can pay its own.
	var payouts []PlannedPayout
	for _, d := range drafts {
		for _, p := range d.pairs {
			if p.payout != nil {
				payouts = append(payouts, *p.payout)
			}
		}
	}
	payouts = append(payouts, standalone...)
	var unfunded []Carry
	for _, po := range payouts {
		w := OutputWeight(po.Script)
		var best *draft
		for _, d := range drafts {
			nIn, nOut := len(d.pairs), len(d.pairs)+len(d.payouts)+1
			fee := in.FeeRate.Fee(txFixedWeight(nIn, nOut+2) + d.weight + w + revenueWeight + anchorWeight)
			if !fits(d, nIn, nOut, w) || d.surplus-po.Value < fee {
				continue
			}
			if best == nil || d.surplus > best.surplus {
				best = d
			}
		}
		if best == nil {
			carryTo(&unfunded)(po.Participant, nil, FromSat(po.Value), CarryUnfunded)
			continue
		}
		best.payouts = append(best.payouts, po)
		best.weight += w
		best.surplus -= po.Value
	}
	for _, cs := range chanCarries {
		plan.Carried = append(plan.Carried, cs...)
	}
	plan.Carried = append(plan.Carried, otherCarries...)
	plan.Carried = append(plan.Carried, unfunded...)

	// Settled per participant, now that unfunded payouts are known.
	for _, d := range drafts {
		for _, p := range d.pairs {
			plan.Settled[p.pc.Participant] += p.pc.Settled
		}
		for _, po := range d.payouts {
			plan.Settled[po.Participant] += po.Value
		}
	}

	// Build the transactions.
	for _, d := range drafts {
		t, err := in.build(d.pairs, d.payouts, anchorOut)
		if err != nil {
			return nil, err
		}
		plan.Txs = append(plan.Txs, t)
		plan.Fee += t.Fee
		plan.Revenue += t.Revenue
	}
	for id, s := range plan.Settled {
		if s == 0 {
			delete(plan.Settled, id)
		}
	}
	return plan, nil
}

// settleChannel decides how c is settled: the pair to add (nil when it is
// carried), with, for a claim with earnings, the payout that goes with it.
// An error means c's input is unusable; the caller carries it.
func (in PlanInput) settleChannel(c *ChannelInput,
	carry func(string, *wire.OutPoint, Msat, CarryReason)) (*pair, error) {

	params := c.Output.Params()
	funding := c.Funding
	if uint64(in.Height)+RefundGuard >= uint64(params.Expiry) {
		// The device may refund from the next block on; spending the
		// channel in the batch would race that refund with everyone's
		// settlement at stake.
		carry(c.Participant, &funding, c.Net, CarryRefund)
		return nil, nil
	}
	near := uint64(in.Height)+uint64(in.ExpiryMargin) >= uint64(params.Expiry)
	prev := c.Output.TxOut()

	if c.Cooperative {
		sat, _ := c.Net.Split()
		// The next channel keeps more than the reserve, so its terms
		// stay valid; what the channel cannot pay now stays owed.
		if floor := -(params.Capacity - channel.Reserve - 1); sat < floor {
			sat = floor
		}
		renew := c.NewExpiry != 0 && c.NewExpiry != params.Expiry
		weight := CoopInputWeight + P2TROutputWeight
		value := sat
		if value < 0 {
			value = -value
		}
		if !near && !renew && value < in.FeeRate.Fee(weight) {
			carry(c.Participant, &funding, c.Net, CarryLowValue)
			return nil, nil
		}
		next := params
		next.Capacity += sat
		script := c.Output.PkScript()
		if renew {
			next.Expiry = c.NewExpiry
			o, err := channel.NewOutput(next)
			if err != nil {
				return nil, fmt.Errorf("%w: next channel of %v: %v", ErrBadInput, funding, err)
			}
			script = o.PkScript()
		}
		txIn := wire.NewTxIn(&funding, nil, nil)
		txIn.Sequence = channel.ClaimSequence
		carry(c.Participant, &funding, c.Net-FromSat(sat), remainderReason(c.Net, sat))
		return &pair{
			pc: PlannedChannel{
				Participant: c.Participant, Mode: ModeCooperative, Output: c.Output,
				Next: next, NextScript: script, Settled: sat,
			},
			funding: funding,
			in:      txIn,
			out:     wire.NewTxOut(int64(next.Capacity), script),
			prev:    prev,
			weight:  weight,
			near:    near,
		}, nil
	}

	// Absent: settle with the latest claim.
	if c.Claim.ChannelID != funding {
		return nil, fmt.Errorf("%w: claim of %v for channel %v", ErrBadInput, c.Claim.ChannelID, funding)
	}
	if c.Claim.Seq == 0 {
		carry(c.Participant, &funding, c.Net, CarryNoClaim)
		return nil, nil
	}
	paid := c.Claim.PaidSat()
	out, err := c.Output.NextTxOut(c.Claim.Paid)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	// What the claim does not settle: positive when the participant
	// earned more (or was charged less) than the device signed away,
	// negative when it owes more than it signed (service on credit).
	rest := c.Net + FromSat(paid)
	restSat, _ := rest.Split()
	var payout *PlannedPayout
	var why CarryReason
	switch {
	case rest < 0:
		why = CarryDebt
	case rest > 0 && len(c.PayoutScript) == 0:
		why = CarryNoScript
	case rest > 0 && restSat < Dust(c.PayoutScript):
		why = CarryDust
	case rest > 0:
		payout = &PlannedPayout{Participant: c.Participant, Script: c.PayoutScript, Value: restSat}
		why = CarryRemainder
	}
	weight := ClaimInputWeight + P2TROutputWeight
	value := paid
	if payout != nil {
		weight += OutputWeight(c.PayoutScript)
		value += payout.Value
	}
	if !near && value < in.FeeRate.Fee(weight) {
		carry(c.Participant, &funding, c.Net, CarryLowValue)
		return nil, nil
	}
	if payout != nil {
		rest -= FromSat(payout.Value)
	}
	carry(c.Participant, &funding, rest, why)
	next := params
	next.Capacity -= paid
	return &pair{
		pc: PlannedChannel{
			Participant: c.Participant, Mode: ModeClaim, Output: c.Output, Claim: c.Claim,
			Next: next, NextScript: out.PkScript, Settled: -paid,
		},
		funding: funding,
		in:      channel.ClaimTxIn(funding),
		out:     out,
		prev:    prev,
		weight:  ClaimInputWeight + P2TROutputWeight,
		near:    near,
		payout:  payout,
	}, nil
}

// remainderReason says why a cooperative channel carries net − 1000×sat:
// the sub-satoshi remainder, or a debt its channel could not pay in full.
func remainderReason(net Msat, sat btcutil.Amount) CarryReason {
	if r := net - FromSat(sat); r <= -1000 {
		return CarryDebt
	}
	return CarryRemainder
}

// build lays out one transaction: the pairs, the payouts, the revenue when
// above dust, and the anchor.
func (in PlanInput) build(pairs []pair, payouts []PlannedPayout, anchor *wire.TxOut) (*PlannedTx, error) {
	tx := wire.NewMsgTx(channel.TxVersion)
	tx.LockTime = channel.ClaimLockTime
	t := &PlannedTx{
		Tx:       tx,
		Channels: make([]PlannedChannel, 0, len(pairs)),
		prevOuts: txscript.NewMultiPrevOutFetcher(make(map[wire.OutPoint]*wire.TxOut, len(pairs))),
	}
	var inSum, outSum int64
	weight := 0
	for i, p := range pairs {
		tx.AddTxIn(p.in)
		tx.AddTxOut(p.out)
		t.prevOuts.AddPrevOut(p.funding, p.prev)
		pc := p.pc
		pc.Index = i
		t.Channels = append(t.Channels, pc)
		inSum += p.prev.Value
		outSum += p.out.Value
		weight += p.weight
	}
	for _, po := range payouts {
		po.Index = len(tx.TxOut)
		tx.AddTxOut(wire.NewTxOut(int64(po.Value), po.Script))
		t.Payouts = append(t.Payouts, po)
		outSum += int64(po.Value)
		weight += OutputWeight(po.Script)
	}

	// The revenue takes what is left after the fee for a transaction that
	// includes it; below dust it is dropped and the fee takes it all.
	withRev := txFixedWeight(len(tx.TxIn), len(tx.TxOut)+2) + weight +
		OutputWeight(in.RevenueScript) + OutputWeight(anchor.PkScript)
	revenue := btcutil.Amount(inSum-outSum) - in.FeeRate.Fee(withRev)
	t.RevenueIndex = -1
	switch {
	case revenue >= Dust(in.RevenueScript):
		t.RevenueIndex = len(tx.TxOut)
		t.Revenue = revenue
		tx.AddTxOut(wire.NewTxOut(int64(revenue), append([]byte(nil), in.RevenueScript...)))
		t.Weight = withRev
	default:
		t.Weight = txFixedWeight(len(tx.TxIn), len(tx.TxOut)+1) + weight + OutputWeight(anchor.PkScript)
		if btcutil.Amount(inSum-outSum) < in.FeeRate.Fee(t.Weight) {
			return nil, fmt.Errorf("%w: inputs %d sat, outputs %d sat, fee %d sat",
				ErrRevenueShort, inSum, outSum, int64(in.FeeRate.Fee(t.Weight)))
		}
	}
	t.AnchorIndex = len(tx.TxOut)
	tx.AddTxOut(wire.NewTxOut(0, append([]byte(nil), anchor.PkScript...)))
	t.Fee = btcutil.Amount(inSum-outSum) - t.Revenue
	return t, nil
}
