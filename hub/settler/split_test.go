package settler_test

import (
	"testing"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/settlement"
)

// TestSettleSplits settles an epoch in which a car paid a charge point
// operator a charge its contract splits with a site host (paid out, no
// channel) and an e-mobility provider (settled into its own channel,
// online): on regtest, each payee's output is exactly its income as
// charging counts it, rounded toward zero, the remainders carry, the
// e-mobility provider is asked to co-sign with its share as its
// earnings, and everything conserves to the msat.
func TestSettleSplits(t *testing.T) {
	sp := newSplitParties(t)
	e, car, emp, cpo, host, cc, ce := sp.e, sp.car, sp.emp, sp.cpo, sp.host, sp.cc, sp.ce

	// The hub's fee (10 %) pays the batch's mining fee: the site host's
	// payout is funded by the car's channel alone.
	e.pay(cc, car, cpo, 60_000_000)
	now := time.Now()
	c := hub.Charge{
		Provider: cpo, EventID: "session-1", Payer: car, Amount: 60_000_000, Fee: 6_000_000,
		Shares:  []hub.Share{{Payee: host, Msat: 8_838_451}, {Payee: emp, Msat: 2_739_777}},
		Channel: cc, Status: hub.ChargePaid, EventTime: now, Charged: now,
	}
	if _, err := e.h.Store().RecordCharges(t.Context(), []hub.Charge{c}, 1<<40); err != nil {
		t.Fatal(err)
	}
	// Each party's income, as the admin API shows it.
	income := map[string]msat.Amount{}
	for _, id := range []string{cpo, host, emp} {
		in, err := charging.ReadIncome(t.Context(), e.h.Store(), id, now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		income[id] = in.Earned
	}
	if income[cpo] != 54_000_000-8_838_451-2_739_777 || income[cpo]+income[host]+income[emp]+c.Fee != c.Amount {
		t.Fatalf("incomes %v and fee %d do not add up to the %d paid", income, c.Fee, c.Amount)
	}

	s := e.settlement(nil)
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = e.confirm(s, r.Epoch.Number)
	tx := e.chainTx(hubtest.RunTxids(t, r)[0])

	for _, id := range []string{cpo, host} {
		want := int64(income[id] / 1000)
		if got, ok := valueTo(tx, e.payouts[id]); !ok || got != want {
			t.Errorf("payout of %s: %d sat (found %v), want %d (income %d msat)", id, got, ok, want, income[id])
		}
	}
	for op, want := range map[string]int64{"car": 100_000 - 60_000, "emp": 50_000 + int64(income[emp]/1000)} {
		ch := cc
		if op == "emp" {
			ch = ce
		}
		i := hubtest.IndexOfInput(tx, ch)
		if i < 0 || tx.TxOut[i].Value != want {
			t.Errorf("next channel of %s: input %d, want %d sat", op, i, want)
		}
	}
	e.mu.Lock()
	asked := e.earned[ce]
	e.mu.Unlock()
	if asked != income[emp] {
		t.Errorf("the e-mobility provider was asked to co-sign for %d msat earned, its income is %d", asked, income[emp])
	}
	for id, want := range map[string]settlement.Msat{cpo: 772, host: 451, emp: 777} {
		if got := r.Closing.CarriedNet(id); got != want {
			t.Errorf("%s carries %d msat, want %d", id, got, want)
		}
	}
	assertCarriedConserve(t, r)
}

// splitParties are the parties of a split charge: a car and an
// e-mobility provider with channels, online, and a charge point operator
// and a site host paid out on chain.
type splitParties struct {
	e                   *settleEnv
	car, emp, cpo, host string
	cc, ce              btcwire.OutPoint
}

func newSplitParties(t *testing.T) *splitParties {
	e := newSettleEnv(t)
	sp := &splitParties{e: e, car: e.device("car", true), emp: e.device("emp", true), cpo: "cpo", host: "site-host"}
	e.payouts[sp.cpo], e.payouts[sp.host] = hubtest.P2TR(t), hubtest.P2TR(t)
	sp.cc = e.openChannel(sp.car, 100_000)
	sp.ce = e.openChannel(sp.emp, 50_000)
	e.h.Mine(t, 1)
	return sp
}

// assertCarriedConserve checks that the balances r carries sum to zero.
func assertCarriedConserve(t *testing.T, r settlement.Run) {
	t.Helper()
	var sum settlement.Msat
	for _, b := range r.Closing.Carried {
		sum += b
	}
	if sum != 0 {
		t.Errorf("epoch %d: carried balances sum to %d msat", r.Epoch.Number, sum)
	}
}
