package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
)

// noIncome answers the income endpoint, which these docs do not use.
type noIncome struct{}

func (noIncome) Income(_ context.Context, provider string, from, to time.Time) (charging.Income, error) {
	return charging.Income{Provider: provider}, nil
}

// shBlocks returns the lines of the ```sh blocks of a markdown file.
func shBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "```sh"):
			in = true
		case strings.HasPrefix(l, "```"):
			in = false
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// TestEVChargingDocCommands runs every command of docs/ev-charging.md from
// the repository root against a hub's admin API, and checks that the
// published OCPI tariff is stored under the hash it prints.
func TestEVChargingDocCommands(t *testing.T) {
	store, conn := serveAPI(t, func(store *boltstore.Store, reg *registry.Registry, cfg *httpapi.Config) {
		cs, err := httpapi.JoinContracts(httpapi.ContractsConfig{Store: store, Auditor: reg, Incomes: noIncome{}})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Contracts, cfg.CDRs = cs, store
	})
	t.Setenv("M2MHUB_ADMIN", conn[1])
	t.Setenv("M2MHUB_ADMIN_TOKEN", testToken)
	lines := shBlocks(t, "../../docs/ev-charging.md")
	if len(lines) < 2 {
		t.Fatalf("docs/ev-charging.md has %d commands", len(lines))
	}
	t.Chdir("../..")
	var printed string
	for _, l := range lines {
		args := strings.Fields(l)
		if args[0] != "hubctl" {
			t.Fatalf("not a hubctl command: %s", l)
		}
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args[1:], &out, &errOut); code != exitOK {
			t.Fatalf("%s: exit %d: %s", l, code, errOut.String())
		}
		printed += out.String()
	}
	// The ids the docs name for the keys they show are the ones the
	// hub gives them.
	for _, id := range []string{"dev-74ff2420cb2d311d", "dev-103c78b3cc4823e5"} {
		if _, err := store.Device(context.Background(), id); err != nil || !strings.Contains(printed, id) {
			t.Errorf("device %s: %v\n%s", id, err, printed)
		}
	}
	if !strings.Contains(printed, "11895000") {
		t.Errorf("the priced example does not total 11,895,000 msat:\n%s", printed)
	}
	// Revenue splits: the payees' ids, the shares section 6 states, and
	// the split contract published beside the OCPI tariff (the oldest).
	for _, want := range []string{"dev-e1e8c53782b2806f", "dev-843efdfc6203078a", "483441", "107823", "2632176"} {
		if !strings.Contains(printed, want) {
			t.Errorf("section 6 does not print %s:\n%s", want, printed)
		}
	}
	recs, err := store.Contracts(context.Background())
	if err != nil || len(recs) != 2 || recs[1].Name != "DE*ACM*AC-22-2026" || !strings.Contains(printed, recs[1].Hash.String()) ||
		recs[0].Name != "fastcharge-nl-2026-mall" {
		t.Fatalf("published %+v %v\n%s", recs, err, printed)
	}
	recs = recs[1:]
	if !bytes.Contains(recs[0].Document, []byte(`"tariff_alt_url":"https://acme-charging.example/tariffs/ac-22"`)) {
		t.Fatalf("stored document lost the OCPI fields: %s", recs[0].Document)
	}
}

// TestOCPIFlags checks the refusals of the OCPI flags.
func TestOCPIFlags(t *testing.T) {
	for _, args := range [][]string{
		{"contract", "price", "../../contracts/testdata/ocpi/tariff.json", "../../contracts/testdata/ocpi/usage.json"},
		{"contract", "price", "--rate-msat-per-unit", "1000000", "../../contracts/testdata/ocpi/tariff.json", "../../contracts/testdata/ocpi/usage.json"},
		{"contract", "price", "--rate-msat-per-unit", "1e6", "--time-zone", "UTC", "../../contracts/testdata/ocpi/tariff.json", "../../contracts/testdata/ocpi/usage.json"},
		{"contract", "price", "--rate-msat-per-unit", "1", "--time-zone", "UTC", "../../contracts/testdata/examples/ev_charging.json", "../../contracts/testdata/usage/ev_charging.json"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code == exitOK || errOut.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
	}
}
