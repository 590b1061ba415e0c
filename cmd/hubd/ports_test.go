package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/internal/datadir"
)

// TestBusyPortFailsFirst checks that a port already in use stops hubd
// before it starts anything: no btcd, no NATS store, and an error naming
// the flag and the address.
func TestBusyPortFailsFirst(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, flag := range []string{"--listen", "--admin", "--metrics-listen", "--nats-listen"} {
		t.Run(strings.TrimPrefix(flag, "--"), func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"--datadir", dir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
				"--metrics-listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", flag, taken.Addr().String()}
			cfg, err := loadConfig(args)
			if err != nil {
				t.Fatal(err)
			}
			err = run(context.Background(), cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), flag+" "+taken.Addr().String()) {
				t.Fatalf("run with %s busy: %v, want an error naming it", flag, err)
			}
			for _, part := range []string{datadir.NATSDir, datadir.BtcdDir} {
				if _, err := os.Stat(filepath.Join(dir, part)); err == nil {
					t.Errorf("%s was started before the busy port was found", part)
				}
			}
		})
	}
}

// TestVersionFlag checks --version parses without any other setting.
func TestVersionFlag(t *testing.T) {
	cfg, err := loadConfig([]string{"--version"})
	if err != nil || !cfg.Version {
		t.Fatalf("--version: %+v, %v", cfg.Version, err)
	}
}
