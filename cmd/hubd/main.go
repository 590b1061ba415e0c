// Command hubd runs the m2mhub hub. With no flags it needs nothing installed:
// it runs nats-server in-process, keeps its state in an embedded store, and
// starts btcd in regtest as a child process, all under the data dir. Flags
// switch each part to an external service.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/internal/version"
)

func main() {
	cfg, err := loadConfig(os.Args[1:])
	if err != nil {
		var fe *flags.Error
		if errors.As(err, &fe) && fe.Type == flags.ErrHelp {
			os.Exit(0)
		}
		if !errors.As(err, &fe) {
			fmt.Fprintln(os.Stderr, "hubd:", err)
		}
		os.Exit(2)
	}
	if cfg.Version {
		fmt.Println(version.String("hubd"))
		return
	}
	log := newLogger(cfg.LogLevel)
	if err := raiseFDLimit(cfg, log); err != nil {
		log.Error("hubd cannot start", "err", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := run(ctx, cfg, log); err != nil {
		log.Error("hubd stopped with an error", "err", err)
		os.Exit(1)
	}
	log.Info("hubd stopped")
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
