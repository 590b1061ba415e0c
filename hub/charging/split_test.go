package charging_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/settlement"
)

// publishSplit stores the example contract of kind with splits added to
// its document and returns it.
func (env *chargeEnv) publishSplit(kind, splits string) *contracts.Contract {
	env.t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", kind+".json"))
	if err != nil {
		env.t.Fatal(err)
	}
	return env.publishDoc([]byte(strings.Replace(string(b), `"currency":`, `"splits": `+splits+`, "currency":`, 1)))
}

// TestChargingSplit: a toll charge split among the gantry operator (the
// provider), a site host (1500 bps) and a service provider (fixed 777
// msat and 333 bps) conserves to the msat: the shares the contract's
// rule gives, the hub's fee and the provider's rest add up to what the
// payer paid, and each payee's income shows its own share, owed until
// the payer pays and earned after, and each is told of the receipt that
// paid its share.
func TestChargingSplit(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	host, emp := env.h.Enrol(hub.RoleProvider), env.h.Enrol(hub.RoleProvider)
	k := env.publishSplit("toll", fmt.Sprintf(`[{"payee": %q, "bps": "1500"}, {"payee": %q, "fixed_msat": "777", "bps": "333"}]`, host.ID, emp.ID))
	env.charge(env.event(k, "toll", "t-1"))

	c := env.stored("t-1")
	// 60,000 msat at the morning peak, a 50 bps fee of 300: 59,700 for
	// the provider's part. 777 fixed leaves 58,923: the host gets
	// floor(58,923 × 0.15) = 8,838, the other floor(58,923 × 0.0333) =
	// 1,962 + 777, the provider the rest.
	want := []hub.Share{{Payee: host.ID, Msat: 8_838}, {Payee: emp.ID, Msat: 2_739}}
	if c.Amount != 60_000 || c.Fee != 300 || fmt.Sprint(c.Shares) != fmt.Sprint(want) {
		t.Fatalf("charge %d msat, fee %d, shares %v; want 60000, 300, %v", c.Amount, c.Fee, c.Shares, want)
	}
	if got := c.ProviderPart() + c.SharesTotal() + c.Fee; got != c.Amount || c.ProviderPart() != 59_700-8_838-2_739 {
		t.Fatalf("provider part %d + shares %d + fee %d = %d, want %d", c.ProviderPart(), c.SharesTotal(), c.Fee, got, c.Amount)
	}

	income := func(id string) (owed, earned msat.Amount) {
		t.Helper()
		in, err := env.chg.Income(context.Background(), id, chargeStart.Add(-24*time.Hour), chargeStart.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return in.Owed, in.Earned
	}
	parts := map[string]msat.Amount{env.prov.ID: c.ProviderPart(), host.ID: 8_838, emp.ID: 2_739}
	for id, part := range parts {
		if owed, earned := income(id); owed != part || earned != 0 {
			t.Fatalf("%s before payment: owed %d, earned %d; want owed %d", id, owed, earned, part)
		}
	}

	_, receipt, events := env.payRequest(60_000)
	// Each payee is told of the receipt, on its own subject, with its
	// share of the events it covers.
	notices := env.pub.take(charging.ProviderMsgShare)
	if len(notices) != 2 {
		t.Fatalf("%d share notices, want one to each payee: %+v", len(notices), notices)
	}
	for _, n := range notices {
		payee := strings.TrimPrefix(n.subject, "receipts.")
		raw, err := hex.DecodeString(n.msg.Receipt)
		if err != nil {
			t.Fatal(err)
		}
		var r channel.Receipt
		if err := r.UnmarshalBinary(raw); err != nil || r.ID() != receipt.ID() || !r.CoversEvents(n.msg.Events) ||
			fmt.Sprint(n.msg.Events) != fmt.Sprint(events) {
			t.Fatalf("%s was told of receipt %+v for %v (%v), want the provider's", payee, r, n.msg.Events, err)
		}
		if len(n.msg.Shares) != 1 || n.msg.Shares[0].EventID != "t-1" || parts[payee] == 0 ||
			n.msg.Shares[0].Msat != parts[payee] || payee == env.prov.ID {
			t.Fatalf("%s told of shares %+v, want %d for t-1", payee, n.msg.Shares, parts[payee])
		}
	}
	var sum msat.Amount
	for id, part := range parts {
		owed, earned := income(id)
		if owed != 0 || earned != part {
			t.Fatalf("%s after payment: owed %d, earned %d; want earned %d", id, owed, earned, part)
		}
		sum += earned
	}
	in, err := env.chg.Income(context.Background(), env.prov.ID, chargeStart.Add(-24*time.Hour), chargeStart.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if sum+in.Fees != 60_000 || in.Shared != 8_838+2_739 || in.Fees != 300 {
		t.Fatalf("earned %d + fees %d = %d, want the 60000 paid; shared %d", sum, in.Fees, sum+in.Fees, in.Shared)
	}
	if hin, _ := env.chg.Income(context.Background(), host.ID, chargeStart.Add(-24*time.Hour), chargeStart.Add(time.Hour)); hin.Events != 0 || hin.ShareEvents != 1 {
		t.Fatalf("the host's income counts %d own and %d shared events, want 0 and 1", hin.Events, hin.ShareEvents)
	}
}

// TestChargingSplitRevokedPayee: a split payee revoked after the
// contract was published is still owed its share of charges under it,
// as the contract the payer signed promised, and earns it when the
// payer pays, the way a revoked provider's own income is still settled:
// revocation stops a device acting, not what it is owed. Only
// publishing a new contract naming it is refused (registry.CheckPayees).
func TestChargingSplitRevokedPayee(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	host := env.h.Enrol(hub.RoleProvider)
	k := env.publishSplit("toll", fmt.Sprintf(`[{"payee": %q, "bps": "1500"}]`, host.ID))
	if _, err := env.h.Reg.Revoke(context.Background(), host.ID, "test", "left the site"); err != nil {
		t.Fatal(err)
	}
	env.clock.SetTime(chargeStart.Add(2 * time.Second)) // past the device cache
	if out := env.charge(env.event(k, "toll", "t-r")); !out[0].Charged {
		t.Fatalf("outcome %+v, want charged", out[0])
	}
	c := env.stored("t-r")
	share := (c.Amount - c.Fee) * 1500 / 10_000
	if len(c.Shares) != 1 || c.Shares[0] != (hub.Share{Payee: host.ID, Msat: share}) || share == 0 {
		t.Fatalf("shares %v, want %d to the revoked host", c.Shares, share)
	}
	env.payRequest(c.Amount)
	in, err := env.chg.Income(context.Background(), host.ID, chargeStart.Add(-24*time.Hour), chargeStart.Add(time.Hour))
	if err != nil || in.Earned != share || in.Owed != 0 {
		t.Fatalf("the revoked host's income %+v, %v; want %d earned", in, err, share)
	}
	if c.ProviderPart()+c.SharesTotal()+c.Fee != c.Amount {
		t.Fatalf("provider part %d + shares %d + fee %d != %d", c.ProviderPart(), c.SharesTotal(), c.Fee, c.Amount)
	}
}

// TestChargingSplitPaidLater: a split charge paid a while after it was
// recorded is marked paid at the time of its marking, the payees are told
// that time with their shares, and income counts what the payment
// brought by that time (as settlement posts fees and shares), conserving
// to the msat; over the recording's period the charge is neither owed nor
// earned any more.
func TestChargingSplitPaidLater(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	host := env.h.Enrol(hub.RoleProvider)
	k := env.publishSplit("toll", fmt.Sprintf(`[{"payee": %q, "bps": "1500"}]`, host.ID))
	env.charge(env.event(k, "toll", "t-late"))
	c := env.stored("t-late")
	if len(c.Shares) != 1 || !c.Paid.IsZero() {
		t.Fatalf("charge %+v, want one share and no paid time", c)
	}

	paidAt := chargeStart.Add(90 * time.Second)
	env.clock.SetTime(paidAt)
	env.payRequest(c.Amount)
	if got := env.stored("t-late"); got.Status != hub.ChargePaid || !got.Paid.Equal(paidAt) {
		t.Fatalf("charge is %s paid at %v, want paid at %v", got.Status, got.Paid, paidAt)
	}
	notices := env.pub.take(charging.ProviderMsgShare)
	if len(notices) != 1 || !notices[0].msg.Paid.Equal(paidAt) {
		t.Fatalf("share notices %+v, want one paid at %v", notices, paidAt)
	}

	income := func(id string, from, to time.Time) charging.Income {
		t.Helper()
		in, err := env.chg.Income(context.Background(), id, from, to)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	recorded, paid := chargeStart.Add(time.Minute), chargeStart.Add(time.Hour)
	prov, hin := income(env.prov.ID, recorded, paid), income(host.ID, recorded, paid)
	if hin.Earned != c.Shares[0].Msat || prov.Earned != c.ProviderPart() || prov.Fees != c.Fee || prov.Shared != c.Shares[0].Msat ||
		prov.Earned+hin.Earned+prov.Fees != c.Amount {
		t.Fatalf("over the payment's period: provider %+v, host %+v; want %d + %d + fee %d = %d",
			prov, hin, c.ProviderPart(), c.Shares[0].Msat, c.Fee, c.Amount)
	}
	for _, id := range []string{env.prov.ID, host.ID} {
		if in := income(id, chargeStart.Add(-time.Hour), recorded); in.Earned != 0 || in.Owed != 0 || in.Fees != 0 {
			t.Fatalf("over the recording's period %s's income is %+v, want nothing earned or owed", id, in)
		}
	}
}

// TestChargingSplitPaidAfterCut: the clock reads a time before the open
// epoch is cut, the charges are marked paid after the cut: the store
// stamps them paid at the cut (the closed epoch's ledger may have read
// its paid charges already), and the payee's share notice carries that
// paid time, not the clock's, so the payee counts its share in the epoch
// whose settlement pays it.
func TestChargingSplitPaidAfterCut(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	host := env.h.Enrol(hub.RoleProvider)
	k := env.publishSplit("toll", fmt.Sprintf(`[{"payee": %q, "bps": "1500"}]`, host.ID))
	env.charge(env.event(k, "toll", "t-cut"))

	ctx := context.Background()
	first := settlement.FirstEpoch(chargeStart.Add(-time.Hour), chantest.TestHeight)
	if err := env.h.Store.CutEpoch(ctx, settlement.Epoch{}, first); err != nil {
		t.Fatal(err)
	}
	cut := chargeStart.Add(2 * time.Minute)
	closed, successor, err := first.Cut(cut, chantest.TestHeight+1)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.h.Store.CutEpoch(ctx, closed, successor); err != nil {
		t.Fatal(err)
	}
	env.clock.SetTime(cut.Add(-time.Second))
	env.payRequest(env.stored("t-cut").Amount)
	if got := env.stored("t-cut"); got.Status != hub.ChargePaid || !got.Paid.Equal(cut) {
		t.Fatalf("charge is %s paid at %v, want paid at the cut %v", got.Status, got.Paid, cut)
	}
	notices := env.pub.take(charging.ProviderMsgShare)
	if len(notices) != 1 || !notices[0].msg.Paid.Equal(cut) {
		t.Fatalf("share notices %+v, want one paid at the cut %v", notices, cut)
	}
}
