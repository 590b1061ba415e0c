package settlement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/msat"
)

// Msat is a signed amount of millisatoshi. Ledger entries need a sign
// (debits are negative), which msat.Amount lacks; all bitcoin ever
// issued, in msat, is 2.1e18, well inside int64.
type Msat int64

// MaxMsat bounds every amount and balance in the ledger: all bitcoin that
// will ever exist, in millisatoshi. Keeping balances inside ±MaxMsat means
// no sum of two of them can overflow int64.
const MaxMsat Msat = Msat(btcutil.MaxSatoshi) * 1000

// MsatOf converts an unsigned lnwire amount. Amounts above MaxMsat become
// MaxMsat+1, still positive, so that Post refuses them instead of
// wrapping to a negative number.
func MsatOf(a msat.Amount) Msat {
	if a > msat.Amount(MaxMsat) {
		return MaxMsat + 1
	}
	return Msat(a)
}

// Split divides m into whole satoshis and a sub-satoshi remainder, rounding
// toward zero: m == 1000×sat + rem, |rem| < 1000 and rem has m's sign. Toward
// zero means nobody is ever settled more than their net: a participant owed
// 1.5 sat gets 1 sat now and keeps 500 msat owed, one owing 1.5 sat pays 1
// sat now and still owes 500 msat.
func (m Msat) Split() (sat btcutil.Amount, rem Msat) {
	return btcutil.Amount(m / 1000), m % 1000
}

// FromSat returns a in millisatoshi.
func FromSat(a btcutil.Amount) Msat { return Msat(a) * 1000 }

// Account names one balance in the ledger. Participant accounts are
// "payer:<id>" and "provider:<id>" (a prosumer has both and is netted
// across them); the hub's are the constants below.
type Account string

// The hub's accounts.
const (
	// HubFees is the hub's own account: fees on charges flow in, and at
	// Close it settles whatever balances the batch, so it is also the
	// account that bears the rounding of every other account.
	HubFees Account = "hub:fees"

	// HubHeld is escrow for captures of conditional payments: captured
	// from the payer, released to the provider or refunded to the payer.
	// It is never settled; what it holds at the end of an epoch carries
	// into the next.
	HubHeld Account = "hub:held"

	// HubChain is the clearing account of on-chain settlement: every
	// payout posting moves an amount from an account to HubChain, and
	// Close makes it zero again by settling HubFees against it.
	HubChain Account = "hub:chain"
)

// Payer returns the payer account of participant id.
func Payer(id string) Account { return Account("payer:" + id) }

// Provider returns the provider account of participant id.
func Provider(id string) Account { return Account("provider:" + id) }

// Participant returns the participant id of a payer or provider account,
// and false for a hub account or a malformed name.
func (a Account) Participant() (string, bool) {
	for _, prefix := range []string{"payer:", "provider:"} {
		if id, ok := strings.CutPrefix(string(a), prefix); ok && id != "" {
			return id, true
		}
	}
	return "", false
}

// valid reports whether a is a participant account or one of the hub's.
func (a Account) valid() bool {
	if _, ok := a.Participant(); ok {
		return true
	}
	return a == HubFees || a == HubHeld || a == HubChain
}

// PostingKind says what a posting records.
type PostingKind string

// Posting kinds.
const (
	KindCharge  PostingKind = "charge"  // payer → provider, the priced amount
	KindFee     PostingKind = "fee"     // provider → hub:fees, the hub's cut
	KindShare   PostingKind = "share"   // provider → provider, a revenue split's share
	KindCapture PostingKind = "capture" // payer → hub:held, a conditional payment
	KindRelease PostingKind = "release" // hub:held → provider, condition met
	KindRefund  PostingKind = "refund"  // hub:held → payer, condition failed
	KindPayout  PostingKind = "payout"  // account → hub:chain, settled on chain
	KindCarry   PostingKind = "carry"   // opening balances carried from the last epoch
)

// Entry is one leg of a posting: a signed change to one account's balance.
type Entry struct {
	Account Account `json:"account"`
	Amount  Msat    `json:"amount_msat"`
}

// Posting is a balanced set of entries: they sum to zero, so the ledger as a
// whole always sums to zero. Ref names what it records (an event id, a
// receipt id, an epoch).
type Posting struct {
	Kind    PostingKind `json:"kind"`
	Ref     string      `json:"ref,omitempty"`
	Entries []Entry     `json:"entries"`
}

// Charge records a priced usage event: the payer pays amount to the provider.
func Charge(payer, provider string, amount msat.Amount, ref string) Posting {
	return transfer(KindCharge, Payer(payer), Provider(provider), MsatOf(amount), ref)
}

// Fee records the hub's cut of a charge, taken from the provider.
func Fee(provider string, fee msat.Amount, ref string) Posting {
	return transfer(KindFee, Provider(provider), HubFees, MsatOf(fee), ref)
}

// Share records a payee's share of a charge under its contract's revenue
// splits, taken from the provider that metered it.
func Share(provider, payee string, amount msat.Amount, ref string) Posting {
	return transfer(KindShare, Provider(provider), Provider(payee), MsatOf(amount), ref)
}

// Capture records a conditional payment taken from the payer into escrow.
func Capture(payer string, amount msat.Amount, ref string) Posting {
	return transfer(KindCapture, Payer(payer), HubHeld, MsatOf(amount), ref)
}

// Release pays escrowed money to the provider once its condition is met.
func Release(provider string, amount msat.Amount, ref string) Posting {
	return transfer(KindRelease, HubHeld, Provider(provider), MsatOf(amount), ref)
}

// Refund returns escrowed money to the payer when its condition failed.
func Refund(payer string, amount msat.Amount, ref string) Posting {
	return transfer(KindRefund, HubHeld, Payer(payer), MsatOf(amount), ref)
}

// transfer moves amount from one account to another.
func transfer(kind PostingKind, from, to Account, amount Msat, ref string) Posting {
	return Posting{Kind: kind, Ref: ref, Entries: []Entry{
		{Account: from, Amount: -amount},
		{Account: to, Amount: amount},
	}}
}

// check validates p on its own: a known kind, at least two entries, valid
// accounts, amounts within ±MaxMsat, and a zero sum.
func (p Posting) check() error {
	switch p.Kind {
	case KindCharge, KindFee, KindShare, KindCapture, KindRelease, KindRefund, KindPayout, KindCarry:
	default:
		return fmt.Errorf("%w: kind %q", ErrBadPosting, p.Kind)
	}
	if len(p.Entries) < 2 {
		return fmt.Errorf("%w: %d entries", ErrUnbalanced, len(p.Entries))
	}
	var sum Msat
	for _, e := range p.Entries {
		if !e.Account.valid() {
			return fmt.Errorf("%w: account %q", ErrBadPosting, e.Account)
		}
		if e.Amount > MaxMsat || e.Amount < -MaxMsat {
			return fmt.Errorf("%w: amount %d msat out of range", ErrBadPosting, e.Amount)
		}
		// |sum| ≤ n×MaxMsat could overflow for huge n; stop early.
		sum += e.Amount
		if sum > MaxMsat || sum < -MaxMsat {
			return fmt.Errorf("%w: running sum out of range", ErrUnbalanced)
		}
	}
	if sum != 0 {
		return fmt.Errorf("%w: entries sum to %d msat", ErrUnbalanced, sum)
	}
	return nil
}

// Ledger is one epoch's double-entry ledger. Every posting is balanced, so
// the balances of all accounts always sum to zero, to the msat. A Ledger is
// not safe for concurrent use; the hub serialises postings.
type Ledger struct {
	epoch    uint64
	balances map[Account]Msat
	postings []Posting
	closed   bool
}

// NewLedger opens an empty ledger for epoch.
func NewLedger(epoch uint64) *Ledger {
	return &Ledger{epoch: epoch, balances: make(map[Account]Msat)}
}

// Epoch returns the number of the epoch the ledger records.
func (l *Ledger) Epoch() uint64 { return l.epoch }

// Post applies p. It returns an error wrapping ErrUnbalanced or
// ErrBadPosting for a malformed posting, ErrOverdrawn when HubHeld would go
// negative, ErrBadPosting when a balance would leave ±MaxMsat, and ErrClosed
// after Close. A refused posting changes nothing.
func (l *Ledger) Post(p Posting) error {
	if l.closed {
		return fmt.Errorf("%w: epoch %d", ErrClosed, l.epoch)
	}
	if err := p.check(); err != nil {
		return err
	}
	// Compute every new balance before changing any, so a refusal leaves
	// the ledger as it was. An account may appear twice in one posting.
	next := make(map[Account]Msat, len(p.Entries))
	for _, e := range p.Entries {
		b, ok := next[e.Account]
		if !ok {
			b = l.balances[e.Account]
		}
		b += e.Amount
		if b > MaxMsat || b < -MaxMsat {
			return fmt.Errorf("%w: balance of %s out of range", ErrBadPosting, e.Account)
		}
		next[e.Account] = b
	}
	if b, ok := next[HubHeld]; ok && b < 0 {
		return fmt.Errorf("%w: %s would be %d msat", ErrOverdrawn, HubHeld, b)
	}
	for a, b := range next {
		l.balances[a] = b
	}
	l.postings = append(l.postings, p)
	return nil
}

// Balance returns an account's balance: positive when the ledger owes the
// account, negative when the account owes.
func (l *Ledger) Balance(a Account) Msat { return l.balances[a] }

// Balances returns a copy of every non-zero balance.
func (l *Ledger) Balances() map[Account]Msat {
	out := make(map[Account]Msat, len(l.balances))
	for a, b := range l.balances {
		if b != 0 {
			out[a] = b
		}
	}
	return out
}

// Postings returns the postings applied so far, in order. The slice is
// shared; callers must not modify it.
func (l *Ledger) Postings() []Posting { return l.postings }

// Net returns a participant's net for the epoch, earned − spent: the sum of
// its payer and provider balances, including anything carried in.
func (l *Ledger) Net(participant string) Msat {
	return l.balances[Payer(participant)] + l.balances[Provider(participant)]
}

// Nets returns the net of every participant with a non-zero net.
func (l *Ledger) Nets() map[string]Msat {
	out := make(map[string]Msat)
	for a, b := range l.balances {
		if id, ok := a.Participant(); ok {
			out[id] += b
		}
	}
	for id, n := range out {
		if n == 0 {
			delete(out, id)
		}
	}
	return out
}

// RoundedNets returns, for every participant with a non-zero net, its net
// rounded toward zero to whole satoshis: what Close settles when every
// participant can be settled in full (see Msat.Split).
func (l *Ledger) RoundedNets() map[string]btcutil.Amount {
	out := make(map[string]btcutil.Amount)
	for id, n := range l.Nets() {
		if sat, _ := n.Split(); sat != 0 {
			out[id] = sat
		}
	}
	return out
}

// Closing is the result of closing an epoch: what settled on chain and what
// carried into the next epoch. For every participant,
// 1000 × Settled + Carried == Net, and the hub's settlement makes the whole
// sum to zero.
type Closing struct {
	Epoch uint64 `json:"epoch"`

	// Nets are the participants' nets before settlement.
	Nets map[string]Msat `json:"nets_msat"`

	// Settled is each participant's on-chain settlement in whole
	// satoshis: positive paid to it, negative taken from it.
	Settled map[string]btcutil.Amount `json:"settled_sat"`

	// HubSettled is the hub's own settlement, −Σ Settled: the batch's
	// revenue before the mining fee. Because it balances the batch, the
	// hub bears every participant's rounding; no device ever pays a
	// sub-satoshi amount it does not owe.
	HubSettled btcutil.Amount `json:"hub_settled_sat"`

	// Carried is every account's balance after settlement, the opening
	// balances of the next epoch. It sums to zero.
	Carried map[Account]Msat `json:"carried_msat"`
}

// CarriedNet returns the part of a participant's net carried into the next
// epoch.
func (c *Closing) CarriedNet(participant string) Msat {
	return c.Carried[Payer(participant)] + c.Carried[Provider(participant)]
}

// Close ends the epoch. settled gives, for each participant settled on chain,
// the whole satoshis the batch moves (positive: paid to the participant);
// participants not named are carried in full. The hub account HubFees
// settles −Σ settled, and every remaining balance opens the returned ledger
// of the next epoch as one carry posting.
//
// Close does not second-guess the amounts: the batch builder decides them
// (Plan.Settled), and a claim can settle more than a participant's net when
// the device signed for more than the ledger charged it (the excess then
// carries as the participant's credit). It returns an error wrapping
// ErrBadSettlement for an empty participant id or an amount out of range,
// or ErrClosed.
func (l *Ledger) Close(settled map[string]btcutil.Amount) (*Closing, *Ledger, error) {
	if l.closed {
		return nil, nil, fmt.Errorf("%w: epoch %d", ErrClosed, l.epoch)
	}
	nets := l.Nets()
	ids := make([]string, 0, len(settled))
	var total Msat
	for id, s := range settled {
		m := FromSat(s)
		switch {
		case s == 0:
			continue
		case id == "":
			return nil, nil, fmt.Errorf("%w: empty participant", ErrBadSettlement)
		case m > MaxMsat || m < -MaxMsat:
			return nil, nil, fmt.Errorf("%w: %q settles %d sat", ErrBadSettlement, id, int64(s))
		}
		ids = append(ids, id)
		total += m
		if total > MaxMsat || total < -MaxMsat {
			return nil, nil, fmt.Errorf("%w: total out of range", ErrBadSettlement)
		}
	}
	sort.Strings(ids)

	// Payouts: one posting per participant, taken from its provider
	// account when paid and its payer account when charged, then the
	// hub's balancing payout, which empties HubChain.
	for _, id := range ids {
		m := FromSat(settled[id])
		acct := Payer(id)
		if m > 0 {
			acct = Provider(id)
		}
		p := transfer(KindPayout, acct, HubChain, m, fmt.Sprintf("epoch %d", l.epoch))
		if err := l.Post(p); err != nil {
			return nil, nil, err
		}
	}
	if total != 0 {
		p := transfer(KindPayout, HubFees, HubChain, -total, fmt.Sprintf("epoch %d", l.epoch))
		if err := l.Post(p); err != nil {
			return nil, nil, err
		}
	}

	closing := &Closing{
		Epoch:      l.epoch,
		Nets:       nets,
		Settled:    make(map[string]btcutil.Amount, len(ids)),
		HubSettled: -btcutil.Amount(total / 1000),
		Carried:    l.Balances(),
	}
	for _, id := range ids {
		closing.Settled[id] = settled[id]
	}
	l.closed = true

	next := NewLedger(l.epoch + 1)
	if len(closing.Carried) > 0 {
		carry := Posting{Kind: KindCarry, Ref: fmt.Sprintf("epoch %d", l.epoch)}
		accts := make([]Account, 0, len(closing.Carried))
		for a := range closing.Carried {
			accts = append(accts, a)
		}
		sort.Slice(accts, func(i, j int) bool { return accts[i] < accts[j] })
		for _, a := range accts {
			carry.Entries = append(carry.Entries, Entry{Account: a, Amount: closing.Carried[a]})
		}
		if err := next.Post(carry); err != nil {
			// Unreachable while every posting is balanced: the
			// balances of a balanced ledger sum to zero.
			return nil, nil, fmt.Errorf("settlement: carry: %w", err)
		}
	}
	return closing, next, nil
}

// abs returns |m|.
func abs(m Msat) Msat {
	if m < 0 {
		return -m
	}
	return m
}
