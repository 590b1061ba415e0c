package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/msat"
)

// TestDemo runs the demo end to end against real binaries (hubd with its
// embedded NATS and store, a btcd regtest child) and checks the figures it
// reports against amounts worked out by hand from the contracts, not just
// that it exits.
func TestDemo(t *testing.T) {
	bin := t.TempDir()
	for _, pkg := range []string{"../hubd", "../hubctl", ".", "../loadtest", "github.com/btcsuite/btcd"} {
		if out, err := exec.Command("go", "build", "-o", bin+"/", pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	// --help lists the programs' own flags, not the -rapid.* test flags
	// lnwire's import of rapid registers on flag.CommandLine.
	for _, prog := range []string{"demo", "loadtest"} {
		out, _ := exec.Command(bin+"/"+prog, "-h").CombinedOutput()
		if strings.Contains(string(out), "rapid") || !strings.Contains(string(out), "-hubd") {
			t.Errorf("%s -h:\n%s", prog, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	// --keep: the hub stays up for the checks after the demo.
	dir := t.TempDir()
	t.Cleanup(func() { stopKept(t, dir) })
	sum, err := run(ctx, &out, bin+"/hubd", dir, true, false)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	t.Logf("demo took %v (settlement %.1f s)\n%s", took, sum.Settlement.Seconds, out.String())
	if took > 2*time.Minute {
		t.Errorf("the demo took %v, over 2 minutes", took)
	}
	if !sum.Authenticated || sum.StrangerRefusal != "unknown-key" || sum.DeviceID == "" || len(sum.HubPubKey) != 66 ||
		!strings.Contains(out.String(), "demo OK") {
		t.Fatalf("summary %+v", sum)
	}

	// Each use, priced by hand:
	//  - EV, Wed 22:40-23:25 at 10.8 kW (0.03 kWh per 10 s): FLAT 0.50;
	//    until 23:00 3.6 kWh × 0.30 + 20 min × 1.20/h = 1.48; after,
	//    4.5 kWh × 0.22 + 25 min × 0.60/h = 1.24; 3.22 EUR × 1,100,000
	//    msat/EUR. The station's 271 signed readings (begin, then one
	//    every 10 s) give the same 270 periods through the gateway. The
	//    OCPI tariff names no hub fee.
	//  - toll: car morning peak 60,000, car daytime default 40,000, truck
	//    at night 100,000; fee 0.5%.
	//  - bandwidth, per buyer and month: 800 MB × 50; 600 MB × 50; then
	//    200 × 50 + 200 × 20 and 400 × 50 + 200 × 20 across 1,000 MB;
	//    fee 2% + 10 msat.
	//  - energy: 0.12 EUR/kWh before 17:00, 0.28 after (308,000 msat/kWh);
	//    fee 1%.
	//  - cold chain: 150 EUR released (fee 2% + 1,000 msat), and a refund.
	want := []struct {
		scenario    string
		amount, fee uint64
	}{
		{"ev", 3_542_000, 0},
		{"toll", 60_000, 300}, {"toll", 40_000, 200}, {"toll", 100_000, 500},
		{"bandwidth", 40_000, 810}, {"bandwidth", 30_000, 610}, {"bandwidth", 14_000, 290}, {"bandwidth", 24_000, 490},
		{"energy", 132_000, 1_320}, {"energy", 616_000, 6_160}, {"energy", 462_000, 4_620},
		{"energy", 154_000, 1_540}, {"energy", 308_000, 3_080},
		{"cold chain", 165_000_000, 3_301_000}, {"cold chain", 0, 0},
	}
	sc := sum.Scenarios
	if len(sc.Rows) != len(want) {
		t.Fatalf("uses %+v", sc.Rows)
	}
	var paid, fees uint64
	for i, w := range want {
		r := sc.Rows[i]
		if r.Scenario != w.scenario || r.AmountMsat != w.amount || r.FeeMsat != w.fee {
			t.Errorf("use %d: %+v, want %+v", i, r, w)
		}
		paid += w.amount
		fees += w.fee
	}
	ev := sc.EV
	if ev.HoldMaxMsat != 10_000_000 || ev.CapturedMsat != 3_542_000 || ev.ReleasedMsat != 6_458_000 ||
		ev.HoldStatus != "released" || ev.MeterEvents != 270 || ev.EnergyKWh != "8.1" ||
		ev.SignedReadings != 271 || ev.Station != evStation || ev.IDToken != evToken || !strings.HasPrefix(ev.EventID, "ocmf-") {
		t.Errorf("EV hold %+v", ev)
	}
	checkCDR(t, &sum, out.String())
	// Conservation, to the msat: what payers paid is what providers
	// earned plus the hub's fees.
	if sc.PaidMsat != paid || sc.FeesMsat != fees || sc.EarnedMsat+sc.FeesMsat != sc.PaidMsat {
		t.Errorf("paid %d (want %d), earned %d, fees %d (want %d)", sc.PaidMsat, paid, sc.EarnedMsat, sc.FeesMsat, fees)
	}

	// Each participant's figures, and its part of the batch as read from
	// the chain: a channel or payout moves the net in whole satoshis
	// (rounded toward zero); a provider whose earnings are below the dust
	// limit is carried.
	parts := map[string]*participant{}
	var earned, spent int64
	for _, p := range sum.Participants {
		parts[p.Name] = p
		earned += int64(p.EarnedMsat)
		spent += int64(p.PaidMsat)
		if p.NetMsat != int64(p.EarnedMsat)-int64(p.PaidMsat) {
			t.Errorf("%s: net %d, paid %d, earned %d", p.Name, p.NetMsat, p.PaidMsat, p.EarnedMsat)
		}
		if p.OnChainSat != p.SettledSat {
			t.Errorf("%s: %d sat on chain, %d settled", p.Name, p.OnChainSat, p.SettledSat)
		}
	}
	if spent-earned != int64(fees) {
		t.Errorf("participants paid %d and earned %d msat; hub fees %d", spent, earned, fees)
	}
	for _, w := range []struct {
		name         string
		paid, earned uint64
		mode         string
		onchain      int64
		carry        string
	}{
		{"car", 3_742_000, 0, "cooperative", -3_742, ""},
		{"pharmacy", 165_000_000, 0, "cooperative", -165_000, ""},
		// 132,000 + 154,000 + 308,000 energy + 40,000 + 14,000 MB;
		// sold 616,000 + 462,000 less 1%.
		{"household-a", 648_000, 1_067_220, "cooperative", 419, ""},
		// 616,000 + 462,000 energy + 30,000 + 24,000 MB; sold
		// 132,000 + 154,000 + 308,000 less 1%.
		{"household-b", 1_132_000, 588_060, "cooperative", -543, ""},
		{"charge-point", 0, 3_542_000, "payout", 3_542, ""},
		{"toll-operator", 0, 199_000, "", 0, "dust"},
		{"mesh-router", 0, 105_800, "", 0, "dust"},
		{"reefer-truck", 0, 161_699_000, "payout", 161_699, ""},
	} {
		p := parts[w.name]
		if p == nil {
			t.Errorf("no participant %s", w.name)
			continue
		}
		if p.PaidMsat != w.paid || p.EarnedMsat != w.earned || p.Mode != w.mode || p.OnChainSat != w.onchain || p.CarryReason != w.carry {
			t.Errorf("%s: %+v, want %+v", w.name, *p, w)
		}
	}
	if len(parts) != 8 {
		t.Errorf("participants %d, want 8", len(parts))
	}

	st := sum.Settlement
	if len(st.Txids) != 1 || st.Channels != 4 || st.Payouts != 2 || st.ConfirmHeight == 0 || st.FeeSat <= 0 || st.RevenueSat <= 0 {
		t.Errorf("settlement %+v", st)
	}
	// A cooperative channel: its key-path input (41 bytes, 4 WU each,
	// plus a 67-byte witness: the 65-byte signature carries its explicit
	// SIGHASH_SINGLE|ANYONECANPAY byte) is 57.75 vB, its next channel's
	// P2TR output 43 vB.
	if st.VBytesPerChannel != 100.75 {
		t.Errorf("%.2f vB per channel, want 100.75", st.VBytesPerChannel)
	}
	// Every satoshi the channels gave up went to a payout, the hub's
	// revenue or the fee; the hub's revenue is its fees and the carried
	// earnings, less the fee, give or take sub-satoshi remainders.
	var moved int64
	for _, p := range sum.Participants {
		moved += p.OnChainSat
	}
	if moved+st.FeeSat+st.RevenueSat != 0 {
		t.Errorf("batch moves %d sat, fee %d, revenue %d", moved, st.FeeSat, st.RevenueSat)
	}
	if !sum.ReceiptVerified || sum.Receipt.Txid != st.Txids[0] || sum.Receipt.Confirmations < 1 {
		t.Errorf("receipt %+v verified %v", sum.Receipt, sum.ReceiptVerified)
	}

	// The hub the demo leaves running: its figures against the ledger,
	// then the README's commands against it.
	t.Run("FiguresReconcile", func(t *testing.T) { checkFiguresReconcile(t, dir, &sum) })
	t.Run("ReadmeOperating", func(t *testing.T) { checkReadmeOperating(t, bin, dir) })
	t.Run("DocsCommands", func(t *testing.T) { checkDocsCommands(t, bin, dir) })
}

// TestDemoContractsMatchExamples keeps the demo's copies of the example
// contracts identical (by contract hash) to contracts/testdata/examples,
// whose figures contracts/examples_test.go checks. The EV tariff is the
// OCPI form of the ev_charging example, which has a hub fee and security
// rules an OCPI file cannot carry: it must price sessions the same, by
// night and day, charging and parked, and parked when parking is free.
func TestDemoContractsMatchExamples(t *testing.T) {
	example := func(kind string) *contracts.Contract {
		doc, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", kind+".json"))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := contracts.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	for _, kind := range []string{"toll", "bandwidth", "energy"} {
		ours, err := contracts.Parse([]byte(demoContracts[kind]))
		if err != nil {
			t.Fatal(err)
		}
		if example(kind).Hash() != ours.Hash() {
			t.Fatalf("the demo's %s contract differs from the example", kind)
		}
	}
	doc, err := contractDoc("ev_charging")
	if err != nil {
		t.Fatal(err)
	}
	ours, err := contracts.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	ex := example("ev_charging")
	ams, err := time.LoadLocation("Europe/Amsterdam")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		start           time.Time
		charge, park    time.Duration
		kw, wantExclEUR string
	}{
		// The demo's session: 3.22 EUR (demo_test's TestDemo).
		{time.Date(2026, 11, 25, 22, 40, 0, 0, ams), 45 * time.Minute, 0, "10.8", "3.22"},
		// Tuesday noon, 1 h at 11 kW and 40 min parked: 0.50 + 3.30 +
		// 1.20 + 2.00 (8 steps of 5 min at 3.00/h, rounded up).
		{time.Date(2026, 11, 24, 12, 0, 0, 0, ams), time.Hour, 40 * time.Minute, "11", "7"},
		// Two minutes on Sunday morning at 3 kW: 0.50 + 0.1 kWh × 0.30 +
		// 2 min × 1.20/h (no parking fee on Sundays).
		{time.Date(2026, 11, 29, 9, 0, 0, 0, ams), 2 * time.Minute, 10 * time.Minute, "3", "0.57"},
	} {
		u := contracts.Usage{Start: s.start, End: s.start.Add(s.charge + s.park), Periods: []contracts.ChargingPeriod{{
			Start: s.start, EnergyKWh: contracts.D(contracts.MustDec(s.kw).Mul(contracts.MustDec(fmt.Sprint(s.charge.Hours())).Decimal)),
			PowerKW: contracts.MustDec(s.kw), State: contracts.StateCharging}}}
		if s.park > 0 {
			u.Periods = append(u.Periods, contracts.ChargingPeriod{Start: s.start.Add(s.charge), State: contracts.StateParking})
		}
		a, err := contracts.Price(ex, u)
		if err != nil {
			t.Fatal(err)
		}
		b, err := contracts.Price(ours, u)
		if err != nil {
			t.Fatal(err)
		}
		want := contracts.MustDec(s.wantExclEUR).Mul(contracts.MustDec("1100000").Decimal)
		if a.TotalMsat != b.TotalMsat || a.VATMsat != b.VATMsat || want.String() != fmt.Sprint(uint64(b.TotalMsat)) {
			t.Errorf("session at %s: the example prices %d msat (VAT %d), the OCPI tariff %d (VAT %d), by hand %s",
				s.start, uint64(a.TotalMsat), uint64(a.VATMsat), uint64(b.TotalMsat), uint64(b.VATMsat), want)
		}
	}
}

// checkCDR checks the EV session's CDR the demo reports: the hub's, for
// the gateway's event; its totals are what the car's channel paid for the
// session (the hold's capture), to the msat; its currency figures are the
// msat figures at the tariff's rate; and the human output shows it.
func checkCDR(t *testing.T, sum *summary, out string) {
	t.Helper()
	if len(sum.CDR) == 0 {
		t.Fatal("no cdr in the summary")
	}
	// The --json form carries it under the top-level key cdr.
	b, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	var cdr contracts.CDR
	if err := json.Unmarshal(top["cdr"], &cdr); err != nil {
		t.Fatalf("summary's cdr: %v", err)
	}
	ev := sum.Scenarios.EV
	m := cdr.M2MHub
	if cdr.ID != ev.CDRID || m.TotalMsat != msat.Amount(ev.CapturedMsat) || m.TotalMsat != 3_542_000 ||
		m.FixedMsat+m.EnergyMsat+m.TimeMsat+m.ParkingMsat+m.ReservationMsat != m.TotalMsat || m.FeeMsat+m.ProviderMsat != m.TotalMsat {
		t.Errorf("CDR %s: %+v, the hold captured %d msat", cdr.ID, m, ev.CapturedMsat)
	}
	// 3.22 EUR at 1,100,000 msat/EUR, 21 % VAT on top: 0.6762 EUR,
	// 743,820 msat.
	if cdr.TotalCost.ExclVAT.String() != "3.22" || cdr.TotalCost.InclVAT == nil || cdr.TotalCost.InclVAT.String() != "3.8962" ||
		m.VATMsat != 743_820 || m.RateMsatPerUnit.String() != "1100000" || cdr.TotalEnergy.String() != "8.1" || cdr.Currency != "EUR" {
		t.Errorf("CDR costs %+v, energy %s %s", cdr.TotalCost, cdr.TotalEnergy, cdr.Currency)
	}
	if cdr.CdrToken.UID != evToken || cdr.CdrLocation.ID != evStation || cdr.CountryCode != "NL" || cdr.PartyID != "FCN" {
		t.Errorf("CDR token %+v, location %q, issuer %s*%s", cdr.CdrToken, cdr.CdrLocation.ID, cdr.CountryCode, cdr.PartyID)
	}
	// The car's channel paid the session and the tolls (3 × car or
	// truck); the CDR's total is the session's part.
	var car *participant
	for _, p := range sum.Participants {
		if p.Name == "car" {
			car = p
		}
	}
	var tolls uint64
	for _, r := range sum.Scenarios.Rows {
		if r.Payer == "car" && r.Scenario != "ev" {
			tolls += r.AmountMsat
		}
	}
	if car == nil || car.PaidMsat-tolls != uint64(m.TotalMsat) {
		t.Errorf("the car paid %+v, %d of it for tolls; the CDR says %d", car, tolls, uint64(m.TotalMsat))
	}
	// The meter's 271 signed readings, as the station sent them.
	if sd := cdr.SignedData; sd == nil || len(sd.SignedValues) != ev.SignedReadings || sd.EncodingMethod != "OCMF" || sd.PublicKey == "" ||
		sd.SignedValues[0].Nature != "Start" || sd.SignedValues[len(sd.SignedValues)-1].Nature != "End" {
		t.Errorf("CDR signed data %+v", sd)
	} else {
		for i, v := range sd.SignedValues {
			blob, err := base64.StdEncoding.DecodeString(v.SignedData)
			if err != nil || !strings.HasPrefix(string(blob), "OCMF|"+v.PlainData+"|") {
				t.Fatalf("signed value %d: %+v", i, v)
			}
		}
	}
	if !strings.Contains(out, "CDR "+cdr.ID+": 8.1 kWh") || !strings.Contains(out, "paid 3542000 msat by the car's channel") {
		t.Errorf("the output does not show the CDR %s", cdr.ID)
	}
}
