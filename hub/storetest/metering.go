package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
)

// MeteringStoreUnderTest is what the metering suite needs of a store: the
// contract and charge stores, the channel store whose Owed charges raise,
// and Close, so it can check what survives a reopen.
type MeteringStoreUnderTest interface {
	hub.ContractStore
	hub.ChargeStore
	hub.ChannelStore
	Close() error
}

// RunMetering runs the contract and charge store suite against the stores
// newStore makes. newStore follows the same rules as for Run: the first call
// for a test returns an empty store, a later call with the same t (after the
// earlier store was closed) reopens the same data, and Close may be called
// twice.
//
// Beyond hub.ChargeStore's documentation, the suite pins these choices:
// a charge with Status ChargeOwed that names no channel, or a channel the
// store does not hold, is stored as ChargeUnpaid with a zero Channel (the
// payer has nothing to pay from, and failing the whole call would refuse
// the other charges of the batch); credit is granted in the order of the
// slice, so a later, smaller charge may still fit after a larger one was
// refused; SetChargeStatus changes nothing but the status (Owed moves with
// payments, not with it) and returns hub.ErrNotFound, changing nothing,
// when one of the events was never charged; OwedCharges lists charges recorded
// owed in the order they were recorded, whatever their Charged times (one
// moved back to owed later may come by its recording or by the move).
func RunMetering(t *testing.T, newStore func(t *testing.T) MeteringStoreUnderTest) {
	open := closing(newStore)

	t.Run("PutContractIdempotent", func(t *testing.T) { testPutContractIdempotent(t, open(t)) })
	t.Run("ContractNotFound", func(t *testing.T) { testContractNotFound(t, open(t)) })
	t.Run("ContractsNewestFirst", func(t *testing.T) { testContractsNewestFirst(t, open(t)) })
	t.Run("RecordChargesNew", func(t *testing.T) { testRecordChargesNew(t, open(t)) })
	t.Run("RecordChargesDuplicate", func(t *testing.T) { testRecordChargesDuplicate(t, open(t)) })
	t.Run("DuplicateKeepsFirstDigest", func(t *testing.T) { testDuplicateKeepsFirstDigest(t, open(t)) })
	t.Run("OwedRaisedAtomically", func(t *testing.T) { testOwedRaisedAtomically(t, open(t)) })
	t.Run("CreditLimitMakesUnpaid", func(t *testing.T) { testCreditLimitMakesUnpaid(t, open(t)) })
	t.Run("UnknownChannel", func(t *testing.T) { testUnknownChannel(t, open(t)) })
	t.Run("ChargeNotFound", func(t *testing.T) { testChargeNotFound(t, open(t)) })
	t.Run("InvalidCharge", func(t *testing.T) { testInvalidCharge(t, open(t)) })
	t.Run("SetChargeStatus", func(t *testing.T) { testSetChargeStatus(t, open(t)) })
	t.Run("PaidTimeKeptAndListed", func(t *testing.T) { testPaidTimeKeptAndListed(t, open(t), newStore) })
	t.Run("ChargesByProviderWindow", func(t *testing.T) { testChargesByProviderWindow(t, open(t)) })
	t.Run("ChargesByPayerWindow", func(t *testing.T) { testChargesByPayerWindow(t, open(t)) })
	t.Run("ChargesByPayeeShares", func(t *testing.T) { testChargesByPayeeShares(t, open(t), newStore) })
	t.Run("ConcurrentExactlyOnce", func(t *testing.T) { testConcurrentExactlyOnce(t, open(t)) })
	t.Run("ReopenKeepsCharges", func(t *testing.T) { testReopenKeepsCharges(t, newStore) })
	runMeteringOwed(t, open, newStore)
}

// noLimit is a credit limit no test reaches.
const noLimit msat.Amount = 1 << 50

func testPutContractIdempotent(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewContract(t, "tariff-a", 1, epoch())
	MustPutContract(t, s, c)
	assertContract(t, MustContract(t, s, c.Hash), c)

	// The same hash again, even with other fields, keeps the first record:
	// a contract is immutable once published.
	again := c
	again.Name = "renamed"
	again.Published = epoch().Add(time.Hour)
	MustPutContract(t, s, again)
	assertContract(t, MustContract(t, s, c.Hash), c)
	all, err := s.Contracts(ctx)
	if err != nil {
		t.Fatalf("Contracts: %v", err)
	}
	if len(all) != 1 {
		t.Fatalf("Contracts = %d records after storing one twice, want 1", len(all))
	}
	assertContract(t, all[0], c)
}

func testContractNotFound(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	if _, err := s.Contract(ctx, hub.Hash{1, 2, 3}); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Contract of an unknown hash: error = %v, want ErrNotFound", err)
	}
	all, err := s.Contracts(ctx)
	if err != nil || len(all) != 0 {
		t.Fatalf("Contracts of an empty store = %d records, %v; want none", len(all), err)
	}
	MustPutContract(t, s, NewContract(t, "tariff-a", 1, epoch()))
	if _, err := s.Contract(ctx, hub.Hash{1, 2, 3}); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Contract of an unknown hash beside a stored one: error = %v, want ErrNotFound", err)
	}
}

func testContractsNewestFirst(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	// Stored out of order, so an implementation listing in insertion order
	// fails.
	mid := NewContract(t, "toll", 2, epoch().Add(time.Minute))
	old := NewContract(t, "toll", 1, epoch())
	newest := NewContract(t, "bandwidth", 1, epoch().Add(time.Hour))
	for _, c := range []hub.ContractRecord{mid, old, newest} {
		MustPutContract(t, s, c)
	}
	all, err := s.Contracts(ctx)
	if err != nil {
		t.Fatalf("Contracts: %v", err)
	}
	want := []hub.ContractRecord{newest, mid, old}
	if len(all) != len(want) {
		t.Fatalf("Contracts = %d records, want %d", len(all), len(want))
	}
	for i := range want {
		assertContract(t, all[i], want[i])
	}
}

func testRecordChargesNew(t *testing.T, s MeteringStoreUnderTest) {
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	cs := []hub.Charge{
		NewCharge("charger-7", "evt-1", "payer-1", c.Funding, 1500, epoch()),
		NewCharge("charger-7", "evt-2", "payer-1", c.Funding, 2500, epoch().Add(time.Second)),
		NewCharge("gantry-3", "evt-1", "payer-1", c.Funding, 7, epoch().Add(2*time.Second)),
	}
	cs[1].Fee = 25
	res := MustRecordCharges(t, s, cs, noLimit)
	for i, r := range res {
		if r.Duplicate {
			t.Fatalf("result %d: Duplicate on first record", i)
		}
		assertCharge(t, r.Stored, cs[i])
		assertCharge(t, MustCharge(t, s, cs[i].Provider, cs[i].EventID), cs[i])
	}
	// The same event id under another provider is another charge.
	if got := MustChannel(t, s, c.Funding).Owed; got != 4007 {
		t.Fatalf("Owed = %d msat, want 4007", got)
	}
	if res := MustRecordCharges(t, s, nil, noLimit); len(res) != 0 {
		t.Fatalf("RecordCharges(nil) = %d results, want none", len(res))
	}
}

func testRecordChargesDuplicate(t *testing.T, s MeteringStoreUnderTest) {
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	first := NewCharge("charger-7", "evt-1", "payer-1", c.Funding, 1000, epoch())
	// A retry of the same event inside one batch, priced differently: the
	// first one wins.
	retry := first
	retry.Amount, retry.Charged = 9999, epoch().Add(time.Minute)
	other := NewCharge("charger-7", "evt-2", "payer-1", c.Funding, 10, epoch())
	res := MustRecordCharges(t, s, []hub.Charge{first, retry, other}, noLimit)
	if res[0].Duplicate || res[2].Duplicate {
		t.Fatalf("new charges reported as duplicates: %+v", res)
	}
	if !res[1].Duplicate {
		t.Fatalf("second copy of evt-1 in one call: Duplicate false")
	}
	assertCharge(t, res[1].Stored, first)
	if got := MustChannel(t, s, c.Funding).Owed; got != 1010 {
		t.Fatalf("Owed after a batch with a duplicate = %d msat, want 1010", got)
	}

	// Across calls: still a duplicate, and nothing changes.
	retry.Status = hub.ChargePaid
	res = MustRecordCharges(t, s, []hub.Charge{retry, other}, noLimit)
	for i, want := range []hub.Charge{first, other} {
		if !res[i].Duplicate {
			t.Fatalf("result %d of a replayed batch: Duplicate false", i)
		}
		assertCharge(t, res[i].Stored, want)
		assertCharge(t, MustCharge(t, s, want.Provider, want.EventID), want)
	}
	if got := MustChannel(t, s, c.Funding).Owed; got != 1010 {
		t.Fatalf("Owed after a replayed batch = %d msat, want 1010", got)
	}
	got, err := s.ChargesByProvider(context.Background(), "charger-7", epoch(), epoch().Add(time.Hour))
	if err != nil {
		t.Fatalf("ChargesByProvider: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("ChargesByProvider = %d charges after duplicates, want 2", len(got))
	}
}

// testDuplicateKeepsFirstDigest: a charge under a recorded (provider,
// event id) but with another content digest is reported Duplicate with
// the stored charge, whose digest is the first one, and changes nothing:
// charging compares the digests to tell a redelivery from another event
// reusing the id (which it dead-letters). A charge without a digest (as
// recorded before digests were kept) reads back with a zero one.
func testDuplicateKeepsFirstDigest(t *testing.T, s MeteringStoreUnderTest) {
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	first := NewCharge("charger-7", "session-413", "payer-1", c.Funding, 1000, epoch())
	other := first
	other.Digest = hub.Hash{0xd1, 0xff}
	other.Amount = 5000
	legacy := NewCharge("charger-7", "legacy-1", "payer-1", c.Funding, 10, epoch())
	legacy.Digest = hub.Hash{}
	res := MustRecordCharges(t, s, []hub.Charge{first, other, legacy}, noLimit)
	if res[0].Duplicate || !res[1].Duplicate || res[2].Duplicate {
		t.Fatalf("results %+v: want new, duplicate, new", res)
	}
	assertCharge(t, res[0].Stored, first)
	assertCharge(t, res[1].Stored, first)
	assertCharge(t, res[2].Stored, legacy)
	res = MustRecordCharges(t, s, []hub.Charge{other}, noLimit)
	if !res[0].Duplicate {
		t.Fatal("another digest under a recorded id: Duplicate false")
	}
	assertCharge(t, res[0].Stored, first)
	assertCharge(t, MustCharge(t, s, first.Provider, first.EventID), first)
	assertCharge(t, MustCharge(t, s, legacy.Provider, legacy.EventID), legacy)
	if got := MustChannel(t, s, c.Funding).Owed; got != 1010 {
		t.Fatalf("Owed = %d msat, want 1010: the other content must not be charged", got)
	}
}

func testOwedRaisedAtomically(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	a, b := NewChannel(t, "payer-a"), NewChannel(t, "payer-b")
	MustPutChannel(t, s, a)
	MustPutChannel(t, s, b)
	// Owed from before (a capture while the device was offline) is added
	// to, not replaced.
	if err := s.ApplyOwed(ctx, a.Funding, nil, 333, noLimit); err != nil {
		t.Fatalf("ApplyOwed: %v", err)
	}
	paid := NewCharge("charger-7", "evt-paid", "payer-a", a.Funding, 50_000, epoch())
	paid.Status = hub.ChargePaid
	held := NewCharge("charger-7", "evt-held", "payer-a", a.Funding, 70_000, epoch())
	held.Status = hub.ChargeHeld
	cs := []hub.Charge{
		NewCharge("charger-7", "evt-1", "payer-a", a.Funding, 1_234_567, epoch()),
		NewCharge("charger-7", "evt-2", "payer-b", b.Funding, 1, epoch()),
		paid,
		NewCharge("charger-7", "evt-3", "payer-a", a.Funding, 999, epoch()),
		held,
		NewCharge("charger-7", "evt-4", "payer-b", b.Funding, 1_000_000_001, epoch()),
	}
	res := MustRecordCharges(t, s, cs, noLimit)
	for i, r := range res {
		assertCharge(t, r.Stored, cs[i])
	}
	// Only owed charges raise Owed; paid and held ones are stored as given.
	if got, want := MustChannel(t, s, a.Funding).Owed, msat.Amount(333+1_234_567+999); got != want {
		t.Fatalf("channel a Owed = %d msat, want %d", got, want)
	}
	if got, want := MustChannel(t, s, b.Funding).Owed, msat.Amount(1+1_000_000_001); got != want {
		t.Fatalf("channel b Owed = %d msat, want %d", got, want)
	}
	// The rest of the channel state is untouched.
	wantA := a
	wantA.Owed = 333 + 1_234_567 + 999
	assertChannel(t, MustChannel(t, s, a.Funding), wantA)
}

func testCreditLimitMakesUnpaid(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	if err := s.ApplyOwed(ctx, c.Funding, nil, 1000, 10_000); err != nil {
		t.Fatalf("ApplyOwed: %v", err)
	}
	cs := []hub.Charge{
		NewCharge("charger-7", "evt-1", "payer-1", c.Funding, 6000, epoch()), // 7000
		NewCharge("charger-7", "evt-2", "payer-1", c.Funding, 3001, epoch()), // 10001: past the limit
		NewCharge("charger-7", "evt-3", "payer-1", c.Funding, 3000, epoch()), // 10000: exactly the limit
		NewCharge("charger-7", "evt-4", "payer-1", c.Funding, 1, epoch()),    // 10001
	}
	res := MustRecordCharges(t, s, cs, 10_000)
	want := []hub.ChargeStatus{hub.ChargeOwed, hub.ChargeUnpaid, hub.ChargeOwed, hub.ChargeUnpaid}
	for i, r := range res {
		w := cs[i]
		w.Status = want[i]
		if r.Duplicate {
			t.Fatalf("result %d: Duplicate on first record", i)
		}
		// An unpaid charge keeps the channel it would have been charged to:
		// the payer has one, it was only out of credit.
		assertCharge(t, r.Stored, w)
		assertCharge(t, MustCharge(t, s, w.Provider, w.EventID), w)
	}
	if got := MustChannel(t, s, c.Funding).Owed; got != 10_000 {
		t.Fatalf("Owed = %d msat, want the limit 10000", got)
	}
	// At the limit, a zero-amount owed charge still fits.
	zero := NewCharge("charger-7", "evt-5", "payer-1", c.Funding, 0, epoch())
	if r := MustRecordCharges(t, s, []hub.Charge{zero}, 10_000); r[0].Stored.Status != hub.ChargeOwed {
		t.Fatalf("zero charge at the limit stored as %s, want owed", r[0].Stored.Status)
	}
}

func testUnknownChannel(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	known := NewChannel(t, "payer-1")
	MustPutChannel(t, s, known)
	missing := NewOutPoint(t)
	cs := []hub.Charge{
		NewCharge("charger-7", "evt-1", "payer-1", missing, 500, epoch()),
		NewCharge("charger-7", "evt-2", "payer-1", known.Funding, 700, epoch()),
		NewCharge("charger-7", "evt-3", "payer-9", wire.OutPoint{}, 900, epoch()),
	}
	res := MustRecordCharges(t, s, cs, noLimit)
	for _, i := range []int{0, 2} {
		w := cs[i]
		w.Status, w.Channel = hub.ChargeUnpaid, wire.OutPoint{}
		assertCharge(t, res[i].Stored, w)
		assertCharge(t, MustCharge(t, s, w.Provider, w.EventID), w)
	}
	assertCharge(t, res[1].Stored, cs[1])
	if got := MustChannel(t, s, known.Funding).Owed; got != 700 {
		t.Fatalf("Owed of the known channel = %d msat, want 700", got)
	}
	if _, err := s.Channel(ctx, missing); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("a charge created channel %s: Channel error = %v", missing, err)
	}
}

func testChargeNotFound(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	if _, err := s.Charge(ctx, "charger-7", "evt-1"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Charge of an unknown event: error = %v, want ErrNotFound", err)
	}
	MustRecordCharges(t, s, []hub.Charge{NewCharge("charger-7", "evt-1", "p", wire.OutPoint{}, 1, epoch())}, noLimit)
	if _, err := s.Charge(ctx, "charger-8", "evt-1"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("Charge of a known event id under another provider: error = %v, want ErrNotFound", err)
	}
	for _, list := range []func() ([]hub.Charge, error){
		func() ([]hub.Charge, error) {
			return s.ChargesByProvider(ctx, "charger-8", epoch(), epoch().Add(time.Hour))
		},
		func() ([]hub.Charge, error) { return s.ChargesByPayer(ctx, "nobody", epoch(), epoch().Add(time.Hour)) },
	} {
		if got, err := list(); err != nil || len(got) != 0 {
			t.Fatalf("charges of an unknown party = %d, %v; want none", len(got), err)
		}
	}
}

func testInvalidCharge(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	good := NewCharge("charger-7", "evt-ok", "payer-1", c.Funding, 100, epoch())
	bad := map[string]func(*hub.Charge){
		"NoProvider":    func(ch *hub.Charge) { ch.Provider = "" },
		"NoEventID":     func(ch *hub.Charge) { ch.EventID = "" },
		"UnknownStatus": func(ch *hub.Charge) { ch.Status = "maybe" },
		"FeeOverAmount": func(ch *hub.Charge) { ch.Fee = ch.Amount + 1 },
		// Both stores refuse a zero byte in either name (hub.Charge.Validate);
		// redisstore once let one through in the payer.
		"ZeroByteInProvider": func(ch *hub.Charge) { ch.Provider = "charger\x007" },
		"ZeroByteInPayer":    func(ch *hub.Charge) { ch.Payer = "payer\x001" },
		// Shares never take more than the provider's part, name a payee
		// once and never the provider (hub.Charge.Validate).
		"SharesOverPart":  func(ch *hub.Charge) { ch.Shares = []hub.Share{{Payee: "host", Msat: ch.Amount - ch.Fee + 1}} },
		"ShareToProvider": func(ch *hub.Charge) { ch.Shares = []hub.Share{{Payee: ch.Provider, Msat: 1}} },
		"PayeeTwice": func(ch *hub.Charge) {
			ch.Shares = []hub.Share{{Payee: "host", Msat: 1}, {Payee: "host", Msat: 1}}
		},
		"ZeroShare":       func(ch *hub.Charge) { ch.Shares = []hub.Share{{Payee: "host", Msat: 0}} },
		"ZeroByteInPayee": func(ch *hub.Charge) { ch.Shares = []hub.Share{{Payee: "ho\x00st", Msat: 1}} },
	}
	for name, spoil := range bad {
		ch := NewCharge("charger-7", "evt-bad", "payer-1", c.Funding, 100, epoch())
		spoil(&ch)
		// The valid charge beside it is not written either: an error means
		// nothing was.
		if _, err := s.RecordCharges(ctx, []hub.Charge{good, ch}, noLimit); !errors.Is(err, hub.ErrInvalid) {
			t.Fatalf("%s: RecordCharges error = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.Charge(ctx, good.Provider, good.EventID); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("a refused call stored a charge: Charge error = %v", err)
	}
	if got := MustChannel(t, s, c.Funding).Owed; got != 0 {
		t.Fatalf("a refused call raised Owed to %d msat", got)
	}
}

func testSetChargeStatus(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	held := NewCharge("coldchain-1", "evt-3", "payer-1", c.Funding, 300, epoch())
	held.Status = hub.ChargeHeld
	cs := []hub.Charge{
		NewCharge("coldchain-1", "evt-1", "payer-1", c.Funding, 100, epoch()),
		NewCharge("coldchain-1", "evt-2", "payer-1", c.Funding, 200, epoch()),
		held,
	}
	MustRecordCharges(t, s, cs, noLimit)

	if err := s.SetChargeStatus(ctx, "coldchain-1", []string{"evt-1", "evt-2"}, hub.ChargePaid, time.Time{}); err != nil {
		t.Fatalf("SetChargeStatus(paid): %v", err)
	}
	if err := s.SetChargeStatus(ctx, "coldchain-1", []string{"evt-3"}, hub.ChargeOwed, time.Time{}); err != nil {
		t.Fatalf("SetChargeStatus(owed): %v", err)
	}
	for i, st := range []hub.ChargeStatus{hub.ChargePaid, hub.ChargePaid, hub.ChargeOwed} {
		w := cs[i]
		w.Status = st
		assertCharge(t, MustCharge(t, s, w.Provider, w.EventID), w)
	}
	// Owed follows payments (ApplyPayment sets it), not status changes.
	if got := MustChannel(t, s, c.Funding).Owed; got != 300 {
		t.Fatalf("Owed after status changes = %d msat, want 300", got)
	}
	// The status shows in the windowed lists too.
	got, err := s.ChargesByPayer(ctx, "payer-1", epoch(), epoch().Add(time.Second))
	if err != nil {
		t.Fatalf("ChargesByPayer: %v", err)
	}
	for _, ch := range got {
		if ch.EventID == "evt-1" && ch.Status != hub.ChargePaid {
			t.Fatalf("ChargesByPayer shows evt-1 as %s, want paid", ch.Status)
		}
	}

	// One unknown id refuses the whole call.
	err = s.SetChargeStatus(ctx, "coldchain-1", []string{"evt-3", "evt-404"}, hub.ChargeUnpaid, time.Time{})
	if !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("SetChargeStatus with an unknown event: error = %v, want ErrNotFound", err)
	}
	if got := MustCharge(t, s, "coldchain-1", "evt-3").Status; got != hub.ChargeOwed {
		t.Fatalf("a refused SetChargeStatus moved evt-3 to %s", got)
	}
	if err := s.SetChargeStatus(ctx, "coldchain-1", []string{"evt-3"}, "maybe", time.Time{}); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("SetChargeStatus to an unknown status: error = %v, want ErrInvalid", err)
	}
}

// testPaidTimeKeptAndListed: a charge marked paid keeps the time it was
// marked, its shares and everything else (a record whose paid time follows
// variable-length fields), keeps its first paid time when marked again, and
// is listed by ChargesPaid by that time, whatever provider recorded it and
// when; one marked paid without a time, or not paid, is not listed; all of
// it survives a reopen.
func testPaidTimeKeptAndListed(t *testing.T, s MeteringStoreUnderTest, newStore func(t *testing.T) MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	split := NewCharge("cpo-1", "evt-split", "payer-1", c.Funding, 1000, epoch())
	split.Shares = []hub.Share{{Payee: "host-1", Msat: 300}, {Payee: "emp-1", Msat: 7}}
	old := NewCharge("cpo-1", "evt-a-old", "payer-1", c.Funding, 100, epoch())
	old.Digest = hub.Hash{} // a record that ends after its quantity
	plain := NewCharge("meter-2", "evt-plain", "payer-1", c.Funding, 200, epoch().Add(-time.Hour))
	untimed := NewCharge("meter-2", "evt-untimed", "payer-1", c.Funding, 50, epoch())
	owed := NewCharge("meter-2", "evt-owed", "payer-1", c.Funding, 10, epoch())
	// Charges paid at one instant list in recording order (boltstore)
	// or event id order (redisstore): both are old, then split.
	MustRecordCharges(t, s, []hub.Charge{old, split, plain, untimed, owed}, noLimit)

	day := epoch().Add(24 * time.Hour)
	mark := func(provider string, at time.Time, ids ...string) {
		t.Helper()
		if err := s.SetChargeStatus(ctx, provider, ids, hub.ChargePaid, at); err != nil {
			t.Fatalf("SetChargeStatus(%v paid at %v): %v", ids, at, err)
		}
	}
	mark("cpo-1", day.Add(2*time.Second), "evt-split", "evt-a-old")
	mark("meter-2", day.Add(time.Second), "evt-plain")
	mark("meter-2", time.Time{}, "evt-untimed")
	// Marked again later: the first paid time stays.
	mark("cpo-1", day.Add(time.Hour), "evt-split")

	for _, w := range []*hub.Charge{&split, &old, &plain, &untimed} {
		w.Status = hub.ChargePaid
	}
	split.Paid, old.Paid, plain.Paid = day.Add(2*time.Second), day.Add(2*time.Second), day.Add(time.Second)
	check := func(s MeteringStoreUnderTest) {
		t.Helper()
		for _, w := range []hub.Charge{old, split, plain, untimed, owed} {
			assertCharge(t, MustCharge(t, s, w.Provider, w.EventID), w)
		}
		got, err := s.ChargesPaid(ctx, day, day.Add(2*time.Hour))
		if err != nil {
			t.Fatalf("ChargesPaid: %v", err)
		}
		assertCharges(t, got, []hub.Charge{plain, old, split})
		got, err = s.ChargesPaid(ctx, day.Add(time.Second+time.Nanosecond), day.Add(2*time.Second))
		if err != nil {
			t.Fatalf("ChargesPaid: %v", err)
		}
		assertCharges(t, got, nil)
		got, err = s.ChargesPaid(ctx, epoch().Add(-2*time.Hour), day)
		if err != nil {
			t.Fatalf("ChargesPaid: %v", err)
		}
		assertCharges(t, got, nil)
		// The recorded-time lists show the paid time too.
		got, err = s.ChargesByPayee(ctx, "emp-1", epoch(), epoch().Add(time.Second))
		if err != nil {
			t.Fatalf("ChargesByPayee: %v", err)
		}
		assertCharges(t, got, []hub.Charge{split})
		owedNow, err := s.OwedCharges(ctx)
		if err != nil {
			t.Fatalf("OwedCharges: %v", err)
		}
		assertCharges(t, owedNow, []hub.Charge{owed})
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newStore(t)
	defer s.Close()
	check(s)
}

func testChargesByProviderWindow(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	at := func(i int) time.Time { return epoch().Add(time.Duration(i) * time.Minute) }
	var mine []hub.Charge
	// Recorded newest first, in two calls, beside another provider's
	// charges at the same times.
	for i := 4; i >= 0; i-- {
		ch := NewCharge("charger-7", fmt.Sprintf("evt-%d", i), "payer-1", c.Funding, msat.Amount(100+i), at(i))
		other := NewCharge("charger-8", fmt.Sprintf("evt-%d", i), "payer-1", c.Funding, 1, at(i))
		MustRecordCharges(t, s, []hub.Charge{ch, other}, noLimit)
		mine = append([]hub.Charge{ch}, mine...)
	}
	// One nanosecond before the window's end: inside.
	edge := NewCharge("charger-7", "evt-edge", "payer-1", c.Funding, 1, at(3).Add(-time.Nanosecond))
	MustRecordCharges(t, s, []hub.Charge{edge}, noLimit)

	got, err := s.ChargesByProvider(ctx, "charger-7", at(1), at(3))
	if err != nil {
		t.Fatalf("ChargesByProvider: %v", err)
	}
	assertCharges(t, got, []hub.Charge{mine[1], mine[2], edge})

	all, err := s.ChargesByProvider(ctx, "charger-7", at(0), at(5))
	if err != nil {
		t.Fatalf("ChargesByProvider: %v", err)
	}
	assertCharges(t, all, []hub.Charge{mine[0], mine[1], mine[2], edge, mine[3], mine[4]})

	if got, err := s.ChargesByProvider(ctx, "charger-7", at(2), at(2)); err != nil || len(got) != 0 {
		t.Fatalf("empty window = %d charges, %v; want none", len(got), err)
	}
	// A provider whose name is a prefix of another's sees only its own.
	if got, err := s.ChargesByProvider(ctx, "charger", at(0), at(5)); err != nil || len(got) != 0 {
		t.Fatalf("ChargesByProvider(charger) = %d charges, %v; want none", len(got), err)
	}
}

func testChargesByPayerWindow(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	a, b := NewChannel(t, "payer-a"), NewChannel(t, "payer-b")
	MustPutChannel(t, s, a)
	MustPutChannel(t, s, b)
	at := func(i int) time.Time { return epoch().Add(time.Duration(i) * time.Second) }
	var batch []hub.Charge
	var want []hub.Charge
	// One batch, out of time order, over several providers.
	for _, i := range []int{5, 1, 3, 0, 4, 2} {
		ch := NewCharge(fmt.Sprintf("provider-%d", i%3), fmt.Sprintf("evt-%d", i), "payer-a", a.Funding, 10, at(i))
		batch = append(batch, ch, NewCharge("provider-0", fmt.Sprintf("b-%d", i), "payer-b", b.Funding, 10, at(i)))
	}
	MustRecordCharges(t, s, batch, noLimit)
	for i := 1; i < 5; i++ {
		for _, ch := range batch {
			if ch.Payer == "payer-a" && ch.Charged.Equal(at(i)) {
				want = append(want, ch)
			}
		}
	}
	got, err := s.ChargesByPayer(ctx, "payer-a", at(1), at(5))
	if err != nil {
		t.Fatalf("ChargesByPayer: %v", err)
	}
	assertCharges(t, got, want)
}

// testChargesByPayeeShares: a charge's shares come back from every read,
// and each payee finds the charges it has a share of, in its own window,
// with their current status, after a reopen too.
func testChargesByPayeeShares(t *testing.T, s MeteringStoreUnderTest, newStore func(t *testing.T) MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	at := func(i int) time.Time { return epoch().Add(time.Duration(i) * time.Minute) }
	var cs []hub.Charge
	for i := range 4 {
		ch := NewCharge("cpo-1", fmt.Sprintf("evt-%d", i), "payer-1", c.Funding, 10_000, at(i))
		ch.Shares = []hub.Share{{Payee: "site-host", Msat: 1350}}
		if i%2 == 1 {
			ch.Shares = append(ch.Shares, hub.Share{Payee: "emp", Msat: 500})
		}
		cs = append(cs, ch)
	}
	// Another provider's charge without shares, and one with a payee
	// whose name extends "emp".
	plain := NewCharge("cpo-2", "evt-0", "payer-1", c.Funding, 700, at(1))
	longer := NewCharge("cpo-2", "evt-1", "payer-1", c.Funding, 700, at(1))
	longer.Shares = []hub.Share{{Payee: "emp-2", Msat: 30}}
	MustRecordCharges(t, s, append(append([]hub.Charge(nil), cs...), plain, longer), noLimit)
	assertCharge(t, MustCharge(t, s, "cpo-1", "evt-1"), cs[1])
	if err := s.SetChargeStatus(ctx, "cpo-1", []string{"evt-1"}, hub.ChargePaid, time.Time{}); err != nil {
		t.Fatalf("SetChargeStatus: %v", err)
	}
	cs[1].Status = hub.ChargePaid

	check := func(s MeteringStoreUnderTest) {
		t.Helper()
		host, err := s.ChargesByPayee(ctx, "site-host", at(1), at(3))
		if err != nil {
			t.Fatalf("ChargesByPayee(site-host): %v", err)
		}
		assertCharges(t, host, cs[1:3])
		emp, err := s.ChargesByPayee(ctx, "emp", at(0), at(4))
		if err != nil {
			t.Fatalf("ChargesByPayee(emp): %v", err)
		}
		assertCharges(t, emp, []hub.Charge{cs[1], cs[3]})
		for _, who := range []string{"cpo-1", "cpo-2", "payer-1", "em"} {
			if got, err := s.ChargesByPayee(ctx, who, at(0), at(5)); err != nil || len(got) != 0 {
				t.Fatalf("ChargesByPayee(%s) = %d charges, %v; want none", who, len(got), err)
			}
		}
		own, err := s.ChargesByProvider(ctx, "cpo-1", at(0), at(5))
		if err != nil {
			t.Fatalf("ChargesByProvider: %v", err)
		}
		assertCharges(t, own, cs)
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = newStore(t)
	defer s.Close()
	check(s)
	// Exactly-once holds for a charge with shares: a redelivery indexes
	// nothing twice.
	if res := MustRecordCharges(t, s, cs[:1], noLimit); !res[0].Duplicate {
		t.Fatalf("a charge with shares recorded again is not a duplicate")
	}
	check(s)
}

func testConcurrentExactlyOnce(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	chans := []hub.ChannelRecord{NewChannel(t, "payer-0"), NewChannel(t, "payer-1"), NewChannel(t, "payer-2")}
	for _, c := range chans {
		MustPutChannel(t, s, c)
	}
	// Event i costs 1000+i msat on channel i%3. Each writer records a
	// window of ids that overlaps its neighbours', in batches, so the same
	// id races in several concurrent calls.
	const writers, ids, span, batchLen = 8, 400, 150, 16
	charge := func(i int) hub.Charge {
		c := chans[i%len(chans)]
		return NewCharge("meter-1", fmt.Sprintf("evt-%04d", i), c.DeviceID, c.Funding, msat.Amount(1000+i), epoch().Add(time.Duration(i)*time.Millisecond))
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fresh = make(map[string]int) // event id -> calls that stored it as new
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := w * (ids - span) / (writers - 1)
			for lo := start; lo < start+span; lo += batchLen {
				var cs []hub.Charge
				for i := lo; i < min(lo+batchLen, start+span); i++ {
					cs = append(cs, charge(i))
				}
				res, err := s.RecordCharges(ctx, cs, noLimit)
				if err != nil {
					t.Errorf("RecordCharges: %v", err)
					return
				}
				mu.Lock()
				for i, r := range res {
					if !r.Duplicate {
						fresh[cs[i].EventID]++
					}
					if r.Stored.Amount != cs[i].Amount || r.Stored.EventID != cs[i].EventID {
						t.Errorf("result %d names %s/%d, want %s/%d", i, r.Stored.EventID, r.Stored.Amount, cs[i].EventID, cs[i].Amount)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := make([]msat.Amount, len(chans))
	for i := range ids {
		ch := charge(i)
		if n := fresh[ch.EventID]; n != 1 {
			t.Fatalf("event %s stored as new %d times, want once", ch.EventID, n)
		}
		assertCharge(t, MustCharge(t, s, ch.Provider, ch.EventID), ch)
		want[i%len(chans)] += ch.Amount
	}
	for i, c := range chans {
		if got := MustChannel(t, s, c.Funding).Owed; got != want[i] {
			t.Fatalf("channel %d Owed = %d msat, want the sum of its unique charges %d", i, got, want[i])
		}
	}
	all, err := s.ChargesByProvider(ctx, "meter-1", epoch(), epoch().Add(time.Hour))
	if err != nil {
		t.Fatalf("ChargesByProvider: %v", err)
	}
	if len(all) != ids {
		t.Fatalf("ChargesByProvider = %d charges, want %d (one per id)", len(all), ids)
	}
}

func testReopenKeepsCharges(t *testing.T, newStore func(t *testing.T) MeteringStoreUnderTest) {
	ctx := context.Background()
	s := newStore(t)
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	contract := NewContract(t, "tariff-a", 3, epoch())
	MustPutContract(t, s, contract)
	cs := []hub.Charge{
		NewCharge("charger-7", "evt-1", "payer-1", c.Funding, 1500, epoch()),
		NewCharge("charger-7", "evt-2", "payer-1", c.Funding, 2500, epoch().Add(time.Second)),
	}
	MustRecordCharges(t, s, cs, noLimit)
	if err := s.SetChargeStatus(ctx, "charger-7", []string{"evt-1"}, hub.ChargePaid, time.Time{}); err != nil {
		t.Fatalf("SetChargeStatus: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = newStore(t)
	defer s.Close()
	assertContract(t, MustContract(t, s, contract.Hash), contract)
	cs[0].Status = hub.ChargePaid
	got, err := s.ChargesByProvider(ctx, "charger-7", epoch(), epoch().Add(time.Hour))
	if err != nil {
		t.Fatalf("ChargesByProvider after reopen: %v", err)
	}
	assertCharges(t, got, cs)
	if got := MustChannel(t, s, c.Funding).Owed; got != 4000 {
		t.Fatalf("Owed after reopen = %d msat, want 4000", got)
	}
	// Exactly-once holds across the restart.
	res := MustRecordCharges(t, s, cs[1:], noLimit)
	if !res[0].Duplicate {
		t.Fatalf("a charge recorded before the restart is not a duplicate after it")
	}
}

// assertCharges checks two lists of charges are equal, in order.
func assertCharges(tb testing.TB, got, want []hub.Charge) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d charges, want %d:\n got  %+v\n want %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			tb.Fatalf("charge %d mismatch:\n got  %+v\n want %+v", i, got[i], want[i])
		}
	}
}
