package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hit is one request the receiver saw.
type hit struct {
	id, ts, redelivery, sig, event string
	body                           []byte
	at                             time.Time
	header                         http.Header
}

// receiver is a local HTTP back end that fails the first fails requests.
type receiver struct {
	mu    sync.Mutex
	fails int
	hits  []hit
	srv   *httptest.Server
}

func newReceiver(t *testing.T, fails int) *receiver {
	r := &receiver{fails: fails}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.hits = append(r.hits, hit{
			id: req.Header.Get(webhook.HeaderID), ts: req.Header.Get(webhook.HeaderTimestamp),
			redelivery: req.Header.Get(webhook.HeaderRedelivery), sig: req.Header.Get(webhook.HeaderSignature),
			event: req.Header.Get(webhook.HeaderEvent), body: body, at: time.Now(), header: req.Header.Clone(),
		})
		if len(r.hits) <= r.fails {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hit(nil), r.hits...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// verify checks a delivery with the Standard Webhooks reference library,
// as a receiver would: the signature over id, timestamp and body, and the
// timestamp within its five-minute tolerance.
func verify(secret string, h hit) bool {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return false
	}
	return wh.Verify(h.body, h.header) == nil
}

type env struct {
	dir string
	eps *webhook.Endpoints
	ep  webhook.Endpoint
	rcv *receiver
}

func newEnv(t *testing.T, fails int) *env {
	e := &env{dir: t.TempDir(), rcv: newReceiver(t, fails)}
	var err error
	if e.eps, err = webhook.OpenEndpoints(filepath.Join(e.dir, "webhooks.json"), nil, webhook.AddressPolicy{AllowPrivate: true}); err != nil {
		t.Fatal(err)
	}
	if e.ep, err = e.eps.Add(t.Context(), "prov1", e.rcv.srv.URL+"/hook"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) dispatcher(t *testing.T, maxAttempts int) *webhook.Dispatcher {
	d, err := webhook.New(webhook.Config{
		OutboxPath: filepath.Join(e.dir, "outbox.db"), Endpoints: e.eps,
		// The receiver is a loopback httptest server.
		Policy:     webhook.AddressPolicy{AllowPrivate: true},
		MinBackoff: 40 * time.Millisecond, MaxBackoff: time.Second, MaxAttempts: maxAttempts,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	return d
}

// TestRetryWithBackoff: a receiver that fails twice gets the same
// delivery three times, with the same id, redelivery false then true,
// valid signatures, and growing waits between attempts.
func TestRetryWithBackoff(t *testing.T) {
	e := newEnv(t, 2)
	d := e.dispatcher(t, 5)
	defer d.Close()
	body := []byte(`{"type":"receipt","data":{"kind":"receipt"}}`)
	if err := d.Enqueue(t.Context(), "prov1", webhook.EventReceipt, body); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three attempts and an empty outbox", func() bool { return len(e.rcv.got()) == 3 && d.Pending() == 0 })
	hits := e.rcv.got()
	for i, h := range hits {
		if h.id != hits[0].id || h.id != webhook.DeliveryID(e.ep.ID, webhook.EventReceipt, body) {
			t.Errorf("attempt %d id %q, first %q", i, h.id, hits[0].id)
		}
		if want := strconv.FormatBool(i > 0); h.redelivery != want {
			t.Errorf("attempt %d redelivery %q, want %s", i, h.redelivery, want)
		}
		if !verify(e.ep.Secret, h) || string(h.body) != string(body) || h.event != webhook.EventReceipt {
			t.Errorf("attempt %d: signature %q or body %s does not verify", i, h.sig, h.body)
		}
		if verify("whsec_d3Jvbmc=", h) {
			t.Error("a wrong secret verifies")
		}
		// The id is signed: a delivery replayed under another id fails.
		forged := h
		forged.header = h.header.Clone()
		forged.header.Set(webhook.HeaderID, "whd_forged")
		if verify(e.ep.Secret, forged) {
			t.Error("a delivery with a changed id verifies")
		}
	}
	// Backoff: at least half of 40 ms, then half of 80 ms.
	if gap := hits[1].at.Sub(hits[0].at); gap < 20*time.Millisecond {
		t.Errorf("first retry after %v", gap)
	}
	if gap := hits[2].at.Sub(hits[1].at); gap < 40*time.Millisecond {
		t.Errorf("second retry after %v", gap)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(e.rcv.got()); n != 3 {
		t.Fatalf("%d deliveries after success", n)
	}
}

// TestSameEventOnce: an event queued twice (a publish retried) is one
// delivery.
func TestSameEventOnce(t *testing.T) {
	e := newEnv(t, 0)
	d := e.dispatcher(t, 3)
	defer d.Close()
	body := []byte(`{"n":1}`)
	for range 2 {
		if err := d.Enqueue(t.Context(), "prov1", webhook.EventReceipt, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Enqueue(t.Context(), "other-provider", webhook.EventReceipt, []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery", func() bool { return len(e.rcv.got()) >= 1 && d.Pending() == 0 })
	time.Sleep(100 * time.Millisecond)
	if n := len(e.rcv.got()); n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
}

// TestRestartResumes: deliveries in the outbox survive a restart of the
// dispatcher and are sent, as redeliveries, by the next one.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t, 1)
	d := e.dispatcher(t, 5)
	body := []byte(`{"type":"unpaid"}`)
	if err := d.Enqueue(t.Context(), "prov1", webhook.EventUnpaid, body); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first failed attempt", func() bool { return len(e.rcv.got()) == 1 })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Enqueue(context.Background(), "prov1", webhook.EventUnpaid, body); err == nil {
		t.Fatal("enqueued on a closed dispatcher")
	}
	d2 := e.dispatcher(t, 5)
	defer d2.Close()
	waitFor(t, "delivery after restart", func() bool { return len(e.rcv.got()) == 2 && d2.Pending() == 0 })
	h := e.rcv.got()
	if h[1].id != h[0].id || h[1].redelivery != "true" || !verify(e.ep.Secret, h[1]) {
		t.Fatalf("after restart: %+v (first %+v)", h[1], h[0])
	}
}

// TestDeadAfterMaxAttempts: a receiver that never answers 2xx gets
// MaxAttempts attempts, then none.
func TestDeadAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, 1_000)
	d := e.dispatcher(t, 3)
	defer d.Close()
	if err := d.Enqueue(t.Context(), "prov1", webhook.EventReceipt, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "outbox empty", func() bool { return d.Pending() == 0 && len(e.rcv.got()) == 3 })
	time.Sleep(300 * time.Millisecond)
	if n := len(e.rcv.got()); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

// recorder is a test-only hub.Publisher standing in for NATS.
type recorder struct {
	mu   sync.Mutex
	subj []string
}

func (r *recorder) Publish(_ context.Context, subject string, _ []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subj = append(r.subj, subject)
	return nil
}

// TestPublisherQueuesProviderMessages: what charging publishes to a
// provider goes to NATS and to the provider's webhooks, wrapped in an
// envelope naming the event type; other subjects are not webhooks.
func TestPublisherQueuesProviderMessages(t *testing.T) {
	e := newEnv(t, 0)
	d := e.dispatcher(t, 3)
	defer d.Close()
	next := &recorder{}
	p := webhook.NewPublisher(next, d)
	msg, _ := json.Marshal(charging.ProviderMessage{Kind: charging.ProviderMsgUnpaid, Payer: "dev1", EventIDs: []string{"e1"}, Reason: charging.UnpaidNoChannel, StopService: "true"})
	if err := p.Publish(t.Context(), charging.ReceiptsSubject("prov1"), msg); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(t.Context(), "usage.prov1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	h, env, got := onlyWebhook(t, e, d)
	if env.Type != webhook.EventUnpaid || env.Provider != "prov1" || got.Payer != "dev1" || h.event != webhook.EventUnpaid {
		t.Fatalf("webhook %+v %+v", env, got)
	}
	if len(next.subj) != 2 {
		t.Fatalf("NATS got %v", next.subj)
	}
}

// onlyWebhook waits for the one webhook the test expects and decodes it.
func onlyWebhook(t *testing.T, e *env, d *webhook.Dispatcher) (hit, webhook.Envelope, charging.ProviderMessage) {
	t.Helper()
	waitFor(t, "webhook", func() bool { return len(e.rcv.got()) == 1 && d.Pending() == 0 })
	h := e.rcv.got()[0]
	var env webhook.Envelope
	if err := json.Unmarshal(h.body, &env); err != nil {
		t.Fatal(err)
	}
	var got charging.ProviderMessage
	if err := json.Unmarshal(env.Data, &got); err != nil {
		t.Fatal(err)
	}
	return h, env, got
}

// TestPublisherShareNotice: a payee's "share" notice reaches the payee's
// webhooks as a "share" event, with its shares.
func TestPublisherShareNotice(t *testing.T) {
	// prov1 stands for the payee: the endpoint is its.
	e := newEnv(t, 0)
	d := e.dispatcher(t, 3)
	defer d.Close()
	p := webhook.NewPublisher(&recorder{}, d)
	msg, _ := json.Marshal(charging.ProviderMessage{Kind: charging.ProviderMsgShare, Receipt: "00", Events: []string{"e1", "e2"},
		Shares: []charging.EventShare{{EventID: "e2", Msat: 1350}}})
	if err := p.Publish(t.Context(), charging.ReceiptsSubject("prov1"), msg); err != nil {
		t.Fatal(err)
	}
	h, env, got := onlyWebhook(t, e, d)
	if env.Type != webhook.EventShare || env.Provider != "prov1" || h.event != webhook.EventShare ||
		len(got.Shares) != 1 || got.Shares[0].Msat != 1350 {
		t.Fatalf("webhook %+v %+v", env, got)
	}
}

// TestPublisherSplitsReceipts: a "receipts" message goes to NATS as it is
// and to the provider's webhooks as one "receipt" webhook per receipt.
func TestPublisherSplitsReceipts(t *testing.T) {
	e := newEnv(t, 0)
	d := e.dispatcher(t, 3)
	defer d.Close()
	next := &recorder{}
	p := webhook.NewPublisher(next, d)
	msg, _ := json.Marshal(charging.ProviderMessage{Kind: charging.ProviderMsgReceipts, Receipts: []charging.PaidReceipt{
		{Receipt: "aa", Events: []string{"e1"}}, {Receipt: "bb", Events: []string{"e2", "e3"}},
	}})
	if err := p.Publish(t.Context(), charging.ReceiptsSubject("prov1"), msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "webhooks", func() bool { return len(e.rcv.got()) == 2 && d.Pending() == 0 })
	seen := map[string][]string{}
	for _, h := range e.rcv.got() {
		var env webhook.Envelope
		if err := json.Unmarshal(h.body, &env); err != nil {
			t.Fatal(err)
		}
		var got charging.ProviderMessage
		if err := json.Unmarshal(env.Data, &got); err != nil {
			t.Fatal(err)
		}
		if env.Type != webhook.EventReceipt || h.event != webhook.EventReceipt || got.Kind != charging.ProviderMsgReceipt || len(got.Receipts) != 0 {
			t.Fatalf("webhook %+v %+v", env, got)
		}
		seen[got.Receipt] = got.Events
	}
	if len(seen) != 2 || len(seen["aa"]) != 1 || len(seen["bb"]) != 2 {
		t.Fatalf("webhooks carried %v", seen)
	}
	if len(next.subj) != 1 {
		t.Fatalf("NATS got %v", next.subj)
	}
}

// TestEndpoints: the registry persists across reopen, hides secrets in
// List, refuses bad URLs and unknown ids with the hub's sentinels.
func TestEndpoints(t *testing.T) {
	e := newEnv(t, 0)
	ctx := t.Context()
	if _, err := e.eps.Add(ctx, "prov1", "ftp://x"); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("bad url: %v", err)
	}
	again, err := webhook.OpenEndpoints(filepath.Join(e.dir, "webhooks.json"), nil, webhook.AddressPolicy{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := again.List(ctx)
	if len(list) != 1 || list[0].ID != e.ep.ID || list[0].Secret != "" {
		t.Fatalf("reopened list %+v", list)
	}
	if ep, ok, err := again.Endpoint(ctx, e.ep.ID); err != nil || !ok || ep.Secret != e.ep.Secret {
		t.Fatal("secret not kept")
	}
	if err := again.Remove(ctx, "wh_nope"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("remove unknown: %v", err)
	}
	if err := again.Remove(ctx, e.ep.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := again.List(ctx); len(list) != 0 {
		t.Fatalf("after remove %+v", list)
	}
}

// TestDeadRedeliverAndPing: a delivery that runs out of attempts is
// listed dead with its error, Redeliver sends it again (marked a
// redelivery, still verifying), and Test sends a verifying ping.
func TestDeadRedeliverAndPing(t *testing.T) {
	e := newEnv(t, 1)
	d := e.dispatcher(t, 1)
	defer d.Close()
	body := []byte(`{"type":"unpaid","data":{}}`)
	if err := d.Enqueue(t.Context(), "prov1", webhook.EventUnpaid, body); err != nil {
		t.Fatal(err)
	}
	var list []webhook.Delivery
	waitFor(t, "the delivery to die", func() bool {
		var err error
		list, err = d.Deliveries(t.Context())
		return err == nil && len(list) == 1 && list[0].State == webhook.StateDead
	})
	if list[0].Attempts != 1 || !strings.Contains(list[0].LastError, "503") || list[0].Endpoint != e.ep.ID {
		t.Fatalf("dead delivery %+v", list[0])
	}
	if _, err := d.Redeliver(t.Context(), "whd_nosuch"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("redeliver unknown: %v", err)
	}
	if _, err := d.Redeliver(t.Context(), list[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redelivery", func() bool { return len(e.rcv.got()) == 2 && d.Pending() == 0 })
	h := e.rcv.got()[1]
	if h.id != list[0].ID || h.redelivery != "true" || !verify(e.ep.Secret, h) {
		t.Fatalf("redelivery id %s redelivery %s, verifies %v", h.id, h.redelivery, verify(e.ep.Secret, h))
	}
	if list, _ := d.Deliveries(t.Context()); len(list) != 0 {
		t.Fatalf("outbox after redelivery: %+v", list)
	}

	if _, err := d.Test(t.Context(), "wh_nosuch"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("test unknown endpoint: %v", err)
	}
	ping, err := d.Test(t.Context(), e.ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ping", func() bool { return len(e.rcv.got()) == 3 })
	h = e.rcv.got()[2]
	if h.id != ping.ID || h.event != webhook.EventPing || !verify(e.ep.Secret, h) {
		t.Fatalf("ping %+v does not verify", h)
	}
}
