package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

// TestWebhookCommands registers an endpoint with hubctl, sends it a test
// ping that the receiver verifies with the Standard Webhooks library, and
// lists the (then empty) deliveries.
func TestWebhookCommands(t *testing.T) {
	dir := t.TempDir()
	store, err := boltstore.New(boltstore.Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := btcec.NewPrivateKey()
	prov, err := reg.Enrol(t.Context(), registry.EnrolRequest{Key: hub.PubKeyOf(k.PubKey()), Roles: []hub.Role{hub.RoleProvider}}, "operator")
	if err != nil {
		t.Fatal(err)
	}
	eps, err := webhook.OpenEndpoints(filepath.Join(dir, "webhooks.json"), nil, webhook.AddressPolicy{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhook.New(webhook.Config{OutboxPath: filepath.Join(dir, "outbox.db"), Endpoints: eps, Policy: webhook.AddressPolicy{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	hooks.Start()
	t.Cleanup(func() { hooks.Close() })
	h, err := httpapi.New(httpapi.Config{Registry: reg, Token: testToken, Webhooks: eps, Deliveries: hooks,
		Info: func() httpapi.Info { return httpapi.Info{} }})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(h)
	t.Cleanup(api.Close)
	conn := []string{"--admin", strings.TrimPrefix(api.URL, "http://"), "--token", testToken}

	got := make(chan error, 1)
	var secret string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		wh, err := standardwebhooks.NewWebhook(secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		got <- err
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)

	code, out, errOut := runCtl(t, append(conn, "--json", "webhook", "add", "--provider", prov.ID, "--url", rcv.URL)...)
	var ep webhook.Endpoint
	if code != exitOK || json.Unmarshal([]byte(out), &ep) != nil || !strings.HasPrefix(ep.Secret, "whsec_") {
		t.Fatalf("webhook add: exit %d, %q %s", code, out, errOut)
	}
	secret = ep.Secret
	if code, out, errOut := runCtl(t, append(conn, "webhook", "test", ep.ID)...); code != exitOK || !strings.Contains(out, "ping") {
		t.Fatalf("webhook test: exit %d, %q %s", code, out, errOut)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the ping does not verify with the Standard Webhooks library: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ping arrived")
	}
	if code, _, _ := runCtl(t, append(conn, "webhook", "test", "wh_nosuch")...); code != exitNotFound {
		t.Fatalf("test of an unknown endpoint: exit %d, want %d", code, exitNotFound)
	}
	if code, _, _ := runCtl(t, append(conn, "webhook", "redeliver", "whd_nosuch")...); code != exitNotFound {
		t.Fatalf("redeliver of an unknown delivery: exit %d, want %d", code, exitNotFound)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, errOut := runCtl(t, append(conn, "--json", "webhook", "deliveries")...)
		if code != exitOK {
			t.Fatalf("webhook deliveries: exit %d %s", code, errOut)
		}
		if strings.TrimSpace(out) == "[]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not empty after the ping: %s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
