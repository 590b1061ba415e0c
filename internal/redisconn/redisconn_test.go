package redisconn_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/redisconn"
)

func TestNew(t *testing.T) {
	for _, url := range []string{"", "http://localhost:6379"} {
		_, _, err := redisconn.New("pkg", url)
		if !errors.Is(err, hub.ErrInvalid) || !strings.HasPrefix(err.Error(), "pkg: ") {
			t.Errorf("New(%q) = %v, want a pkg: hub.ErrInvalid error", url, err)
		}
	}
	rdb, opts, err := redisconn.New("pkg", "redis://127.0.0.1:6390/2")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if opts.Addr != "127.0.0.1:6390" || opts.DB != 2 || rdb.Options().Addr != opts.Addr {
		t.Errorf("options = %s db %d, client %s", opts.Addr, opts.DB, rdb.Options().Addr)
	}
}
