// Package redisconn opens the Redis clients of the stores on Redis
// (hub/redisstore, hub/redisshared), so both read Config.URL alike.
package redisconn

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// New returns a client for url, e.g. "redis://user:pass@host:6379/0"
// (rediss:// for TLS), and the options parsed from it; the client
// connects on first use. An empty or unparsable url is hub.ErrInvalid,
// in an error prefixed with pkg.
func New(pkg, url string) (*redis.Client, *redis.Options, error) {
	if url == "" {
		return nil, nil, fmt.Errorf("%s: %w: URL is required", pkg, hub.ErrInvalid)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: URL: %v", pkg, hub.ErrInvalid, err)
	}
	return redis.NewClient(opts), opts, nil
}
