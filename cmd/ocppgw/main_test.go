package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesBadSetup checks that the gateway refuses to start without
// TLS (unless told it is a test) and with a bad station file, before it
// contacts any hub.
func TestRunRefusesBadSetup(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("NoTLS", func(t *testing.T) {
		err := run(context.Background(), options{config: "x"}, quiet)
		if err == nil || !strings.Contains(err.Error(), "-tls-cert") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("ErrConfig", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "stations.json")
		if err := os.WriteFile(bad, []byte(`{"stations":{"CS1":{"password":"short"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := run(context.Background(), options{plain: true, config: bad}, quiet); !errors.Is(err, errConfig) {
			t.Fatalf("err %v, want errConfig", err)
		}
	})
}
