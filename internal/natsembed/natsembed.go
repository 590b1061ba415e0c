// Package natsembed runs nats-server in-process with JetStream storing under
// a directory: hubd's embedded event bus, and the real NATS that tests use.
// With HubNkey set the server admits only nkey users: the hub itself, with
// full rights, and each provider, confined to its own subjects (see
// ProviderPermissions). SetProviders changes the provider users at runtime.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures the embedded server.
type Config struct {
	// Listen is host:port; port 0 picks a free one.
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// SyncAlways makes JetStream fsync every write instead of every
	// SyncInterval (nats-server's default is two minutes). The metering
	// stream acknowledges nothing it could lose, so hubd turns it on.
	SyncAlways bool
	// HubNkey is the public nkey of the hub's own NATS user, which has
	// full rights. Empty leaves the server open to anyone who can reach
	// it, with no users: fine on a loopback test bus, not for hubd.
	HubNkey string
	// Providers are the provider users at start; SetProviders replaces
	// them. They need HubNkey.
	Providers []ProviderCreds
	Logger    *slog.Logger
}

// Server is a running embedded nats-server.
type Server struct {
	ns *server.Server
	// base is the options the server started with; reloads copy it and
	// change only the users.
	base    *server.Options
	hubNkey string
	mu      sync.Mutex // serialises SetProviders
	log     *slog.Logger
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsembed: listen address: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsembed: listen port: %w", err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("natsembed: a JetStream store dir is required")
	}
	opts := &server.Options{
		ServerName: "m2mhub-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true, // hubd owns signal handling
		NoLog:      true,
		MaxPayload: 1 << 20,
	}
	if cfg.HubNkey == "" && len(cfg.Providers) > 0 {
		return nil, errors.New("natsembed: provider users need the hub's own nkey user")
	}
	base := opts.Clone()
	if cfg.HubNkey != "" {
		users, err := nkeyUsers(cfg.HubNkey, cfg.Providers)
		if err != nil {
			return nil, err
		}
		opts.Nkeys = users
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	go ns.Start() // nats-server owns this goroutine; Shutdown ends it
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("natsembed: nats-server did not become ready in 30s")
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("embedded NATS ready", "url", ns.ClientURL(), "jetstream", cfg.StoreDir)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{ns: ns, base: base, hubNkey: cfg.HubNkey, log: log}, nil
}

// SetProviders replaces the provider users with creds and reloads the
// server's options: a new provider can connect at once, a removed one is
// disconnected. It needs a server started with HubNkey.
func (s *Server) SetProviders(ctx context.Context, creds []ProviderCreds) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hubNkey == "" {
		return errors.New("natsembed: the server runs without users (no HubNkey)")
	}
	// Fresh users every time: the server keeps (and reorders) the slice
	// it is given.
	users, err := nkeyUsers(s.hubNkey, creds)
	if err != nil {
		return err
	}
	opts := s.base.Clone()
	opts.Nkeys = users
	if err := s.ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("natsembed: reload: %w", err)
	}
	s.log.Info("NATS provider users reloaded", "providers", len(creds))
	return nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Healthy reports whether the server still accepts connections.
func (s *Server) Healthy() error {
	if !s.ns.Running() {
		return errors.New("natsembed: not running")
	}
	return nil
}

// Close shuts the server down and waits for it.
func (s *Server) Close() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
