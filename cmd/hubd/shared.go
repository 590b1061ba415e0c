package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/httpapi/credfile"
	"github.com/m2mhub/m2mhub/hub/redisshared"
	"github.com/m2mhub/m2mhub/hub/webhook"
	"github.com/m2mhub/m2mhub/internal/datadir"
)

// adminState is what an operator creates besides the hub's store:
// scoped admin credentials, webhook endpoints and the webhook outbox. On
// the embedded store they are files in the data dir (one hubd); with
// --redis-url they live in Redis beside the store, so every hubd of the
// hub sees the same credentials and endpoints and each webhook delivery
// is made by one of them.
type adminState struct {
	creds     httpapi.CredStore
	endpoints webhook.EndpointStore
	outbox    webhook.Outbox // nil: the dispatcher opens the local file
	// healthy checks the shared state's Redis connection; nil for the
	// local files, which the store's check already covers (same data dir).
	healthy func(context.Context) error
}

// openAdminState opens the shared state on Redis (importing the data
// dir's files once, when Redis has none yet, and adding this hubd's
// admin.token as an operator credential so it works on every instance),
// or the local files.
func openAdminState(ctx context.Context, cfg config, dir datadir.Dir, adminToken string, log *slog.Logger, st *stack) (adminState, error) {
	if cfg.RedisURL == "" {
		creds, err := credfile.New(credfile.Config{Path: dir.Path(datadir.CredsFile)})
		if err != nil {
			return adminState{}, fmt.Errorf("admin credentials: %w", err)
		}
		eps, err := webhook.OpenFileEndpoints(dir.Path(datadir.WebhooksFile))
		if err != nil {
			return adminState{}, err
		}
		return adminState{creds: creds, endpoints: eps}, nil
	}
	sh, err := redisshared.New(ctx, redisshared.Config{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Logger: log})
	if err != nil {
		return adminState{}, err
	}
	st.push("shared admin state", func(context.Context) error { return sh.Close() })
	n, err := credfile.Import(ctx, dir.Path(datadir.CredsFile), sh)
	if err != nil {
		return adminState{}, fmt.Errorf("admin credentials: %w", err)
	}
	if n > 0 {
		log.Info("admin credentials imported into the shared store", "count", n, "from", dir.Path(datadir.CredsFile))
	}
	sum := httpapi.TokenHash(adminToken)
	host, _ := os.Hostname()
	err = sh.Add(ctx, httpapi.Credential{
		ID: "admin-token-" + sum[:12], Scope: httpapi.ScopeOperator,
		Label: fmt.Sprintf("admin.token of %s:%s", host, cfg.DataDir), Hash: sum, Created: time.Now().UTC().Truncate(time.Second),
	})
	if err != nil && !errors.Is(err, hub.ErrAlreadyExists) {
		return adminState{}, fmt.Errorf("admin credentials: %w", err)
	}
	if n, err = webhook.ImportEndpoints(ctx, dir.Path(datadir.WebhooksFile), sh); err != nil {
		return adminState{}, err
	}
	if n > 0 {
		log.Info("webhook endpoints imported into the shared store", "count", n, "from", dir.Path(datadir.WebhooksFile))
	}
	return adminState{creds: sh, endpoints: sh, outbox: sh.Outbox(), healthy: sh.Healthy}, nil
}
