package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/webhook"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/redistest"
)

// adminCall makes one admin API request with a bearer token and decodes
// the JSON answer into out (when not nil); it returns the status.
func adminCall(t *testing.T, addr, token, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func adminToken(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, datadir.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestTwoHubdShareAdminState: two hubd on one Redis (and one NATS) are one
// hub to an operator: each one's admin.token works on the other, a
// credential created on one works on the other and is revoked on both at
// once, a webhook endpoint added on one is listed by the other, and a
// delivery queued on one is POSTed exactly once by the two.
func TestTwoHubdShareAdminState(t *testing.T) {
	ns := startNATSChild(t)
	rs := redistest.Start(t)
	var mu sync.Mutex
	pings := map[string]int{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		pings[r.Header.Get(webhook.HeaderID)]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	args := []string{"--nats-url", ns.url(), "--redis-url", rs.URL(), "--webhook.allow-private"}
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startHubd(t, dirA, args...)
	b := startHubd(t, dirB, args...)
	tokA, tokB := adminToken(t, dirA), adminToken(t, dirB)
	addrA, addrB := a.rt.AdminAddr, b.rt.AdminAddr

	var creds []httpapi.Credential
	if st := adminCall(t, addrB, tokA, "GET", "/v1/creds", nil, &creds); st != http.StatusOK {
		t.Fatalf("A's admin.token on B: %d", st)
	}
	if st := adminCall(t, addrA, tokB, "GET", "/v1/creds", nil, nil); st != http.StatusOK {
		t.Fatalf("B's admin.token on A: %d", st)
	}
	if len(creds) != 2 {
		t.Fatalf("credentials on B: %+v, want both admin tokens", creds)
	}

	var made httpapi.CreatedCred
	if st := adminCall(t, addrB, tokB, "POST", "/v1/creds", httpapi.CreateCredRequest{Scope: "read-only", Label: "shared"}, &made); st != http.StatusCreated {
		t.Fatalf("create on B: %d", st)
	}
	if st := adminCall(t, addrA, made.Token, "GET", "/v1/info", nil, nil); st != http.StatusOK {
		t.Fatalf("B's credential on A: %d", st)
	}
	if st := adminCall(t, addrA, tokA, "POST", "/v1/creds/"+made.ID+"/revoke", nil, nil); st != http.StatusOK {
		t.Fatalf("revoke on A: %d", st)
	}
	if st := adminCall(t, addrB, made.Token, "GET", "/v1/info", nil, nil); st != http.StatusUnauthorized {
		t.Fatalf("credential revoked on A, on B: %d, want 401", st)
	}

	// A provider enrolled on B (the registry is shared too).
	_, prov := enrol(t, dirB, "provider")
	var ep webhook.Endpoint
	if st := adminCall(t, addrA, tokA, "POST", "/v1/webhooks", map[string]string{"provider": prov, "url": rcv.URL + "/hook"}, &ep); st != http.StatusCreated {
		t.Fatalf("add webhook on A: %d", st)
	}
	var eps []webhook.Endpoint
	if st := adminCall(t, addrB, tokB, "GET", "/v1/webhooks", nil, &eps); st != http.StatusOK || len(eps) != 1 || eps[0].ID != ep.ID {
		t.Fatalf("webhooks on B: %d %+v", st, eps)
	}
	var d webhook.Delivery
	if st := adminCall(t, addrB, tokB, "POST", "/v1/webhooks/"+ep.ID+"/test", nil, &d); st >= 300 {
		t.Fatalf("test webhook on B: %d", st)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending []webhook.Delivery
		mu.Lock()
		n := pings[d.ID]
		mu.Unlock()
		if st := adminCall(t, addrA, tokA, "GET", "/v1/webhooks/deliveries", nil, &pending); st != http.StatusOK {
			t.Fatalf("deliveries on A: %d", st)
		}
		if n >= 1 && len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping %s: %d POSTs, outbox %+v", d.ID, n, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pings) != 1 || pings[d.ID] != 1 {
		t.Fatalf("POSTs by id %v, want one of %s", pings, d.ID)
	}
}
