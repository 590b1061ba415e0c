package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
)

// docLines returns the command lines of the ```sh blocks of docs/*.md, by
// file: comments cut, continuation lines joined, blank and comment-only
// lines left out.
func docLines(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in, cont := false, ""
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "```") {
				in = strings.HasPrefix(l, "```sh")
				continue
			}
			if !in {
				continue
			}
			if c := strings.Index(l, " #"); c >= 0 {
				l = l[:c]
			}
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "#") || l == "" {
				continue
			}
			if strings.HasSuffix(l, `\`) {
				cont += strings.TrimSuffix(l, `\`)
				continue
			}
			l, cont = strings.Join(strings.Fields(cont+l), " "), ""
			out[filepath.Base(f)] = append(out[filepath.Base(f)], l)
		}
	}
	return out
}

// docStep is one command run for a documented line: the documented
// synopsis made concrete ({NAME} filled from vars), the exit code it must
// give, and, optionally, what of its output to keep as a var.
type docStep struct {
	run  string
	exit int
	keep func(out string, vars map[string]string)
}

// docRun says how a documented line runs against the demo's hub, or why it
// cannot run here (skip).
type docRun struct {
	steps []docStep
	skip  string
}

// firstField keeps the first word of the output's second line (a table's
// first row) as name.
func firstField(name string) func(string, map[string]string) {
	return func(out string, vars map[string]string) {
		rows := strings.Split(strings.TrimSpace(out), "\n")
		if len(rows) > 1 {
			vars[name] = strings.Fields(rows[1])[0]
		}
	}
}

// docRuns maps every command line of docs/*.md to its run. A line added
// to the docs without an entry here fails the test, as does an entry whose
// line is gone.
var docRuns = map[string]docRun{
	"operations.md: hubctl device add --pubkey HEX --role payer [--role provider] [--owner …] [--kind …]": {steps: []docStep{
		{run: "$H device add --pubkey {NEWKEY} --role payer --role provider --owner docs --kind meter", keep: firstField("ID")},
	}},
	"operations.md: hubctl device list | show ID | revoke ID [--reason …]": {steps: []docStep{
		{run: "$H device list"},
		{run: "$H device show {ID}"},
		// Revoked last, below (the rotation needs the device active).
	}},
	"operations.md: hubctl device unreadable": {steps: []docStep{{run: "$H device unreadable"}}},
	"operations.md: hubctl device remove --force ID [--reason …]": {steps: []docStep{
		// Only a record the hub cannot read is removed; a readable one
		// is refused ("revoke it instead", 400, exit 2) and stays.
		{run: "$H device remove --force {ID} --reason docs", exit: 2},
	}},
	"operations.md: hubctl sign-rotation --old-key-file OLD --new-pubkey HEX --device ID": {steps: []docStep{
		{run: "$H sign-rotation --old-key-file {KEYFILE} --new-pubkey {NEWKEY2} --device {ID}",
			keep: func(out string, vars map[string]string) { vars["SIG"] = strings.TrimSpace(out) }},
	}},
	"operations.md: hubctl device rotate ID --new-pubkey HEX --sig HEX": {steps: []docStep{
		{run: "$H device rotate {ID} --new-pubkey {NEWKEY2} --sig {SIG}"},
		{run: "$H device revoke {ID} --reason docs"},
		{run: "$H device revoke {ID} --reason docs", exit: 9}, // revoking twice is a conflict
	}},
	"operations.md: hubctl token create --role payer [--device-key HEX] [--ttl 24h] --out FILE": {steps: []docStep{
		{run: "$H token create --role payer --device-key {NEWKEY3} --ttl 24h --out {TMP}/token.bin"},
	}},
	"operations.md: docker compose up -d --build":                    {skip: "needs docker; deploy/compose_test.go checks docker-compose.yml"},
	"operations.md: docker compose ps":                               {skip: "needs docker"},
	"operations.md: docker compose exec hubd-1 hubctl info":          {skip: "needs docker; hubctl info runs in the README block"},
	"operations.md: docker compose --profile load run --rm loadtest": {skip: "needs docker; the loadtest tool has its own tests"},
	`operations.md: docker compose exec btcd btcctl --regtest --rpcserver=127.0.0.1:18334 --rpccert=/data/rpc.cert --rpcuser=m2mhub --rpcpass="$BTCD_RPCPASS" generate 432`: {
		skip: "needs docker"},
	"operations.md: hubctl settle plan": {steps: []docStep{{run: "$H settle plan"}}},
	"operations.md: hubctl settle run": {skip: "waits for the batch to confirm, and nothing mines blocks on the demo's regtest once it is done; " +
		"the --no-wait form runs here, and cmd/hubctl's settle_test.go runs the waiting one to a confirmed run"},
	"operations.md: hubctl settle run --no-wait":                   {steps: []docStep{{run: "$H settle run --no-wait"}}},
	"operations.md: hubctl settle status [--epoch N] [--limit 10]": {steps: []docStep{{run: "$H settle status"}, {run: "$H settle status --epoch 1"}, {run: "$H settle status --limit 10"}}},
	"operations.md: hubctl epochs [--limit 20]":                    {steps: []docStep{{run: "$H epochs --limit 20"}}},
	"operations.md: hubctl receipt list --channel OUTPOINT": {steps: []docStep{
		{run: "$H channels list", keep: func(out string, vars map[string]string) { vars["OUTPOINT"] = extract("<outpoint>", out) }},
		{run: "$H receipt list --channel {OUTPOINT}", keep: firstField("RECEIPT")},
	}},
	"operations.md: hubctl receipt get ID --out FILE": {steps: []docStep{{run: "$H receipt get {RECEIPT} --out {TMP}/receipt.bin"}}},
	"operations.md: hubctl receipt verify FILE":       {steps: []docStep{{run: "$H receipt verify {TMP}/receipt.bin"}}},
	"operations.md: hubctl creds create --scope read-only --label dashboard": {steps: []docStep{
		{run: "$H creds create --scope read-only --label dashboard"},
	}},
	"webhooks.md: hubctl webhook add --provider ID --url https://backend.example/m2m": {steps: []docStep{
		{run: "$H provider list", keep: firstField("PROVIDER")},
		{run: "$H webhook add --provider {PROVIDER} --url https://backend.example/m2m", keep: firstField("WEBHOOK")},
	}},
	"webhooks.md: hubctl webhook list":            {steps: []docStep{{run: "$H webhook list"}}},
	"webhooks.md: hubctl webhook test WEBHOOK_ID": {steps: []docStep{{run: "$H webhook test {WEBHOOK}"}}},
	"webhooks.md: hubctl webhook deliveries":      {steps: []docStep{{run: "$H webhook deliveries"}}},
	"webhooks.md: hubctl webhook redeliver DELIVERY_ID": {skip: "needs a dead delivery, which takes the retry schedule's hours to exhaust; " +
		"hub/webhook's tests redeliver a dead one, cmd/hubctl's webhook test checks the command's not-found answer"},
	"webhooks.md: hubctl webhook remove WEBHOOK_ID": {steps: []docStep{{run: "$H webhook remove {WEBHOOK}"}}},
	"ev-charging.md: hubctl contract price --rate-msat-per-unit 1000000 --time-zone Europe/Berlin contracts/testdata/ocpi/tariff.json contracts/testdata/ocpi/usage.json": {
		skip: "run by cmd/hubctl's TestEVChargingDocCommands, which checks what they print"},
	"ev-charging.md: hubctl contract publish --rate-msat-per-unit 1000000 --time-zone Europe/Berlin contracts/testdata/ocpi/tariff.json": {
		skip: "run by cmd/hubctl's TestEVChargingDocCommands"},
	"ev-charging.md: hubctl cdr list": {steps: []docStep{{run: "$H cdr list"}}},
	"ev-charging.md: hubctl provider add --pubkey 024d6f8274f43f53949eed7bbcb46eac3e803dce7db267273bdf20b270d9278ac7 --owner acme-charging --kind cpo": {
		steps: []docStep{{run: "$H provider add --pubkey {NEWKEY4} --owner acme-charging --kind cpo", keep: firstField("CPO")}}},
	"ev-charging.md: hubctl device set-payout dev-74ff2420cb2d311d bcrt1p6rk2wt69jj9kcg9qrcftphs96s34zxcr2nqvy709xxdd3h3rexjqvesug0": {
		steps: []docStep{{run: "$H device set-payout {CPO} {PAYOUT}"}}},
	"ev-charging.md: hubctl device add --pubkey 0230bf40e206b6287780a795aa69bf241182cfaa267b7b6dc6946e9c005188bb75 --role payer --owner fleet --kind car": {
		steps: []docStep{{run: "$H device add --pubkey {NEWKEY5} --role payer --owner fleet --kind car"}}},
	"ev-charging.md: hubctl provider add --pubkey 03baf7689c0a3558fb604589036a8d1e4b685d909f6e0e2c6018a14049ae64ec26 --owner mall --kind site-host": {
		skip: "the split contract names these payees' ids; run with it by cmd/hubctl's TestEVChargingDocCommands, which checks the shares printed"},
	"ev-charging.md: hubctl provider add --pubkey 029c1f585aa80762f9f4458f6806978b7befb46c7b68af82d399630793ff1a2b50 --owner emsp --kind emsp": {
		skip: "run by cmd/hubctl's TestEVChargingDocCommands"},
	"ev-charging.md: hubctl contract price contracts/testdata/splits/ev_charging.json contracts/testdata/usage/ev_charging.json": {
		skip: "run by cmd/hubctl's TestEVChargingDocCommands, which checks what it prints"},
	"ev-charging.md: hubctl contract publish contracts/testdata/splits/ev_charging.json": {
		skip: "its payees are enrolled by the two lines before, run by cmd/hubctl's TestEVChargingDocCommands"},
}

// checkDocsCommands runs the command blocks of docs/*.md against the hub
// the demo left running, in the order the docs give them, each as docRuns
// makes it concrete, and checks every exit code.
func checkDocsCommands(t *testing.T, bin, dir string) {
	lines := docLines(t)
	seen := map[string]bool{}
	var order []string
	files := make([]string, 0, len(lines))
	for f := range lines {
		files = append(files, f)
	}
	slices.Sort(files)
	for _, f := range files {
		for _, l := range lines[f] {
			key := f + ": " + l
			if _, ok := docRuns[key]; !ok {
				t.Errorf("%s: no entry in docRuns says how to run it", key)
				continue
			}
			if !seen[key] {
				seen[key] = true
				order = append(order, key)
			}
		}
	}
	for key := range docRuns {
		if !seen[key] {
			t.Errorf("docRuns has %q, which no doc shows any more", key)
		}
	}

	tmp := t.TempDir()
	oldKey, _ := btcec.NewPrivateKey()
	keyFile := filepath.Join(tmp, "old.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(oldKey.Serialize())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newKey := func() string {
		k, _ := btcec.NewPrivateKey()
		return hex.EncodeToString(k.PubKey().SerializeCompressed())
	}
	payout, _, err := payoutAddress()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"NEWKEY": hex.EncodeToString(oldKey.PubKey().SerializeCompressed()), "KEYFILE": keyFile,
		"NEWKEY2": newKey(), "NEWKEY3": newKey(), "NEWKEY4": newKey(), "NEWKEY5": newKey(), "TMP": tmp, "PAYOUT": payout,
	}
	h := bin + "/hubctl --datadir " + dir
	ran, skipped := 0, 0
	for _, key := range order {
		r := docRuns[key]
		if r.skip != "" {
			skipped++
			t.Logf("not run here: %s: %s", key, r.skip)
			continue
		}
		for _, st := range r.steps {
			cmdline := strings.ReplaceAll(st.run, "$H", h)
			cmdline = varRE.ReplaceAllStringFunc(cmdline, func(v string) string {
				val, ok := vars[strings.Trim(v, "{}")]
				if !ok {
					t.Fatalf("%s: %q uses %s, which no earlier step produced", key, st.run, v)
				}
				return val
			})
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			cmd := exec.CommandContext(ctx, "bash", "-c", cmdline)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			cancel()
			code := cmd.ProcessState.ExitCode()
			if err != nil && code <= 0 {
				t.Fatalf("%s: %q: %v", key, st.run, err)
			}
			if code != st.exit {
				t.Fatalf("%s: %q exited %d, want %d\n%s%s", key, st.run, code, st.exit, out.String(), errOut.String())
			}
			if st.keep != nil {
				st.keep(out.String(), vars)
			}
			ran++
		}
	}
	t.Logf("docs: %d commands run against the demo's hub, %d lines not run here (reasons above)", ran, skipped)
	if ran < 20 {
		t.Errorf("only %d documented commands ran", ran)
	}
}

var varRE = regexp.MustCompile(`\{[A-Z0-9]+\}`)
