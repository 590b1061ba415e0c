package redisshared_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/httpapi/credfile"
	"github.com/m2mhub/m2mhub/hub/redisshared"
	"github.com/m2mhub/m2mhub/hub/webhook"
	"github.com/m2mhub/m2mhub/internal/redistest"
)

// instance opens a store on srv as one hubd would (its own connections).
func instance(t *testing.T, srv *redistest.Server, prefix string) *redisshared.Store {
	t.Helper()
	s, err := redisshared.New(t.Context(), redisshared.Config{URL: srv.URL(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSharedCredentialsAndEndpoints: what one instance creates, the other
// sees at once; a credentials file is imported once, into an empty store
// only.
func TestSharedCredentialsAndEndpoints(t *testing.T) {
	srv := redistest.Start(t)
	a, b := instance(t, srv, "t1:"), instance(t, srv, "t1:")
	ctx := t.Context()

	// A file from before the shared store.
	dir := t.TempDir()
	file := filepath.Join(dir, "creds.json")
	f, err := credfile.New(credfile.Config{Path: file})
	if err != nil {
		t.Fatal(err)
	}
	_, tok, _ := httpapi.NewToken()
	old := httpapi.Credential{ID: "c-old", Scope: httpapi.ScopeReadOnly, Hash: httpapi.TokenHash(tok), Created: time.Unix(1000, 0).UTC()}
	if err := f.Add(ctx, old); err != nil {
		t.Fatal(err)
	}
	if n, err := credfile.Import(ctx, file, a); err != nil || n != 1 {
		t.Fatalf("import: %d, %v", n, err)
	}
	if n, err := credfile.Import(ctx, file, b); err != nil || n != 0 {
		t.Fatalf("second import: %d, %v (want 0: the store has credentials)", n, err)
	}
	if c, err := b.ByHash(ctx, httpapi.TokenHash(tok)); err != nil || c.ID != "c-old" || c.Scope != httpapi.ScopeReadOnly {
		t.Fatalf("imported credential on the other instance: %+v, %v", c, err)
	}

	_, tok2, _ := httpapi.NewToken()
	c2 := httpapi.Credential{ID: "c-new", Scope: httpapi.ScopeOperator, Hash: httpapi.TokenHash(tok2), Created: time.Unix(2000, 0).UTC()}
	if err := a.Add(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, httpapi.Credential{ID: "c-other", Hash: c2.Hash}); !errors.Is(err, hub.ErrAlreadyExists) {
		t.Fatalf("same hash added twice: %v", err)
	}
	if err := b.Add(ctx, httpapi.Credential{ID: "c-new", Hash: "x"}); !errors.Is(err, hub.ErrAlreadyExists) {
		t.Fatalf("same id added twice: %v", err)
	}
	list, err := b.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "c-old" || list[1].ID != "c-new" {
		t.Fatalf("list on the other instance: %+v, %v", list, err)
	}
	// Only hashes are stored.
	raw, err := json.Marshal(list)
	if err != nil || strings.Contains(string(raw), tok2) {
		t.Fatalf("a token is stored: %s", raw)
	}
	at := time.Unix(3000, 0).UTC()
	if c, err := b.Revoke(ctx, "c-new", at); err != nil || c.Revoked == nil {
		t.Fatalf("revoke: %+v, %v", c, err)
	}
	if c, err := a.ByHash(ctx, c2.Hash); err != nil || c.Revoked == nil || !c.Revoked.Equal(at) {
		t.Fatalf("revoked on B, seen on A: %+v, %v", c, err)
	}
	if _, err := a.Revoke(ctx, "c-new", at); !errors.Is(err, hub.ErrRevoked) {
		t.Fatalf("revoke twice: %v", err)
	}
	if _, err := a.Revoke(ctx, "nope", at); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}

	// Endpoints: added on A, listed and removed on B, gone on A.
	policy := webhook.AddressPolicy{AllowPrivate: true}
	ea, eb := webhook.NewEndpoints(a, nil, policy), webhook.NewEndpoints(b, nil, policy)
	ep, err := ea.Add(ctx, "prov1", "http://127.0.0.1:1/hook")
	if err != nil {
		t.Fatal(err)
	}
	got, err := eb.List(ctx)
	if err != nil || len(got) != 1 || got[0].ID != ep.ID || got[0].Secret != "" {
		t.Fatalf("list on B: %+v, %v", got, err)
	}
	if e, ok, err := eb.Endpoint(ctx, ep.ID); err != nil || !ok || e.Secret != ep.Secret {
		t.Fatalf("endpoint with secret on B: %+v %v %v", e, ok, err)
	}
	if err := eb.Remove(ctx, ep.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ea.Endpoint(ctx, ep.ID); err != nil || ok {
		t.Fatalf("removed on B, still on A: %v %v", ok, err)
	}
	if err := ea.Remove(ctx, ep.ID); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}

	// An endpoints file is imported once, into an empty store.
	fe, err := webhook.OpenFileEndpoints(filepath.Join(dir, "webhooks.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.PutEndpoint(ctx, webhook.Endpoint{ID: "wh_file", Provider: "p", URL: "http://127.0.0.1:1/"}); err != nil {
		t.Fatal(err)
	}
	if n, err := webhook.ImportEndpoints(ctx, filepath.Join(dir, "webhooks.json"), b); err != nil || n != 1 {
		t.Fatalf("import endpoints: %d %v", n, err)
	}
	if n, err := webhook.ImportEndpoints(ctx, filepath.Join(dir, "webhooks.json"), a); err != nil || n != 0 {
		t.Fatalf("second import endpoints: %d %v", n, err)
	}
	if _, ok, _ := ea.Endpoint(ctx, "wh_file"); !ok {
		t.Fatal("imported endpoint not on A")
	}
	if _, err := os.Stat(filepath.Join(dir, "webhooks.json")); err != nil {
		t.Fatalf("the file is kept: %v", err)
	}
}

// counter is a webhook receiver counting POSTs per delivery id.
type counter struct {
	mu    sync.Mutex
	n     map[string]int
	redel map[string][]string
	at    map[string][]time.Time
	// hold, when set, is called for a request before it is answered.
	hold func(r *http.Request)
	srv  *httptest.Server
}

func newCounter(t *testing.T) *counter {
	c := &counter{n: map[string]int{}, redel: map[string][]string{}, at: map[string][]time.Time{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := r.Header.Get(webhook.HeaderID)
		c.mu.Lock()
		c.n[id]++
		c.redel[id] = append(c.redel[id], r.Header.Get(webhook.HeaderRedelivery))
		c.at[id] = append(c.at[id], time.Now())
		hold := c.hold
		c.mu.Unlock()
		if hold != nil {
			hold(r)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *counter) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

func dispatcher(t *testing.T, s *redisshared.Store, lease time.Duration) *webhook.Dispatcher {
	t.Helper()
	d, err := webhook.New(webhook.Config{
		Outbox: s.Outbox(), Endpoints: webhook.NewEndpoints(s, nil, webhook.AddressPolicy{AllowPrivate: true}),
		Policy: webhook.AddressPolicy{AllowPrivate: true}, Lease: lease, PollInterval: 20 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDeliveredOnceByTwoInstances: deliveries enqueued on either of two
// instances sharing the outbox (some on both, as two instances publishing
// the same event) are each POSTed exactly once by the two together.
func TestDeliveredOnceByTwoInstances(t *testing.T) {
	srv := redistest.Start(t)
	a, b := instance(t, srv, "t2:"), instance(t, srv, "t2:")
	rcv := newCounter(t)
	ctx := t.Context()
	ep, err := webhook.NewEndpoints(a, nil, webhook.AddressPolicy{AllowPrivate: true}).Add(ctx, "prov1", rcv.srv.URL+"/hook")
	if err != nil {
		t.Fatal(err)
	}
	da, db := dispatcher(t, a, 30*time.Second), dispatcher(t, b, 30*time.Second)
	da.Start()
	db.Start()
	defer da.Close()
	defer db.Close()
	want := map[string]bool{}
	enqueue := func(d *webhook.Dispatcher, body string) {
		if err := d.Enqueue(ctx, "prov1", webhook.EventReceipt, []byte(body)); err != nil {
			t.Fatal(err)
		}
		want[webhook.DeliveryID(ep.ID, webhook.EventReceipt, []byte(body))] = true
	}
	for i := range 40 {
		enqueue(da, fmt.Sprintf(`{"on":"a","n":%d}`, i))
		enqueue(db, fmt.Sprintf(`{"on":"b","n":%d}`, i))
		both := fmt.Sprintf(`{"on":"both","n":%d}`, i)
		enqueue(da, both)
		enqueue(db, both)
	}
	waitFor(t, "every delivery made and the outbox empty", func() bool {
		return len(rcv.counts()) == len(want) && da.Pending() == 0
	})
	for id, n := range rcv.counts() {
		if !want[id] {
			t.Errorf("unexpected delivery %s", id)
		}
		if n != 1 {
			t.Errorf("delivery %s POSTed %d times", id, n)
		}
	}
	if len(want) != 120 {
		t.Fatalf("%d distinct deliveries queued, want 120", len(want))
	}
}

// TestClaimerDiesRedelivered: an instance that claimed a delivery and
// stops before recording the outcome (its POST reached the receiver)
// leaves it claimed; when the lease runs out the other instance delivers
// it again, as a redelivery: at least once.
func TestClaimerDiesRedelivered(t *testing.T) {
	srv := redistest.Start(t)
	a, b := instance(t, srv, "t3:"), instance(t, srv, "t3:")
	rcv := newCounter(t)
	ctx := t.Context()
	ep, err := webhook.NewEndpoints(a, nil, webhook.AddressPolicy{AllowPrivate: true}).Add(ctx, "prov1", rcv.srv.URL+"/hook")
	if err != nil {
		t.Fatal(err)
	}
	arrived := make(chan struct{})
	var once sync.Once
	rcv.hold = func(r *http.Request) {
		first := false
		once.Do(func() { first = true })
		if first {
			close(arrived)
			<-r.Context().Done() // the instance dies before the answer
		}
	}
	const lease = time.Second
	da := dispatcher(t, a, lease)
	da.Start()
	body := []byte(`{"n":1}`)
	if err := da.Enqueue(ctx, "prov1", webhook.EventReceipt, body); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no POST from A")
	}
	if err := da.Close(); err != nil { // A dies holding the claim
		t.Fatal(err)
	}
	db := dispatcher(t, b, lease)
	db.Start()
	defer db.Close()
	id := webhook.DeliveryID(ep.ID, webhook.EventReceipt, body)
	waitFor(t, "redelivery by B and an empty outbox", func() bool { return rcv.counts()[id] == 2 && db.Pending() == 0 })
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if r := rcv.redel[id]; r[0] != "false" || r[1] != "true" {
		t.Errorf("redelivery headers %q, want false then true", r)
	}
	if gap := rcv.at[id][1].Sub(rcv.at[id][0]); gap < lease-50*time.Millisecond {
		t.Errorf("B delivered %v after A's claim, inside the %v lease", gap, lease)
	}
}
