package natsjwt_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/internal/natsjwt"
	"github.com/m2mhub/m2mhub/internal/natsjwt/natsjwttest"
	"github.com/m2mhub/m2mhub/metering"
)

var natsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natsjwt-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	natsBin = filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build nats-server: %v: %s\n", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestExternalServerFromConfig: a nats-server process configured only with
// ServerConfig's include (and JetStream) accepts the hub's user, lets a
// provider publish its usage through JetStream on its own subject and not
// on another's, and drops and refuses the provider after RevokeProviders.
func TestExternalServerFromConfig(t *testing.T) {
	dir := t.TempDir()
	seedsPath := filepath.Join(dir, "nats-authority.json")
	seeds, err := natsjwt.NewSeeds()
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjwt.SaveSeeds(seedsPath, seeds); err != nil {
		t.Fatal(err)
	}
	if err := natsjwt.SaveSeeds(seedsPath, seeds); err == nil {
		t.Fatal("seeds saved over an existing file")
	}
	loaded, err := natsjwt.LoadSeeds(seedsPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := natsjwt.New(loaded)
	if err != nil {
		t.Fatal(err)
	}
	srv := natsjwttest.Start(t, natsBin, a)
	url := srv.URL

	hubUser, err := a.HubUser("hubd")
	if err != nil {
		t.Fatal(err)
	}
	var hub *nats.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		hub, err = nats.Connect(url, nats.UserCredentials(natsjwttest.CredsFile(t, hubUser)))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub connect: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer hub.Close()
	js, err := jetstream.New(hub)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: metering.UsageStream, Subjects: []string{"usage.>"}})
	if err != nil {
		t.Fatalf("the hub account has no JetStream: %v", err)
	}

	prov, err := a.ProviderUser("p1")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	pc, err := nats.Connect(url, nats.UserCredentials(natsjwttest.CredsFile(t, prov)), nats.NoReconnect(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("provider connect: %v", err)
	}
	defer pc.Close()
	// JetStream's acknowledgement comes back on the provider's inbox,
	// which it may subscribe to only under its own prefix.
	pc2, err := nats.Connect(url, nats.UserCredentials(natsjwttest.CredsFile(t, prov)), nats.CustomInboxPrefix(metering.InboxPrefix("p1")),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	pjs, err := jetstream.New(pc2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pjs.Publish(t.Context(), metering.UsageSubject("p1"), []byte(`{"n":1}`)); err != nil {
		t.Fatalf("provider's own usage through JetStream: %v", err)
	}
	// Refused: no acknowledgement comes, and the stream below shows
	// nothing was stored.
	short, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := pjs.Publish(short, metering.UsageSubject("p2"), []byte(`{"n":2}`), jetstream.WithRetryAttempts(0)); err == nil {
		t.Fatal("provider published another provider's usage")
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want the provider's one", info.State.Msgs)
	}

	sys := natsjwttest.SystemConn(t, a, url)
	natsjwttest.RevokeAndWait(t, a, sys, closed, "p1")
	if c, err := nats.Connect(url, nats.UserCredentials(natsjwttest.CredsFile(t, prov)), nats.NoReconnect()); err == nil {
		c.Close()
		t.Fatal("revoked provider connected again")
	}
	// The resolver stored the update: after a restart of the server the
	// provider is still refused.
	srv.Restart()
	deadline = time.Now().Add(30 * time.Second)
	for {
		c, err := nats.Connect(url, nats.UserCredentials(natsjwttest.CredsFile(t, hubUser)), nats.NoReconnect())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub connect after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, err := nats.Connect(url, nats.UserCredentials(natsjwttest.CredsFile(t, prov)), nats.NoReconnect()); err == nil {
		c.Close()
		t.Fatal("revoked provider connected after a server restart")
	}
}
