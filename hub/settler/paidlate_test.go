package settler_test

import (
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/settlement"
)

// recordOwedSplit records, owed now on the car's channel, the operator's
// charge to the car that its contract splits with the site host and the
// e-mobility provider, as TestSettleSplits has it, and returns it.
func (sp *splitParties) recordOwedSplit(t *testing.T) hub.Charge {
	t.Helper()
	now := time.Now()
	c := hub.Charge{
		Provider: sp.cpo, EventID: "session-1", Payer: sp.car, Amount: 60_000_000, Fee: 6_000_000,
		Shares:  []hub.Share{{Payee: sp.host, Msat: 8_838_451}, {Payee: sp.emp, Msat: 2_739_777}},
		Channel: sp.cc, Status: hub.ChargeOwed, EventTime: now, Charged: now,
	}
	if _, err := sp.e.h.Store().RecordCharges(t.Context(), []hub.Charge{c}, 1<<40); err != nil {
		t.Fatal(err)
	}
	return c
}

// markPaid marks c paid at at.
func (sp *splitParties) markPaid(t *testing.T, c hub.Charge, at time.Time) {
	t.Helper()
	if err := sp.e.h.Store().SetChargeStatus(t.Context(), c.Provider, []string{c.EventID}, hub.ChargePaid, at); err != nil {
		t.Fatal(err)
	}
}

// settle cuts the open epoch and runs it; confirmed, when its run has a
// batch, once the batch is confirmed.
func (sp *splitParties) settle(t *testing.T, s *settler.Service) settlement.Run {
	t.Helper()
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.State == settlement.RunEmpty {
		return r
	}
	return sp.e.confirm(s, r.Epoch.Number)
}

// payAgain has the car pay the operator amount on its ready channel.
func (sp *splitParties) payAgain(t *testing.T, amount msat.Amount) {
	t.Helper()
	sp.e.pay(readyChannel(t, sp.e, sp.car).Funding, sp.car, sp.cpo, amount)
}

// feePostings returns the fee and share postings of a ledger, by kind.
func feePostings(l *settlement.Ledger) (fees, shares []settlement.Posting) {
	for _, p := range l.Postings() {
		switch p.Kind {
		case settlement.KindFee:
			fees = append(fees, p)
		case settlement.KindShare:
			shares = append(shares, p)
		}
	}
	return fees, shares
}

// ledgerOf rebuilds the ledger of r's epoch and checks that it conserves
// to the msat.
func ledgerOf(t *testing.T, s *settler.Service, r settlement.Run) *settlement.Ledger {
	t.Helper()
	l, err := s.LedgerOf(t.Context(), r.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	var sum settlement.Msat
	for _, b := range l.Balances() {
		sum += b
	}
	if sum != 0 {
		t.Fatalf("epoch %d: balances sum to %d msat", r.Epoch.Number, sum)
	}
	return l
}

// assertFeeAndShares checks that l posts c's fee and shares exactly once
// each and nothing else of the kind, and that each payee's share in it is
// what its income over the epoch counts.
func assertFeeAndShares(t *testing.T, e *settleEnv, l *settlement.Ledger, ep settlement.Epoch, c hub.Charge) {
	t.Helper()
	fees, shares := feePostings(l)
	if len(fees) != 1 || fees[0].Ref != c.EventID || fees[0].Entries[1].Amount != settlement.MsatOf(c.Fee) {
		t.Fatalf("epoch %d posts fees %+v, want the %d msat of %s once", ep.Number, fees, c.Fee, c.EventID)
	}
	if len(shares) != len(c.Shares) {
		t.Fatalf("epoch %d posts shares %+v, want %+v once", ep.Number, shares, c.Shares)
	}
	for _, sh := range c.Shares {
		if got := l.Balance(settlement.Provider(sh.Payee)); got != settlement.MsatOf(sh.Msat) {
			t.Errorf("epoch %d: %s's balance %d msat, want its share %d", ep.Number, sh.Payee, got, sh.Msat)
		}
		in, err := charging.ReadIncome(t.Context(), e.h.Store(), sh.Payee, ep.From(), ep.End)
		if err != nil {
			t.Fatal(err)
		}
		if in.Earned != sh.Msat {
			t.Errorf("epoch %d: %s's income over it is %d msat, its ledger share %d", ep.Number, sh.Payee, in.Earned, sh.Msat)
		}
	}
}

// assertNoFees checks that l posts no fee and no share.
func assertNoFees(t *testing.T, l *settlement.Ledger, ep settlement.Epoch) {
	t.Helper()
	if fees, shares := feePostings(l); len(fees)+len(shares) != 0 {
		t.Fatalf("epoch %d posts fees %+v and shares %+v, want none", ep.Number, fees, shares)
	}
}

// TestLatePaidSplitSettles: a charge recorded in epoch 1 and paid in
// epoch 2 (its receipt and its marking) has its fee and shares posted in
// epoch 2, once, the e-mobility provider is asked to co-sign for its
// share, and every ledger conserves to the msat. Before paid times,
// epoch 2 looked only for charges recorded in it: the shares were never
// posted and stayed with the operator.
func TestLatePaidSplitSettles(t *testing.T) {
	sp := newSplitParties(t)
	e := sp.e
	c := sp.recordOwedSplit(t)
	s := e.settlement(nil)
	r1 := sp.settle(t, s)
	assertNoFees(t, ledgerOf(t, s, r1), r1.Epoch)

	e.pay(sp.cc, sp.car, sp.cpo, c.Amount)
	sp.markPaid(t, c, time.Now())
	r2 := sp.settle(t, s)
	assertFeeAndShares(t, e, ledgerOf(t, s, r2), r2.Epoch, c)
	e.mu.Lock()
	asked := e.earned[sp.ce]
	e.mu.Unlock()
	if asked != c.Shares[1].Msat {
		t.Errorf("the e-mobility provider was asked to co-sign for %d msat earned, its share is %d", asked, c.Shares[1].Msat)
	}
	assertCarriedConserve(t, r2)

	// Epoch 3 posts it no more.
	sp.payAgain(t, 1_000_000)
	r3 := sp.settle(t, s)
	assertNoFees(t, ledgerOf(t, s, r3), r3.Epoch)
}

// TestPaidAfterLedgerSettlesNext: the receipt of a charge is timed in
// epoch 1, but its charges are marked paid only after epoch 1's ledger was
// built (the cut fell between the receipt and the marking): the fee and
// shares are posted by epoch 2, once. Before paid times, epoch 1 saw the
// charge owed and epoch 2 looked only for charges recorded in it: they
// were posted by no epoch.
func TestPaidAfterLedgerSettlesNext(t *testing.T) {
	sp := newSplitParties(t)
	c, s, r1 := sp.settledBeforeMark(t)
	sp.markPaid(t, c, time.Now())
	sp.settlesNextOnce(t, s, c, r1)
}

// settledBeforeMark records the owed split charge, has the car pay its
// receipt and settles epoch 1 before the charge is marked paid: epoch 1
// posts none of its fee and shares. It returns the charge, the service and
// epoch 1's run.
func (sp *splitParties) settledBeforeMark(t *testing.T) (hub.Charge, *settler.Service, settlement.Run) {
	t.Helper()
	c := sp.recordOwedSplit(t)
	sp.e.pay(sp.cc, sp.car, sp.cpo, c.Amount)
	s := sp.e.settlement(nil)
	r1 := sp.settle(t, s)
	assertNoFees(t, ledgerOf(t, s, r1), r1.Epoch)
	return c, s, r1
}

// settlesNextOnce settles epoch 2 after r1, epoch 1's run, which posted
// none of c's fee and shares although the operator was paid c's receipt
// in it, and checks that epoch 2 posts them once and epoch 3 not again.
func (sp *splitParties) settlesNextOnce(t *testing.T, s *settler.Service, c hub.Charge, r1 settlement.Run) {
	t.Helper()
	// The car pays again in epoch 2, which funds the payees' payouts.
	sp.payAgain(t, 30_000_000)
	r2 := sp.settle(t, s)
	l2 := ledgerOf(t, s, r2)
	assertFeeAndShares(t, sp.e, l2, r2.Epoch, c)
	// The operator was paid the whole first receipt in epoch 1: in
	// epoch 2 it gives the fee and the shares back out of the second.
	if got, want := l2.Net(sp.cpo), settlement.MsatOf(30_000_000-c.Fee-c.Shares[0].Msat-c.Shares[1].Msat)+r1.Closing.CarriedNet(sp.cpo); got != want {
		t.Errorf("operator's net in epoch 2 is %d msat, want %d", got, want)
	}
	assertCarriedConserve(t, r2)
	r3 := sp.settle(t, s)
	assertNoFees(t, ledgerOf(t, s, r3), r3.Epoch)
}

// TestPaidStampedBeforeCutSettlesNext: charging read its clock before
// epoch 1 was cut but its mark reached the store after the cut and after
// epoch 1's ledger was built. The store stamps the charge paid at the
// cut, so epoch 2 posts its fee and shares, once, and epoch 1's ledger,
// rebuilt, still posts none. Stamped with the clock's time, the charge was
// paid in epoch 1 after its ledger had read the paid charges: posted by no
// epoch, its payees never settled.
func TestPaidStampedBeforeCutSettlesNext(t *testing.T) {
	sp := newSplitParties(t)
	c, s, r1 := sp.settledBeforeMark(t)
	sp.markPaid(t, c, r1.Epoch.End.Add(-time.Millisecond))
	stored, err := sp.e.h.Store().Charge(t.Context(), c.Provider, c.EventID)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.Paid.Equal(r1.Epoch.End) {
		t.Fatalf("marked after the cut at %v: paid %v, want the cut", r1.Epoch.End, stored.Paid)
	}
	assertNoFees(t, ledgerOf(t, s, r1), r1.Epoch)
	sp.settlesNextOnce(t, s, c, r1)
}

// TestUnpaidTimeKeepsRecordedRule: a charge marked paid without a paid
// time (as before paid times were kept) is posted by the epoch it was
// recorded in when its provider has receipts there, and by no later one.
func TestUnpaidTimeKeepsRecordedRule(t *testing.T) {
	sp := newSplitParties(t)
	e := sp.e
	c := sp.recordOwedSplit(t)
	e.pay(sp.cc, sp.car, sp.cpo, c.Amount)
	sp.markPaid(t, c, time.Time{})
	s := e.settlement(nil)
	r1 := sp.settle(t, s)
	assertFeeAndShares(t, e, ledgerOf(t, s, r1), r1.Epoch, c)

	sp.payAgain(t, 1_000_000)
	r2 := sp.settle(t, s)
	assertNoFees(t, ledgerOf(t, s, r2), r2.Epoch)
}
