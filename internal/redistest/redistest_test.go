package redistest_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestKillRestartKeepsWrites checks the helper's whole promise: the server
// runs with an fsynced AOF, so a write acknowledged before SIGKILL is there
// after a restart on the same directory and port.
func TestKillRestartKeepsWrites(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()

	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()

	cfg, err := c.ConfigGet(ctx, "append*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
		t.Fatalf("server config appendonly=%q appendfsync=%q, want yes/always", cfg["appendonly"], cfg["appendfsync"])
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded against a killed server")
	}
	srv.Restart()

	got, err := c.Get(ctx, "k").Result()
	if err != nil {
		t.Fatalf("GET after restart: %v", err)
	}
	if got != "v" {
		t.Fatalf("GET after restart = %q, want %q", got, "v")
	}
}
