package hub

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// ChargeFence names one payment request for owed charges: the claim
// owner that asks (its hubd's instance), the request's own token, fresh
// for every request, and the charges' event ids (ChargeStore.AskCharges).
type ChargeFence struct {
	Provider string   `json:"provider"`
	Owner    string   `json:"owner"`
	Token    string   `json:"token"`
	IDs      []string `json:"ids"`
}

// Validate refuses a fence no store should check: one without an owner, a
// token or an id, or with the separator '|' in its owner or token (stores
// keep "owner|token" in a claim).
func (f ChargeFence) Validate() error {
	if f.Provider == "" || f.Owner == "" || f.Token == "" || len(f.IDs) == 0 ||
		strings.ContainsRune(f.Owner, '|') || strings.ContainsRune(f.Token, '|') {
		return fmt.Errorf("%w: charge fence needs a provider, an owner, a token and ids, without '|'", ErrInvalid)
	}
	return nil
}

// ChargeAsk is one payment request as its asker records it
// (ChargeStore.AskCharges): the fence, and the record under the events
// root.
type ChargeAsk struct {
	ChargeFence
	Root Hash
	TTL  time.Duration
}

// ClaimState is what ChargeStore.AskCharges found of one charge's claim.
type ClaimState uint8

// Claim states.
const (
	// ClaimAsked: the owner's; it names the new request now (or would,
	// had every charge of the request been ClaimAsked).
	ClaimAsked ClaimState = iota + 1
	// ClaimLost: not the owner's (expired, or another owner's).
	ClaimLost
	// ClaimPaid: the owner's, and a payment of the request it names was
	// applied; its receipt is stored with the channel.
	ClaimPaid
)

// ContractRecord is a published tariff contract: its canonical document
// (contracts.Contract.Canonical) under its hash.
type ContractRecord struct {
	Hash      Hash      `json:"hash"`
	Kind      string    `json:"kind"`
	Name      string    `json:"name"` // the document's human id
	Version   int       `json:"version"`
	Document  []byte    `json:"document"` // canonical form
	Published time.Time `json:"published"`
}

// Validate refuses a contract record no store should write: contracts
// are keyed by Hash. Errors wrap ErrInvalid.
func (c ContractRecord) Validate() error {
	if c.Hash == (Hash{}) {
		return fmt.Errorf("%w: contract without hash", ErrInvalid)
	}
	return nil
}

// ContractStore keeps published contracts. Contracts are immutable: a new
// version is a new document with a new hash.
type ContractStore interface {
	// PutContract stores c; storing the same hash again is a no-op.
	PutContract(ctx context.Context, c ContractRecord) error
	// Contract returns the contract with hash h, or ErrNotFound.
	Contract(ctx context.Context, h Hash) (ContractRecord, error)
	// Contracts lists every contract, newest first.
	Contracts(ctx context.Context) ([]ContractRecord, error)
}

// ChargeStatus says how a charge is being paid.
type ChargeStatus string

// Charge statuses.
const (
	// ChargeOwed: recorded against the payer's channel as Owed, within
	// its credit limit; a device-signed payment will cover it.
	ChargeOwed ChargeStatus = "owed"
	// ChargePaid: covered by a device-signed channel state.
	ChargePaid ChargeStatus = "paid"
	// ChargeUnpaid: beyond the credit limit, or no channel: the provider
	// was told to stop service; the hub does not pay it out.
	ChargeUnpaid ChargeStatus = "unpaid"
	// ChargeHeld: a conditional-release payment waiting for its
	// condition (cold chain).
	ChargeHeld ChargeStatus = "held"
)

// Code is the one-byte form of s that the stores keep in their compact
// charge records; ok is false for a status this version does not know.
func (s ChargeStatus) Code() (code byte, ok bool) {
	switch s {
	case ChargeOwed:
		return 'o', true
	case ChargePaid:
		return 'p', true
	case ChargeUnpaid:
		return 'u', true
	case ChargeHeld:
		return 'h', true
	}
	return 0, false
}

// ChargeStatusOf is the inverse of ChargeStatus.Code.
func ChargeStatusOf(code byte) (ChargeStatus, bool) {
	for _, s := range []ChargeStatus{ChargeOwed, ChargePaid, ChargeUnpaid, ChargeHeld} {
		if c, _ := s.Code(); c == code {
			return s, true
		}
	}
	return "", false
}

// Charge is one priced usage event, the unit of exactly-once charging:
// (Provider, EventID) is unique.
type Charge struct {
	Provider string `json:"provider"`
	EventID  string `json:"event_id"`
	Payer    string `json:"payer"`
	Contract Hash   `json:"contract"`
	// Amount is what the payer owes; Fee is the hub's part of it, so the
	// provider earns Amount − Fee.
	Amount msat.Amount `json:"amount_msat"`
	Fee    msat.Amount `json:"fee_msat"`
	// Channel is the payer channel charged; zero when Status is unpaid
	// for want of one.
	Channel wire.OutPoint `json:"channel"`
	Status  ChargeStatus  `json:"status"`
	// EventTime is the usage's own time (pricing uses it); Charged is
	// when the hub recorded it.
	EventTime time.Time `json:"event_time"`
	Charged   time.Time `json:"charged"`
	// Quantity is the metered quantity the charge priced, as a decimal
	// string, for kinds whose price depends on what came before in a
	// billing window (bandwidth, in MB); empty otherwise. Charging sums
	// it to rebuild a window's volume after a restart.
	Quantity string `json:"quantity,omitempty"`
	// Digest identifies the content of the event the charge was made
	// from (metering.Digest: its canonical form without the signature),
	// so that another event under the same (Provider, EventID) is told
	// apart from a redelivery. Zero in charges recorded
	// before digests were kept.
	Digest Hash `json:"digest"`
	// Withheld, on the end event of a conditional release, is what its
	// contract kept back from the hold (the hold's amount less Amount):
	// refunded to the payer by the contract, never owed to anyone.
	Withheld msat.Amount `json:"withheld_msat,omitempty"`
	// Shares are the parts of the provider's part (Amount − Fee) that
	// the contract's revenue splits pay to other payees
	// (contracts.Contract.SplitShares), none zero; the provider earns
	// what they leave (ProviderPart).
	Shares []Share `json:"shares,omitempty"`
	// Paid is when the hub marked the charge paid (ChargeStore.
	// SetChargeStatus), after the receipt that paid it was stored, so a
	// charge paid after the epoch it was recorded in is settled (its fee
	// and shares posted) in the epoch it was marked paid in; zero while it
	// is not paid, in charges recorded paid (nothing to request) and in
	// charges paid before paid times were kept.
	Paid time.Time `json:"paid,omitzero"`
}

// MaxShares bounds a charge's Shares (contracts.MaxSplits).
const MaxShares = 16

// Share is one payee's part of a charge under the contract's revenue
// splits.
type Share struct {
	Payee string      `json:"payee"`
	Msat  msat.Amount `json:"msat"`
}

// SharesTotal is the sum of c's Shares.
func (c Charge) SharesTotal() msat.Amount {
	var t msat.Amount
	for _, s := range c.Shares {
		t += s.Msat
	}
	return t
}

// ProviderPart is what the charge brings its provider: Amount less the
// hub's fee and the other payees' shares.
func (c Charge) ProviderPart() msat.Amount { return c.Amount - c.Fee - c.SharesTotal() }

// PartOf is what the charge brings the account of id: its provider part
// when id is the provider, its share when id is a payee of it, else 0.
func (c Charge) PartOf(id string) msat.Amount {
	if id == c.Provider {
		return c.ProviderPart()
	}
	for _, s := range c.Shares {
		if s.Payee == id {
			return s.Msat
		}
	}
	return 0
}

// Validate checks what every store requires of a charge before recording
// it: a provider and an event id, no zero byte in the provider or the payer
// (stores end names with one in their index keys), a fee no larger than the
// amount, and a known status. Errors wrap ErrInvalid. A store may refuse
// more (redisstore bounds amounts), never less.
func (c Charge) Validate() error {
	switch {
	case c.Provider == "" || c.EventID == "":
		return fmt.Errorf("%w: charge needs a provider and an event id", ErrInvalid)
	case strings.IndexByte(c.Provider, 0) >= 0 || strings.IndexByte(c.Payer, 0) >= 0:
		return fmt.Errorf("%w: charge %s: zero byte in a name", ErrInvalid, c.EventID)
	case c.Fee > c.Amount:
		return fmt.Errorf("%w: charge %s: fee %d above amount %d", ErrInvalid, c.EventID, c.Fee, c.Amount)
	}
	if _, ok := c.Status.Code(); !ok {
		return fmt.Errorf("%w: charge %s: status %q", ErrInvalid, c.EventID, c.Status)
	}
	return c.validateShares()
}

// validateShares checks the shares: at most MaxShares, each a non-zero
// amount to a named payee other than the provider, listed once, and
// together no more than the provider's part, so the provider's own part
// never goes negative and the charge conserves to the msat.
func (c Charge) validateShares() error {
	if len(c.Shares) > MaxShares {
		return fmt.Errorf("%w: charge %s: %d shares, at most %d", ErrInvalid, c.EventID, len(c.Shares), MaxShares)
	}
	seen := make(map[string]bool, len(c.Shares))
	left := c.Amount - c.Fee
	for _, s := range c.Shares {
		switch {
		case s.Payee == "" || strings.IndexByte(s.Payee, 0) >= 0:
			return fmt.Errorf("%w: charge %s: share payee %q", ErrInvalid, c.EventID, s.Payee)
		case s.Payee == c.Provider || seen[s.Payee]:
			return fmt.Errorf("%w: charge %s: payee %s has two parts", ErrInvalid, c.EventID, s.Payee)
		case s.Msat == 0:
			return fmt.Errorf("%w: charge %s: zero share to %s", ErrInvalid, c.EventID, s.Payee)
		case s.Msat > left:
			return fmt.Errorf("%w: charge %s: shares above the provider's part %d", ErrInvalid, c.EventID, c.Amount-c.Fee)
		}
		seen[s.Payee] = true
		left -= s.Msat
	}
	return nil
}

// ChargeResult tells a caller of RecordCharges what happened to one charge.
type ChargeResult struct {
	// Duplicate is true when (Provider, EventID) was recorded before: the
	// stored charge (with its own Digest, which may differ from the one
	// offered) is returned in Stored and nothing changed.
	Duplicate bool
	Stored    Charge
}

// ChargeStore records charges exactly once. Implementations make
// RecordCharges durable before returning and share fsyncs between callers.
type ChargeStore interface {
	// RecordCharges writes every charge whose (Provider, EventID) is new,
	// atomically with raising its channel's Owed by Amount when Status
	// is ChargeOwed. A charge with Status ChargeOwed that would push Owed
	// past creditLimit is stored as ChargeUnpaid instead. Results are in
	// the order of cs. It returns an error only when nothing was written.
	RecordCharges(ctx context.Context, cs []Charge, creditLimit msat.Amount) ([]ChargeResult, error)

	// SetChargeStatus moves charges to status (owed → paid when a payment
	// covers them, held → owed or unpaid when a condition resolves). at
	// is when the status is set: a charge moved to ChargePaid keeps it as
	// its Paid time and is listed by ChargesPaid from then on (a zero at
	// keeps no paid time); a charge that is paid already keeps its first
	// one. Other statuses ignore at.
	//
	// A store that also holds epochs (SettlementStore) stamps the later
	// of at and the open epoch's From, reading the open epoch atomically
	// with the write: at is read from the clock before the write, and a
	// cut (with the closed epoch's ledger reading ChargesPaid right after
	// it) may fall in between; a charge stamped before the cut but
	// written after it would be in no epoch's ledger. So a charge is
	// paid in the epoch open when its mark is written, never in one
	// already cut (PaidTime). With no epoch stored, at is kept.
	//
	// It returns an error wrapping ErrNotFound, writing nothing, when one
	// of the events was never charged, and ErrInvalid for an unknown
	// status.
	SetChargeStatus(ctx context.Context, provider string, eventIDs []string, status ChargeStatus, at time.Time) error

	// Charge returns one charge, or ErrNotFound.
	Charge(ctx context.Context, provider, eventID string) (Charge, error)

	// ChargesByProvider returns a provider's charges recorded in
	// [from, to), oldest first.
	ChargesByProvider(ctx context.Context, provider string, from, to time.Time) ([]Charge, error)

	// ChargesByPayee returns the charges recorded in [from, to) that
	// give payee a share (Charge.Shares), oldest first.
	ChargesByPayee(ctx context.Context, payee string, from, to time.Time) ([]Charge, error)

	// ChargesByPayer returns a payer's charges recorded in [from, to),
	// oldest first.
	ChargesByPayer(ctx context.Context, payer string, from, to time.Time) ([]Charge, error)

	// ChargesPaid returns every charge whose Paid time is in [from, to),
	// of every provider, oldest paid first: settlement posts the fee and
	// shares of a charge in the epoch it was paid in, however long it
	// was owed before. Charges paid without a paid time are not listed.
	ChargesPaid(ctx context.Context, from, to time.Time) ([]Charge, error)

	// OwedCharges returns every charge whose status is ChargeOwed, oldest
	// recorded first (a charge moved back to owed by SetChargeStatus may
	// come by its recording or by the move). Charging reloads them at start to request them
	// again; implementations keep an index of owed charges so this costs
	// what is owed, not every charge ever recorded.
	OwedCharges(ctx context.Context) ([]Charge, error)

	// AskCharges records one payment request for owed charges, as its
	// asker is about to send it: atomically, if every one of a.IDs is
	// claimed by a.Owner (ClaimCharges) and its claim names no paid
	// request, each claim is made to name a.Token, the request's own, and
	// a.IDs are recorded under a.Root (their channel.EventsRoot, which
	// the paying receipt names) for a.TTL (by the store's own clock, as
	// leases are); a hub that finds the request's payment stored but its
	// charges owed (its asker stopped after the payment) learns from the
	// record which charges the receipt covers. A zero Root records
	// nothing: the asker gives up on its earlier request (a token never
	// sent supersedes it). Otherwise nothing is written. It returns each
	// id's ClaimState: all ClaimAsked when the request was recorded.
	//
	// A payment fenced by the request (PaymentUpdate.Fence) is applied
	// only while every one of its charges' claims is the owner's and names
	// the token, and marks them paid in the same atomic write: a request
	// whose charges another hubd has claimed since (its asker died), or
	// that its asker has superseded (asking again, giving up), can never
	// be paid, and one paid is never superseded unseen. Recording the
	// same root again replaces the record.
	AskCharges(ctx context.Context, a ChargeAsk) ([]ClaimState, error)

	// ChargeRequests returns, for each of roots, the ids recorded under
	// (provider, root): a hubd that finds a request's payment stored
	// learns which charges it paid. An entry is nil for a root with no
	// live record (never recorded, taken, or expired).
	ChargeRequests(ctx context.Context, provider string, roots []Hash) ([][]string, error)
	// TakeChargeRequests is ChargeRequests that also deletes the records,
	// atomically per root: the charges are marked paid, and nothing will
	// look for the payment again.
	TakeChargeRequests(ctx context.Context, provider string, roots []Hash) ([][]string, error)

	// ClaimCharges claims provider's charges ids for owner until ttl from
	// now (by the store's own clock, as leases are): a charge no other
	// owner holds a live claim on is claimed, and a claim owner holds
	// already is renewed. It returns, per id, whether owner holds it now.
	// Charging claims every owed charge it queues for a request and
	// renews the claims while it holds them; an owed charge nobody holds
	// (its recorder died before asking for it) is claimed by whichever
	// hubd finds it first and requested once. Claims say which process
	// is alive and asking: a store opened by one process only may keep
	// them in memory.
	ClaimCharges(ctx context.Context, provider string, ids []string, owner string, ttl time.Duration) ([]bool, error)

	// ReleaseCharges drops owner's claims on provider's charges ids (a
	// hubd stopping hands its charges to the others, and no request it
	// sent can be paid after); other owners' claims stay.
	ReleaseCharges(ctx context.Context, provider string, ids []string, owner string) error
}
