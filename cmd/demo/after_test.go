package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
)

// stopKept stops the hubd a --keep demo left running in dir, and waits
// for it to exit.
func stopKept(t *testing.T, dir string) {
	rt, err := datadir.Dir(dir).ReadRuntime()
	if err != nil || rt.PID <= 0 {
		return
	}
	if err := syscall.Kill(rt.PID, syscall.SIGTERM); err != nil {
		return
	}
	deadline := time.Now().Add(40 * time.Second)
	for syscall.Kill(rt.PID, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(rt.PID, 0) == nil {
		_ = syscall.Kill(rt.PID, syscall.SIGKILL)
		t.Errorf("hubd %d did not stop within 40 s of SIGTERM", rt.PID)
	}
}

// scrapeMetrics reads hubd's /metrics.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p expfmt.TextParser
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// sample is the value of one series of a family (labels as name=value
// pairs), or the sum of all its series when no label is given.
func sample(mf map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := mf[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
	for _, m := range f.GetMetric() {
		match := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			has := false
			for _, lp := range m.GetLabel() {
				has = has || lp.GetName() == k && lp.GetValue() == v
			}
			match = match && has
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum, found
}

// checkFiguresReconcile compares, after the demo, the money metrics and
// the figures the dashboard shows (the income and exposure it reads from
// the API) with the ledger: the channels' signed states, the charges the
// demo priced by hand, and each participant's settled figures.
func checkFiguresReconcile(t *testing.T, dir string, sum *summary) {
	ctx := t.Context()
	rt, err := datadir.Dir(dir).ReadRuntime()
	if err != nil {
		t.Fatal(err)
	}
	token, err := datadir.Dir(dir).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := httpapi.NewClient(rt.AdminAddr, token)
	mf := scrapeMetrics(t, rt.MetricsAddr)

	// Payments: the counter, the channels' cumulative paid amounts and
	// what the payers paid.
	chans, err := admin.ChannelList(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var paid uint64
	for _, c := range chans {
		paid += uint64(c.Paid)
	}
	var payersPaid uint64
	for _, p := range sum.Participants {
		payersPaid += p.PaidMsat
	}
	if got, _ := sample(mf, "m2mhub_payments_msat_total"); uint64(got) != paid || paid != payersPaid {
		t.Errorf("payments_msat_total %.0f, channels paid %d, payers paid %d: want all equal", got, paid, payersPaid)
	}

	// Charges: per kind, what the demo's uses cost (the EV session too:
	// the OCPP gateway meters it, and the hold's capture pays the charge).
	kinds := map[string]string{"ev": "ev_charging", "toll": "toll", "bandwidth": "bandwidth", "energy": "energy", "cold chain": "conditional_release"}
	want := map[string]uint64{}
	for _, r := range sum.Scenarios.Rows {
		if k, ok := kinds[r.Scenario]; ok {
			want[k] += r.AmountMsat
		}
	}
	for k, w := range want {
		got, ok := sample(mf, "m2mhub_charged_msat_total", "kind="+k)
		if !ok || uint64(got) != w {
			t.Errorf("charged_msat_total{kind=%q} %.0f, the uses cost %d", k, got, w)
		}
	}

	// Exposure: gauge and API agree.
	x, err := admin.Exposure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := sample(mf, "m2mhub_exposure_owed_msat"); uint64(got) != uint64(x.Owed) {
		t.Errorf("exposure_owed_msat %.0f, API %d", got, x.Owed)
	}

	// Income, as the dashboard shows it: every provider's earnings are
	// its settled figure; nothing is unpaid or held; only the refunded
	// shipment is withheld.
	//
	// Every payment pays a metered charge (the provider's part and the
	// hub's fee, in the income API), the EV session's hold capture
	// included: the charges add up to payments_msat_total.
	var metered uint64
	for _, p := range sum.Participants {
		if p.EarnedMsat == 0 && p.Name != "reefer-truck" {
			continue
		}
		in, err := admin.Income(ctx, p.ID, time.Time{}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		metered += uint64(in.Earned + in.Fees)
		var withheld uint64
		if p.Name == "reefer-truck" {
			withheld = 165_000_000 // the out-of-range shipment, refunded by its contract
		}
		if uint64(in.Earned) != p.EarnedMsat || in.Unpaid != 0 || in.Held != 0 || uint64(in.Withheld) != withheld {
			t.Errorf("%s: income %+v, want earned %d, unpaid 0, held 0, withheld %d", p.Name, in, p.EarnedMsat, withheld)
		}
	}
	if metered != paid {
		t.Errorf("metered charges paid %d msat, payments_msat_total and the channels %d: want equal", metered, paid)
	}
}

// checkReadmeOperating runs the README's "Operating" block against the
// hub the demo left running, as an operator would type it: each command
// must exit 0. The placeholders the block names in its comments
// (<car-pubkey>, <device-id>, <outpoint>, <receipt-id>…) are filled from
// the output of the command whose comment names them.
func checkReadmeOperating(t *testing.T, bin, dir string) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "## Operating")
	if i < 0 {
		t.Fatal("README has no Operating section")
	}
	block := text[i:]
	block = block[strings.Index(block, "```sh\n")+len("```sh\n"):]
	block = block[:strings.Index(block, "```")]
	lines := strings.Split(strings.TrimSpace(block), "\n")
	if !strings.HasPrefix(lines[0], "./bin/hubd --datadir /tmp/hub &") || !strings.HasPrefix(lines[1], `H="./bin/hubctl --datadir /tmp/hub"`) {
		t.Fatalf("the block no longer starts hubd and sets H as this test expects: %q", lines[:2])
	}
	work := t.TempDir()
	if err := os.Symlink(filepath.Join(mustAbs(t, "../.."), "contracts"), filepath.Join(work, "contracts")); err != nil {
		t.Fatal(err)
	}
	h := bin + "/hubctl --datadir " + dir
	vars := map[string]string{}
	placeholder := regexp.MustCompile(`<[a-z-]+>`)
	for _, line := range lines[2:] {
		cmdPart, comment, _ := strings.Cut(line, " #")
		for _, stmt := range strings.Split(cmdPart, ";") {
			stmt = strings.TrimSpace(stmt)
			if stmt == "" {
				continue
			}
			run := strings.ReplaceAll(stmt, "$H", h)
			run = placeholder.ReplaceAllStringFunc(run, func(p string) string {
				v, ok := vars[p]
				if !ok {
					t.Fatalf("%q uses %s, which no earlier command produced", stmt, p)
				}
				return v
			})
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			cmd := exec.CommandContext(ctx, "bash", "-c", run)
			cmd.Dir = work
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			cancel()
			if err != nil {
				t.Fatalf("README: %q: %v\n%s%s", stmt, err, out.String(), errOut.String())
			}
			// What this command's comment says it prints.
			for _, p := range placeholder.FindAllString(comment, -1) {
				if strings.Contains(stmt, p) {
					continue
				}
				if v := extract(p, out.String()); v != "" {
					vars[p] = v
				}
			}
		}
	}
	for _, p := range []string{"<car-pubkey>", "<device-id>", "<cp-pubkey>", "<outpoint>", "<receipt-id>"} {
		if vars[p] == "" {
			t.Errorf("the README block never produced %s", p)
		}
	}
}

// extract reads a placeholder's value from the output of the command that
// makes it: a printed key, or a column of a table.
func extract(p, out string) string {
	rows := strings.Split(strings.TrimSpace(out), "\n")
	switch p {
	case "<car-pubkey>", "<cp-pubkey>":
		return strings.TrimSpace(out)
	case "<device-id>", "<receipt-id>":
		if len(rows) > 1 {
			return strings.Fields(rows[1])[0]
		}
	case "<outpoint>":
		// The first paid channel of channels list (OUTPOINT … SEQ).
		for _, r := range rows[1:] {
			f := strings.Fields(r)
			if len(f) > 4 && strings.Contains(f[0], ":") {
				if seq, err := strconv.Atoi(f[4]); err == nil && seq > 0 {
					return f[0]
				}
			}
		}
	}
	return ""
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
