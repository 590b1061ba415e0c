package main

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// TestCDRCommands lists and shows CDRs the hub stored, as a table and with
// --json, through a real admin API over a real store.
func TestCDRCommands(t *testing.T) {
	store, conn := serveAPI(t, func(store *boltstore.Store, _ *registry.Registry, cfg *httpapi.Config) { cfg.CDRs = store })
	at := time.Date(2026, 6, 10, 21, 5, 0, 0, time.UTC)
	want := hubtest.ExampleCDR(t, "../..", "CDR1", "cpo-1", at)
	for _, r := range []hub.CDRRecord{want, hubtest.ExampleCDR(t, "../..", "CDR2", "cpo-2", at.Add(time.Minute))} {
		if err := store.PutCDR(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errOut := runCtl(t, append(conn, "cdr", "list", "--provider", "cpo-1")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[1], "CDR1") || !strings.Contains(lines[1], "3256000") || !strings.Contains(lines[1], "2.96 EUR") {
		t.Fatalf("cdr list: exit %d, %q %s", code, out, errOut)
	}
	code, out, errOut = runCtl(t, append(conn, "--json", "cdr", "list")...)
	var all []hub.CDRRecord
	if code != exitOK || json.Unmarshal([]byte(out), &all) != nil || len(all) != 2 || all[0].ID != "CDR2" {
		t.Fatalf("cdr list --json: exit %d, %q %s", code, out, errOut)
	}
	code, out, errOut = runCtl(t, append(conn, "cdr", "show", "CDR1")...)
	if code != exitOK || !strings.Contains(out, "total_msat") || !strings.Contains(out, "3256000") || !strings.Contains(out, "3.5816 EUR") {
		t.Fatalf("cdr show: exit %d, %q %s", code, out, errOut)
	}
	code, out, errOut = runCtl(t, append(conn, "--json", "cdr", "show", "CDR1")...)
	var got hub.CDRRecord
	var doc bytes.Buffer
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil || json.Compact(&doc, got.CDR) != nil ||
		got.TotalMsat != want.TotalMsat || doc.String() != string(want.CDR) {
		t.Fatalf("cdr show --json: exit %d, %q %s", code, out, errOut)
	}
	if code, _, errOut = runCtl(t, append(conn, "cdr", "show", "nope")...); code == exitOK || !strings.Contains(errOut, "not found") {
		t.Fatalf("cdr show of an unknown id: exit %d, %s", code, errOut)
	}
}

// serveAPI runs the real admin API over a real registry and store, with
// the parts mod adds to its Config, and returns the store and hubctl's
// connection flags.
func serveAPI(t *testing.T, mod func(*boltstore.Store, *registry.Registry, *httpapi.Config)) (*boltstore.Store, []string) {
	t.Helper()
	store, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{Registry: reg, Token: testToken, Info: func() httpapi.Info { return httpapi.Info{Network: "regtest"} }}
	mod(store, reg, &cfg)
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return store, []string{"--admin", strings.TrimPrefix(srv.URL, "http://"), "--token", testToken}
}
