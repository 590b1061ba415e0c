package webhook_test

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

// TestAddressPolicyAtRegistration registers URLs to every kind of
// address, with and without --webhook.allow-private.
func TestAddressPolicyAtRegistration(t *testing.T) {
	cases := []struct {
		url                 string
		strict, withPrivate bool // accepted?
	}{
		{"http://169.254.169.254/latest/meta-data/", false, false},
		{"http://[::ffff:169.254.169.254]/", false, false},
		{"http://169.254.1.1:8080/", false, false},
		{"http://[fe80::1]/", false, false},
		{"http://0.0.0.0/", false, false},
		{"http://[::]/", false, false},
		{"http://224.0.0.1/", false, false},
		{"http://255.255.255.255/", false, false},
		{"http://127.0.0.1:9/", false, true},
		{"http://[::1]/", false, true},
		{"http://localhost:9/", false, true}, // a name resolving to loopback
		{"http://10.1.2.3/", false, true},
		{"http://172.16.0.1/", false, true},
		{"http://192.168.1.1/", false, true},
		{"http://100.64.0.1/", false, true},
		{"http://[fd00::1]/", false, true},
		{"https://93.184.215.14/hook", true, true},
		{"https://user:pw@93.184.215.14/hook", false, false},
		{"ftp://93.184.215.14/", false, false},
	}
	for _, allow := range []bool{false, true} {
		eps, err := webhook.OpenEndpoints(filepath.Join(t.TempDir(), "webhooks.json"), nil, webhook.AddressPolicy{AllowPrivate: allow})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			want := c.strict
			if allow {
				want = c.withPrivate
			}
			_, err := eps.Add(t.Context(), "prov1", c.url)
			switch {
			case want && err != nil:
				t.Errorf("allow-private=%v: %s refused: %v", allow, c.url, err)
			case !want && !errors.Is(err, hub.ErrInvalid):
				t.Errorf("allow-private=%v: %s: error %v, want ErrInvalid", allow, c.url, err)
			}
		}
	}
}

// logBuffer is a slog handler's sink the test can wait on.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAddressPolicyAtDelivery registers a name while it was allowed (as
// a name that resolved to a public address then would be) and delivers
// with a policy that refuses what it resolves to now: the dial is refused
// after resolution and the receiver never hears of it.
func TestAddressPolicyAtDelivery(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, 0)
	eps, err := webhook.OpenEndpoints(filepath.Join(dir, "webhooks.json"), nil, webhook.AddressPolicy{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(rcv.srv.URL, "127.0.0.1", "localhost", 1) + "/hook"
	if _, err := eps.Add(t.Context(), "prov1", url); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	d, err := webhook.New(webhook.Config{
		OutboxPath: filepath.Join(dir, "outbox.db"), Endpoints: eps, MaxAttempts: 1,
		MinBackoff: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	defer d.Close()
	if err := d.Enqueue(t.Context(), "prov1", webhook.EventReceipt, []byte(`{"type":"receipt"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused delivery to be dead-lettered", func() bool {
		return d.Pending() == 0 && strings.Contains(logs.String(), "address refused")
	})
	if hits := rcv.got(); len(hits) != 0 {
		t.Fatalf("receiver on a loopback address got %d deliveries", len(hits))
	}
}
