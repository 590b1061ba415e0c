package main

import (
	"fmt"
	"log/slog"
	"syscall"
)

// fdReserve is what hubd keeps for itself beyond its listeners' caps: the
// store, the in-process NATS and its clients, btcd RPC and the child's
// pipes, webhook deliveries, logs and data files.
const fdReserve = 512

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit, so every
// listener gets its full cap, and warns when the caps with fdReserve do
// not fit in it: then a flood on one listener could still starve the
// others and the store.
func raiseFDLimit(cfg config, log *slog.Logger) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("descriptor limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise descriptor limit to %d: %w", lim.Max, err)
		}
	}
	// The device port holds at most its sessions plus the connections
	// still in handshake; the accept path enforces both caps.
	p2p := uint64(cfg.Limits.MaxSessions) + uint64(cfg.Limits.MaxHandshakes)
	budget := p2p + uint64(cfg.HTTP.MaxConns) + uint64(cfg.HTTP.MetricsMaxConns) + fdReserve
	if budget > lim.Cur {
		log.Warn("listener caps exceed the descriptor limit: lower --limits.max-sessions or raise the hard RLIMIT_NOFILE",
			"limit", lim.Cur, "budget", budget, "p2p", p2p, "admin", cfg.HTTP.MaxConns, "metrics", cfg.HTTP.MetricsMaxConns, "reserve", fdReserve)
		return nil
	}
	log.Debug("descriptor budget", "limit", lim.Cur, "budget", budget)
	return nil
}
