package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
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
	//    msat/EUR. A capture against a hold pays no hub fee.
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
		ev.HoldStatus != "released" || ev.MeterEvents != 270 || ev.EnergyKWh != "8.1" {
		t.Errorf("EV hold %+v", ev)
	}
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
// whose figures contracts/examples_test.go checks.
func TestDemoContractsMatchExamples(t *testing.T) {
	for _, kind := range []string{"ev_charging", "toll", "bandwidth", "energy"} {
		doc, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", kind+".json"))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := contracts.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := contracts.Parse([]byte(demoContracts[kind]))
		if err != nil {
			t.Fatal(err)
		}
		if ex.Hash() != ours.Hash() {
			t.Fatalf("the demo's %s contract differs from the example", kind)
		}
	}
}
