package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/msat"
)

// runMeteringOwed runs the parts of the metering suite about what charging
// reloads after a restart: the owed charges and the charges' quantities.
func runMeteringOwed(t *testing.T, open, reopen func(t *testing.T) MeteringStoreUnderTest) {
	t.Run("OwedCharges", func(t *testing.T) { testOwedCharges(t, open(t)) })
	t.Run("OwedChargesSurviveReopen", func(t *testing.T) { testOwedChargesReopen(t, open, reopen) })
	t.Run("QuantityKept", func(t *testing.T) { testQuantityKept(t, open(t)) })
	t.Run("ChargeRequestTakenOnce", func(t *testing.T) { testChargeRequestTakenOnce(t, open(t)) })
	t.Run("ChargeRequestSurvivesReopen", func(t *testing.T) { testChargeRequestReopen(t, open, reopen) })
	t.Run("ChargeClaims", func(t *testing.T) { testChargeClaims(t, open(t)) })
	t.Run("ChargeAskAllOrNothing", func(t *testing.T) { testChargeAskAllOrNothing(t, open(t)) })
	t.Run("ChargeFence", func(t *testing.T) { testChargeFence(t, open(t)) })
}

// fence is the fence of owner's request token for prov's charges ids.
func fence(owner, token string, ids ...string) hub.ChargeFence {
	return hub.ChargeFence{Provider: "prov", Owner: owner, Token: token, IDs: ids}
}

// mustAsk claims a's charges for its owner and records the request,
// failing unless every charge was asked.
func mustAsk(tb testing.TB, s hub.ChargeStore, a hub.ChargeAsk) {
	tb.Helper()
	if _, err := s.ClaimCharges(context.Background(), a.Provider, a.IDs, a.Owner, time.Hour); err != nil {
		tb.Fatal(err)
	}
	assertStates(tb, "asking "+a.Token, ask(tb, s, a), hub.ClaimAsked, len(a.IDs))
}

func ask(tb testing.TB, s hub.ChargeStore, a hub.ChargeAsk) []hub.ClaimState {
	tb.Helper()
	got, err := s.AskCharges(context.Background(), a)
	if err != nil {
		tb.Fatalf("AskCharges(%s): %v", a.Token, err)
	}
	return got
}

// assertStates fails unless got is n times want.
func assertStates(tb testing.TB, what string, got []hub.ClaimState, want hub.ClaimState, n int) {
	tb.Helper()
	if len(got) != n || slices.ContainsFunc(got, func(c hub.ClaimState) bool { return c != want }) {
		tb.Fatalf("%s: claim states %v, want %d × %v", what, got, n, want)
	}
}

// testChargeAskAllOrNothing: a request is recorded only when its owner
// holds every charge; otherwise each charge's state says why and nothing
// is written: no record, and the claims keep the request they named.
func testChargeAskAllOrNothing(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	if _, err := s.ClaimCharges(ctx, "prov", []string{"a1", "a2"}, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimCharges(ctx, "prov", []string{"b1"}, "b", time.Hour); err != nil {
		t.Fatal(err)
	}
	got := ask(t, s, hub.ChargeAsk{ChargeFence: fence("a", "t1", "a1", "b1", "n1", "a2"), Root: hub.Hash{1}, TTL: time.Hour})
	want := []hub.ClaimState{hub.ClaimAsked, hub.ClaimLost, hub.ClaimLost, hub.ClaimAsked}
	if !slices.Equal(got, want) {
		t.Fatalf("asking held, another's, unclaimed, held: %v, want %v", got, want)
	}
	if r, err := s.TakeChargeRequests(ctx, "prov", []hub.Hash{{1}}); err != nil || r[0] != nil {
		t.Fatalf("a refused request was recorded: %v (%v)", r, err)
	}
	// The refused request named nothing: a payment fenced by it fails.
	op := newFencedChannel(t, s)
	u := storetestPayment(op, 1, 10, fence("a", "t1", "a1"))
	if _, err := s.ApplyPayment(ctx, u); !errors.Is(err, hub.ErrChargeFenced) {
		t.Fatalf("paying a refused request: %v, want ErrChargeFenced", err)
	}
	if _, err := s.AskCharges(ctx, hub.ChargeAsk{ChargeFence: fence("a", "t|2", "a1"), Root: hub.Hash{1}, TTL: time.Hour}); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("a token with '|': %v, want ErrInvalid", err)
	}
	if _, err := s.AskCharges(ctx, hub.ChargeAsk{ChargeFence: fence("a", "t2"), Root: hub.Hash{1}, TTL: time.Hour}); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("a request of no charges: %v, want ErrInvalid", err)
	}
}

// newFencedChannel stores an open channel whose payments the fence tests
// make.
func newFencedChannel(tb testing.TB, s hub.ChannelStore) wire.OutPoint {
	tb.Helper()
	c := NewChannel(tb, "dev")
	MustPutChannel(tb, s, c)
	return c.Funding
}

// storetestPayment is Payment(op, seq, paid) fenced by f.
func storetestPayment(op wire.OutPoint, seq uint64, paid msat.Amount, f hub.ChargeFence) hub.PaymentUpdate {
	u := Payment(op, seq, paid)
	u.Fence = &f
	return u
}

// testChargeFence: a payment fenced by a request is applied only while
// the request is its charges' live one: not once its asker has asked
// again or given up (a void ask), nor once another owner claims them
// after a release; a paid request is reported as paid to a later ask,
// a renewal keeps the request, and a refused payment changes nothing.
func testChargeFence(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	op := newFencedChannel(t, s)
	seq := uint64(0)
	pay := func(paid msat.Amount, f hub.ChargeFence) error {
		t.Helper()
		_, err := s.ApplyPayment(ctx, storetestPayment(op, seq+1, paid, f))
		if err == nil {
			seq++
		}
		return err
	}
	// Asked again: the first request is superseded.
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("a", "t1", "e1", "e2"), Root: hub.Hash{1}, TTL: time.Hour})
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("a", "t2", "e1", "e2"), Root: hub.Hash{2}, TTL: time.Hour})
	if err := pay(10, fence("a", "t1", "e1", "e2")); !errors.Is(err, hub.ErrChargeFenced) {
		t.Fatalf("paying a superseded request: %v, want ErrChargeFenced", err)
	}
	if got := MustChannel(t, s, op); got.Seq != 0 {
		t.Fatalf("a refused payment moved the channel to seq %d", got.Seq)
	}
	// A renewal keeps the live request; its payment marks the claims paid.
	if _, err := s.ClaimCharges(ctx, "prov", []string{"e1", "e2"}, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := pay(10, fence("a", "t2", "e1", "e2")); err != nil {
		t.Fatalf("paying the live request: %v", err)
	}
	if got := MustChannel(t, s, op); got.Seq != 1 || got.Paid != 10 {
		t.Fatalf("after the fenced payment: seq %d paid %s, want 1 and 10", got.Seq, got.Paid)
	}
	if err := pay(20, fence("a", "t2", "e1", "e2")); !errors.Is(err, hub.ErrChargeFenced) {
		t.Fatalf("paying a paid request again: %v, want ErrChargeFenced", err)
	}
	assertStates(t, "asking paid charges", ask(t, s, hub.ChargeAsk{ChargeFence: fence("a", "t3", "e1", "e2"), Root: hub.Hash{3}, TTL: time.Hour}), hub.ClaimPaid, 2)

	// Given up (a void ask, zero Root): the request cannot be paid.
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("a", "t4", "e3"), Root: hub.Hash{4}, TTL: time.Hour})
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("a", "void", "e3")})
	if err := pay(20, fence("a", "t4", "e3")); !errors.Is(err, hub.ErrChargeFenced) {
		t.Fatalf("paying a request given up: %v, want ErrChargeFenced", err)
	}

	// Released and claimed by another: the first owner's request is dead,
	// even with the same token.
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("a", "t5", "e4"), Root: hub.Hash{5}, TTL: time.Hour})
	if err := s.ReleaseCharges(ctx, "prov", []string{"e4"}, "a"); err != nil {
		t.Fatal(err)
	}
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("b", "t5", "e4"), Root: hub.Hash{6}, TTL: time.Hour})
	if err := pay(20, fence("a", "t5", "e4")); !errors.Is(err, hub.ErrChargeFenced) {
		t.Fatalf("paying a request whose charges another owner asked for: %v, want ErrChargeFenced", err)
	}
	if err := pay(20, fence("b", "t5", "e4")); err != nil {
		t.Fatalf("paying the new owner's request: %v", err)
	}
	// The records stay for the reload, paid or not.
	got, err := s.TakeChargeRequests(ctx, "prov", []hub.Hash{{2}, {5}, {6}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got[0], []string{"e1", "e2"}) || !slices.Equal(got[1], []string{"e4"}) || !slices.Equal(got[2], []string{"e4"}) {
		t.Fatalf("request records %v, want [[e1 e2] [e4] [e4]]", got)
	}
	if got := MustChannel(t, s, op); got.Seq != 2 || got.Paid != 20 {
		t.Fatalf("at the end: seq %d paid %s, want 2 and 20", got.Seq, got.Paid)
	}
}

// testChargeClaims: of several owners claiming one charge at once, one
// holds it; its owner renews it, others are refused until the owner
// releases it or it expires; a release by another owner drops nothing;
// claims are per provider.
func testChargeClaims(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	claim := func(owner string, ttl time.Duration, ids ...string) []bool {
		t.Helper()
		got, err := s.ClaimCharges(ctx, "prov", ids, owner, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	const owners = 8
	won := make(chan string, owners)
	var wg sync.WaitGroup
	for i := range owners {
		owner := string(rune('a' + i))
		wg.Go(func() {
			got, err := s.ClaimCharges(ctx, "prov", []string{"e1"}, owner, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if got[0] {
				won <- owner
			}
		})
	}
	wg.Wait()
	close(won)
	var wins []string
	for w := range won {
		wins = append(wins, w)
	}
	if len(wins) != 1 {
		t.Fatalf("%d owners hold e1: %v, want one", len(wins), wins)
	}
	a, b := wins[0], "other"
	if got := claim(a, time.Hour, "e1", "e2"); !slices.Equal(got, []bool{true, true}) {
		t.Fatalf("owner renewing e1 and claiming e2: %v, want both held", got)
	}
	if got := claim(b, time.Hour, "e1", "e2", "e3"); !slices.Equal(got, []bool{false, false, true}) {
		t.Fatalf("another owner claiming e1, e2, e3: %v, want only e3", got)
	}
	if got, err := s.ClaimCharges(ctx, "prov2", []string{"e1"}, b, time.Hour); err != nil || !got[0] {
		t.Fatalf("e1 of another provider: %v (%v), want claimed", got, err)
	}
	if err := s.ReleaseCharges(ctx, "prov", []string{"e1"}, b); err != nil {
		t.Fatal(err)
	}
	if got := claim(b, time.Hour, "e1"); got[0] {
		t.Fatal("a release by another owner dropped the claim on e1")
	}
	if err := s.ReleaseCharges(ctx, "prov", []string{"e1", "e9"}, a); err != nil {
		t.Fatal(err)
	}
	if got := claim(b, time.Hour, "e1"); !got[0] {
		t.Fatal("e1 released by its owner is not claimed by another")
	}
	claim(a, time.Millisecond, "e4")
	time.Sleep(5 * time.Millisecond) // e4's store-clock lifetime
	if got := claim(b, time.Hour, "e4"); !got[0] {
		t.Fatal("an expired claim on e4 still holds")
	}
	if _, err := s.ClaimCharges(ctx, "prov", []string{"e5"}, "", time.Hour); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("a claim with no owner: %v, want ErrInvalid", err)
	}
}

// testChargeRequestTakenOnce: a recorded request's ids are taken once, by
// one of several takers at once; others, an unknown root, another
// provider's and an expired record give nil; recording a root again
// replaces its ids; reading one (ChargeRequests) leaves it.
func testChargeRequestTakenOnce(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	r1, r2, r3 := hub.Hash{1}, hub.Hash{2}, hub.Hash{3}
	for _, p := range []struct {
		root hub.Hash
		ids  []string
		ttl  time.Duration
	}{
		{r1, []string{"a"}, time.Hour},
		{r1, []string{"e1", "e2"}, time.Hour}, // replaces
		{r2, []string{"e3"}, time.Hour},
		{r3, []string{"old"}, time.Millisecond}, // expires
	} {
		mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("o", "t", p.ids...), Root: p.root, TTL: p.ttl})
	}
	time.Sleep(5 * time.Millisecond) // r3's store-clock lifetime
	if got, err := s.TakeChargeRequests(ctx, "other", []hub.Hash{r1}); err != nil || got[0] != nil {
		t.Fatalf("another provider took %v (%v)", got, err)
	}
	// Reading leaves the records: read twice, then taken below.
	for range 2 {
		got, err := s.ChargeRequests(ctx, "prov", []hub.Hash{r1, r2, r3, {9}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got[0], []string{"e1", "e2"}) || !slices.Equal(got[1], []string{"e3"}) || got[2] != nil || got[3] != nil {
			t.Fatalf("read %v, want [[e1 e2] [e3] nil nil] (the expired and an unknown root nil)", got)
		}
	}
	const takers = 8
	won := make(chan []string, takers)
	var wg sync.WaitGroup
	for range takers {
		wg.Go(func() {
			got, err := s.TakeChargeRequests(ctx, "prov", []hub.Hash{r1, {9}})
			if err != nil {
				t.Error(err)
				return
			}
			if got[1] != nil {
				t.Errorf("an unknown root gave %v", got[1])
			}
			if got[0] != nil {
				won <- got[0]
			}
		})
	}
	wg.Wait()
	close(won)
	var wins [][]string
	for w := range won {
		wins = append(wins, w)
	}
	if len(wins) != 1 || !slices.Equal(wins[0], []string{"e1", "e2"}) {
		t.Fatalf("%d takers got the request: %v, want one with [e1 e2]", len(wins), wins)
	}
	got, err := s.TakeChargeRequests(ctx, "prov", []hub.Hash{r1, r2, r3})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != nil || !slices.Equal(got[1], []string{"e3"}) || got[2] != nil {
		t.Fatalf("taken again, the other and the expired: %v, want [nil [e3] nil]", got)
	}
	if got, err := s.ChargeRequests(ctx, "prov", []hub.Hash{r1, r2}); err != nil || got[0] != nil || got[1] != nil {
		t.Fatalf("read after taking: %v (%v), want nothing", got, err)
	}
}

// testChargeRequestReopen: a recorded request survives the store's
// restart (a restarted hub reads it).
func testChargeRequestReopen(t *testing.T, open, reopen func(t *testing.T) MeteringStoreUnderTest) {
	ctx := context.Background()
	s := open(t)
	mustAsk(t, s, hub.ChargeAsk{ChargeFence: fence("o", "t", "x", "y"), Root: hub.Hash{7}, TTL: time.Hour})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again := reopen(t)
	defer again.Close()
	got, err := again.TakeChargeRequests(ctx, "prov", []hub.Hash{{7}})
	if err != nil || !slices.Equal(got[0], []string{"x", "y"}) {
		t.Fatalf("after reopening: %v (%v), want [x y]", got, err)
	}
}

// owedIDs lists the event ids OwedCharges returns, in its order.
func owedIDs(t *testing.T, s hub.ChargeStore) []string {
	t.Helper()
	cs, err := s.OwedCharges(context.Background())
	if err != nil {
		t.Fatalf("OwedCharges: %v", err)
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Status != hub.ChargeOwed {
			t.Fatalf("OwedCharges returned %s with status %s", c.EventID, c.Status)
		}
		ids = append(ids, c.EventID)
	}
	return ids
}

func assertIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %q, want %q", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: %q, want %q", what, got, want)
		}
	}
}

func testOwedCharges(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	assertIDs(t, "empty store", owedIDs(t, s))
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	held := NewCharge("gantry-1", "evt-held", "payer-1", c.Funding, 50, epoch())
	held.Status = hub.ChargeHeld
	paid := NewCharge("gantry-1", "evt-free", "payer-1", c.Funding, 0, epoch())
	paid.Status = hub.ChargePaid
	// Recorded in two calls, the later one with an earlier Charged time:
	// the order is the order of recording.
	MustRecordCharges(t, s, []hub.Charge{
		NewCharge("gantry-1", "evt-1", "payer-1", c.Funding, 100, epoch().Add(time.Minute)),
		held, paid,
		NewCharge("gantry-1", "evt-nochan", "payer-1", NewChannel(t, "ghost").Funding, 10, epoch()),
	}, noLimit)
	MustRecordCharges(t, s, []hub.Charge{
		NewCharge("meter-2", "evt-2", "payer-1", c.Funding, 200, epoch()),
		// Beyond the limit once evt-1 and evt-2 are owed: unpaid.
		NewCharge("meter-2", "evt-3", "payer-1", c.Funding, 1000, epoch()),
		NewCharge("gantry-1", "evt-1", "payer-1", c.Funding, 100, epoch()), // duplicate
	}, 400)
	assertIDs(t, "after recording", owedIDs(t, s), "evt-1", "evt-2")

	if err := s.SetChargeStatus(ctx, "gantry-1", []string{"evt-1"}, hub.ChargePaid, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetChargeStatus(ctx, "gantry-1", []string{"evt-held"}, hub.ChargeOwed, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// A charge moved back to owed may list by its first recording or by
	// the move: the order only matters among charges recorded owed.
	ids := owedIDs(t, s)
	slices.Sort(ids)
	assertIDs(t, "after status changes", ids, "evt-2", "evt-held")
	// Setting owed again does not move a charge in the order.
	if err := s.SetChargeStatus(ctx, "meter-2", []string{"evt-2"}, hub.ChargeOwed, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetChargeStatus(ctx, "meter-2", []string{"evt-2"}, hub.ChargeUnpaid, time.Time{}); err != nil {
		t.Fatal(err)
	}
	assertIDs(t, "after unpaid", owedIDs(t, s), "evt-held")
	got, err := s.OwedCharges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := held
	want.Status = hub.ChargeOwed
	assertCharge(t, got[0], want)
}

func testOwedChargesReopen(t *testing.T, open, reopen func(t *testing.T) MeteringStoreUnderTest) {
	s := open(t)
	c := NewChannel(t, "payer-1")
	MustPutChannel(t, s, c)
	MustRecordCharges(t, s, []hub.Charge{
		NewCharge("gantry-1", "evt-1", "payer-1", c.Funding, 100, epoch()),
		NewCharge("gantry-1", "evt-2", "payer-1", c.Funding, 100, epoch()),
	}, noLimit)
	if err := s.SetChargeStatus(context.Background(), "gantry-1", []string{"evt-1"}, hub.ChargePaid, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again := reopen(t)
	defer again.Close()
	assertIDs(t, "after reopen", owedIDs(t, again), "evt-2")
}

func testQuantityKept(t *testing.T, s MeteringStoreUnderTest) {
	ctx := context.Background()
	c := NewChannel(t, "router-1")
	MustPutChannel(t, s, c)
	bw := NewCharge("isp-1", "evt-bw", "router-1", c.Funding, 100, epoch())
	bw.Quantity = "1234.5678"
	plain := NewCharge("isp-1", "evt-plain", "router-1", c.Funding, 100, epoch())
	res := MustRecordCharges(t, s, []hub.Charge{bw, plain}, noLimit)
	assertCharge(t, res[0].Stored, bw)
	assertCharge(t, MustCharge(t, s, "isp-1", "evt-bw"), bw)
	assertCharge(t, MustCharge(t, s, "isp-1", "evt-plain"), plain)
	dup := MustRecordCharges(t, s, []hub.Charge{bw}, noLimit)
	if !dup[0].Duplicate || dup[0].Stored.Quantity != bw.Quantity {
		t.Fatalf("duplicate result %+v, want the stored quantity", dup[0])
	}
	list, err := s.ChargesByPayer(ctx, "router-1", epoch(), epoch().Add(time.Second))
	if err != nil || len(list) != 2 {
		t.Fatalf("ChargesByPayer: %d charges, %v", len(list), err)
	}
	for _, ch := range list {
		if ch.EventID == "evt-bw" && ch.Quantity != bw.Quantity {
			t.Fatalf("ChargesByPayer quantity %q, want %q", ch.Quantity, bw.Quantity)
		}
	}
	// A status change keeps the quantity.
	if err := s.SetChargeStatus(ctx, "isp-1", []string{"evt-bw"}, hub.ChargePaid, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if q := MustCharge(t, s, "isp-1", "evt-bw").Quantity; q != bw.Quantity {
		t.Fatalf("quantity after SetChargeStatus %q", q)
	}
}
