package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/natsjwt"
	"github.com/m2mhub/m2mhub/internal/natsjwt/natsjwttest"
	"github.com/m2mhub/m2mhub/metering"
)

// operatorNATS starts a nats-server process (JetStream on) configured with
// nothing about the hub but the include of the authority at seedsPath,
// as an operator would configure an external cluster.
func operatorNATS(t *testing.T, seedsPath string) string {
	t.Helper()
	seeds, err := natsjwt.NewSeeds()
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjwt.SaveSeeds(seedsPath, seeds); err != nil {
		t.Fatal(err)
	}
	a, err := natsjwt.New(seeds)
	if err != nil {
		t.Fatal(err)
	}
	return natsjwttest.Start(t, natsServerBinary(t), a).URL
}

// TestProviderCredsOnOperatorNATS: with an external NATS in operator mode
// trusting the hub's authority, `hubctl provider add` returns a .creds
// file; with it the provider publishes usage on its own subject through
// JetStream and not on another's, and revoking the provider disconnects
// it and keeps it out.
func TestProviderCredsOnOperatorNATS(t *testing.T) {
	seedsPath := filepath.Join(t.TempDir(), "nats-authority.json")
	url := operatorNATS(t, seedsPath)
	dir := t.TempDir()
	startHubd(t, dir, "--nats-url", url, "--nats-authority", seedsPath)

	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	var p httpapi.Provider
	out := mustHubctl(t, dir, "--json", "provider", "add", "--pubkey", hex.EncodeToString(k.PubKey().SerializeCompressed()))
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.NATS == nil || p.NATS.Creds == "" || p.NATS.Seed != "" {
		t.Fatalf("provider add: %v: %s", err, out)
	}
	id := p.Device.ID
	creds := filepath.Join(t.TempDir(), "provider.creds")
	if err := os.WriteFile(creds, []byte(p.NATS.Creds), 0o600); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	pc, err := nats.Connect(url, nats.UserCredentials(creds), nats.CustomInboxPrefix(p.NATS.InboxPrefix), nats.NoReconnect(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("provider connect: %v", err)
	}
	defer pc.Close()
	js, err := jetstream.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), p.NATS.UsageSubject, []byte(`{}`)); err != nil {
		t.Fatalf("publish own usage: %v", err)
	}
	short, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := js.Publish(short, metering.UsageSubject("someone-else"), []byte(`{}`), jetstream.WithRetryAttempts(0)); err == nil {
		t.Fatal("published another provider's usage")
	}

	mustHubctl(t, dir, "device", "revoke", id, "--reason", "test")
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("revoked provider still connected to NATS")
	}
	if c, err := nats.Connect(url, nats.UserCredentials(creds), nats.NoReconnect()); err == nil {
		c.Close()
		t.Fatal("revoked provider connected again")
	}
}
