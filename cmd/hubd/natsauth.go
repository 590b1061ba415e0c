package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/natsjwt"
)

// natsAuthority signs the hub's NATS users on an external NATS (or
// cluster) in operator mode: the hub's own, and one per provider, which
// `hubctl provider add` hands over as a .creds file. Revoking a provider
// pushes the account JWT with the revocation to the cluster over a
// system-account connection. See internal/natsjwt.
type natsAuthority struct {
	auth    *natsjwt.Authority
	sys     *nats.Conn
	devices interface {
		Devices(ctx context.Context) ([]hub.Device, error)
	}
	prepare func(ctx context.Context, id string) error
}

// loadNATSAuthority reads the seeds at path, creating them when missing
// together with the nats-server config include path+".conf" (the
// operator, the system account and a full resolver in path+".resolver",
// preloaded with the accounts). The include is written once: a newer
// preload would not carry the revocations pushed since.
func loadNATSAuthority(path string, log *slog.Logger) (*natsjwt.Authority, error) {
	seeds, err := natsjwt.LoadSeeds(path)
	if errors.Is(err, fs.ErrNotExist) {
		if seeds, err = natsjwt.NewSeeds(); err != nil {
			return nil, err
		}
		if err := natsjwt.SaveSeeds(path, seeds); err != nil {
			return nil, err
		}
		a, err := natsjwt.New(seeds)
		if err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("nats authority: %w", err)
		}
		conf, err := a.ServerConfig(abs + ".resolver")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path+".conf", []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("nats authority: %w", err)
		}
		log.Warn("created the hub's NATS authority: include its config in every nats-server", "seeds", path, "include", path+".conf")
		return a, nil
	}
	if err != nil {
		return nil, err
	}
	return natsjwt.New(seeds)
}

// IssueNATS is not how this issuer works: httpapi calls IssueNATSCreds.
func (n *natsAuthority) IssueNATS(context.Context, string) (string, []byte, error) {
	return "", nil, errors.New("nats authority: issues .creds files (IssueNATSCreds), not seeds")
}

// IssueNATSCreds implements httpapi.ProviderCredsIssuer: the provider's
// receipts consumer first (the provider may not create it), then its user.
func (n *natsAuthority) IssueNATSCreds(ctx context.Context, id string) (string, []byte, error) {
	if err := n.prepare(ctx, id); err != nil {
		return "", nil, fmt.Errorf("nats authority: prepare provider %s: %w", id, err)
	}
	u, err := n.auth.ProviderUser(id)
	if err != nil {
		return "", nil, err
	}
	return u.PublicKey, u.Creds, nil
}

// NATSUsers names the user key of every provider that is not revoked.
func (n *natsAuthority) NATSUsers(ctx context.Context) (map[string]string, error) {
	ds, err := n.devices.Devices(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range ds {
		if !d.HasRole(hub.RoleProvider) || d.Status == hub.StatusRevoked {
			continue
		}
		if k, err := n.auth.ProviderKey(d.ID); err == nil {
			out[d.ID] = k
		}
	}
	return out, nil
}

// RemoveNATS revokes every credential issued to provider id so far.
func (n *natsAuthority) RemoveNATS(ctx context.Context, id string) error {
	return n.auth.RevokeProviders(ctx, n.sys, time.Now(), id)
}

// signUsers loads the authority (--nats-authority), connects the hub with
// a user it signs (added to opts) and opens the system-account connection
// revocations are pushed over.
func (b *bus) signUsers(cfg config, log *slog.Logger, st *stack, opts *[]nats.Option) error {
	if cfg.NATSCreds != "" {
		return errors.New("--nats-authority and --nats-creds exclude each other: the authority signs the hub's user")
	}
	auth, err := loadNATSAuthority(cfg.NATSAuthority, log)
	if err != nil {
		return err
	}
	hubUser, err := auth.HubUser("hubd")
	if err != nil {
		return err
	}
	sysUser, err := auth.SystemUser()
	if err != nil {
		return err
	}
	sys, err := nats.Connect(b.url, nats.Name("hubd-sys"), nats.MaxReconnects(-1), nats.UserJWTAndSeed(sysUser.JWT, string(sysUser.Seed)))
	if err != nil {
		return fmt.Errorf("nats %s (system account; is %s.conf included in its config?): %w", b.url, cfg.NATSAuthority, err)
	}
	st.push("nats system client", func(context.Context) error { sys.Close(); return nil })
	*opts = append(*opts, nats.UserJWTAndSeed(hubUser.JWT, string(hubUser.Seed)))
	b.authority = &natsAuthority{auth: auth, sys: sys}
	return nil
}
