// Package natsembed runs nats-server in-process with JetStream storing under
// a directory: hubd's embedded event bus, and the real NATS that tests use.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
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
	Logger     *slog.Logger
}

// Server is a running embedded nats-server.
type Server struct {
	ns *server.Server
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
	return &Server{ns: ns}, nil
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
