package natsembed

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoadOrCreateSeed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nats.nkey")
	pub, err := LoadOrCreateSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	again, err := LoadOrCreateSeed(path)
	if err != nil || again != pub {
		t.Fatalf("reload gave %q, %v; want %q", again, err, pub)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSeed(path); err == nil {
		t.Fatal("a seed readable by others was accepted")
	}
}

func TestSetProvidersNeedsHubUser(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetProviders(context.Background(), nil); err == nil {
		t.Fatal("an open server took provider users")
	}
}

func TestProviderPermissions(t *testing.T) {
	p := ProviderPermissions("dev-1")
	wantPub := []string{
		"usage.dev-1",
		"$JS.API.CONSUMER.INFO.M2M_RECEIPTS.rcpt-dev-1",
		"$JS.API.CONSUMER.MSG.NEXT.M2M_RECEIPTS.rcpt-dev-1",
		"$JS.ACK.M2M_RECEIPTS.rcpt-dev-1.>",
	}
	wantSub := []string{"_INBOX_dev-1.>", "receipts.dev-1"}
	if !slices.Equal(p.Publish.Allow, wantPub) || !slices.Equal(p.Subscribe.Allow, wantSub) ||
		p.Publish.Deny != nil || p.Subscribe.Deny != nil {
		t.Fatalf("permissions %+v %+v", p.Publish, p.Subscribe)
	}
	if _, err := nkeyUsers("UNOTAKEY", nil); err == nil {
		t.Fatal("a bad hub nkey was accepted")
	}
}
