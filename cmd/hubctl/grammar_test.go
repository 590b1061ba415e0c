package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/internal/datadir"
)

// TestGrammar checks the rules every command follows: one object for one
// thing under --json, JSON on stdout only with --json, one time format,
// one error prefix, and the documented exit codes.
func TestGrammar(t *testing.T) {
	g := newGoldenHub(t)
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCtl(t, append(append([]string(nil), g.conn...), args...)...)
	}

	t.Run("OneDeviceIsAnObject", func(t *testing.T) {
		for _, args := range [][]string{
			{"--json", "device", "show", g.prov.ID},
			{"--json", "device", "add", "--pubkey", hex.EncodeToString(seededKey(0x42).PubKey().SerializeCompressed()), "--role", "payer"},
		} {
			code, out, errOut := ctl(args...)
			if code != exitOK {
				t.Fatalf("%v: exit %d: %s", args, code, errOut)
			}
			var d map[string]any
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				t.Fatalf("%v printed %q, want one JSON object: %v", args, out, err)
			}
			if d["id"] == "" || d["enrolled_at"] == nil {
				t.Fatalf("%v printed %v", args, d)
			}
		}
	})

	t.Run("ContractList", func(t *testing.T) {
		code, out, errOut := ctl("--json", "contract", "publish", "../../contracts/testdata/examples/ev_charging.json")
		var rec map[string]any
		if code != exitOK || json.Unmarshal([]byte(out), &rec) != nil || rec["hash"] == nil {
			t.Fatalf("contract publish --json: exit %d, %q %s: want one object", code, out, errOut)
		}
		code, out, errOut = ctl("contract", "list")
		if code != exitOK || !strings.HasPrefix(out, "HASH") || !strings.Contains(out, rec["hash"].(string)) {
			t.Fatalf("contract list: exit %d, %q %s", code, out, errOut)
		}
	})

	t.Run("OneTimeFormat", func(t *testing.T) {
		_, out, _ := ctl("audit", "list")
		line := strings.Fields(strings.Split(out, "\n")[1])
		if _, err := time.Parse(time.RFC3339, line[1]); err != nil || !strings.HasSuffix(line[1], "Z") {
			t.Fatalf("audit list time %q: want RFC 3339 in UTC", line[1])
		}
	})

	t.Run("RevokeTwiceExits9", func(t *testing.T) {
		if code, out, errOut := ctl("--json", "device", "revoke", g.payer.ID); code != exitOK || !strings.HasPrefix(out, "{") {
			t.Fatalf("first revoke: exit %d, %q %s", code, out, errOut)
		}
		code, _, errOut := ctl("device", "revoke", g.payer.ID)
		if code != exitConflict {
			t.Fatalf("second revoke: exit %d (%s), want %d", code, errOut, exitConflict)
		}
		if !strings.Contains(errOut, "already revoked") {
			t.Errorf("second revoke says %q", errOut)
		}
	})

	t.Run("ErrorsPrefixedOnce", func(t *testing.T) {
		code, _, errOut := ctl("device", "revoke", "nosuch")
		if code != exitNotFound {
			t.Fatalf("exit %d, want %d", code, exitNotFound)
		}
		if strings.Count(errOut, "hub:") > 1 || strings.Count(errOut, "hubctl:") != 1 {
			t.Fatalf("error %q repeats its prefix", errOut)
		}
	})
}

// TestTokenCreateJSONOnlyWithFlag checks token create prints the token (a
// JSON document) only under --json and otherwise writes it to --out.
func TestTokenCreateJSONOnlyWithFlag(t *testing.T) {
	dir := t.TempDir()
	if _, err := datadir.Dir(dir).LoadOrCreateKey(datadir.OperatorKeyFile); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCtl(t, "--datadir", dir, "token", "create", "--role", "payer")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "--out") {
		t.Fatalf("without --json or --out: exit %d, stdout %q, stderr %q; want usage and nothing on stdout", code, out, errOut)
	}
	code, out, errOut = runCtl(t, "--datadir", dir, "--json", "token", "create", "--role", "payer")
	var tok map[string]any
	if code != exitOK || json.Unmarshal([]byte(out), &tok) != nil || tok["sig"] == nil {
		t.Fatalf("--json: exit %d, %q %s", code, out, errOut)
	}
	file := filepath.Join(dir, "tok.json")
	code, out, errOut = runCtl(t, "--datadir", dir, "token", "create", "--role", "payer", "--out", file)
	if code != exitOK || strings.Contains(out, "{") || !strings.Contains(out, file) {
		t.Fatalf("--out: exit %d, %q %s", code, out, errOut)
	}
	if b, err := os.ReadFile(file); err != nil || json.Unmarshal(b, &tok) != nil {
		t.Fatalf("token file: %v", err)
	}
}

// TestVersion checks hubctl --version answers without a command or a hub.
func TestVersion(t *testing.T) {
	code, out, errOut := runCtl(t, "--version")
	if code != exitOK || !strings.HasPrefix(out, "hubctl ") || !strings.Contains(out, "go1.") {
		t.Fatalf("--version: exit %d, %q %s", code, out, errOut)
	}
	if code, _, _ := runCtl(t); code != exitUsage {
		t.Fatalf("no command: exit %d, want %d", code, exitUsage)
	}
}

// TestStaleRuntimeFile checks that a hubd.json left by a killed hubd is
// named as such, with its dead pid, instead of "connection refused".
func TestStaleRuntimeFile(t *testing.T) {
	dir := t.TempDir()
	// A pid that surely exited: a child we started and waited for.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	dead := cmd.Process.Pid
	if err := datadir.Dir(dir).WriteRuntime(datadir.Runtime{PID: dead, AdminAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCtl(t, "--datadir", dir, "--token", "x", "info")
	if code != exitFailure || !strings.Contains(errOut, "hubd is not running") || !strings.Contains(errOut, "pid "+strconv.Itoa(dead)) {
		t.Fatalf("exit %d, %q: want the dead pid named", code, errOut)
	}
	if strings.Contains(errOut, "refused") {
		t.Fatalf("%q still talks of a refused connection", errOut)
	}
}
