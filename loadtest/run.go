// Package loadtest drives a real hubd with a simulated fleet, as the
// design's "numbers to reach" are measured: N payer devices paying M
// providers over BOLT 8 channels, and the providers metering usage for
// their payers over NATS JetStream in batch-signed messages, with a mix of
// the four use cases (EV charging, tolls, bandwidth, energy trading). It
// records every operation's latency and error, measures the signature and
// JetStream ceilings of the same machine in the same run, triggers a
// settlement epoch when the hub offers one, and reports it all as
// Markdown, JSON and PNG charts. The same seed gives the same schedule of
// operations: payees, amounts and event contents.
package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcutil"
)

// Defaults of Config.
const (
	DefaultBatch            = 100
	DefaultCapacity         = btcutil.Amount(1_000_000)
	DefaultBaselineDuration = 2 * time.Second
	// MaxDeviceRate caps one device's payments per second below the hub's
	// per-device token bucket (hub.DefaultPayRate, 200/s), so a max-rate
	// run measures the hub's capacity, not its rate limiter.
	MaxDeviceRate = 150.0
	// DrainTimeout bounds the wait for receipts after the last publish.
	DrainTimeout = 15 * time.Second
)

// Config configures Run.
type Config struct {
	// Devices pay; Providers are paid and meter usage.
	Devices, Providers int
	// Duration is how long the load runs, after setup.
	Duration time.Duration
	// Rate is the target of channel payments per second over the fleet;
	// zero runs every device as fast as it can (up to MaxDeviceRate).
	Rate float64
	// EventRate is the target of usage events per second over all
	// providers; zero publishes as fast as JetStream acknowledges.
	EventRate float64
	// Batch is events per NATS message (DefaultBatch when zero).
	Batch int
	// Window, when set, is each provider's Meter window
	// (m2mclient.MeterConfig.Window): at most that many of its events
	// unanswered, so publishing waits for receipts.
	Window int
	// Mix weighs the use cases by kind (see ParseMix); nil weighs them
	// equally.
	Mix map[string]int
	// Seed fixes the schedule of operations.
	Seed int64
	// HubDir is the data dir of a running hubd to drive; empty starts a
	// hubd child process from HubdBinary in a temporary data dir.
	HubDir     string
	HubdBinary string
	// HubLog receives the child hubd's log; nil discards it.
	HubLog io.Writer
	// Capacity is each device's channel (DefaultCapacity when zero).
	Capacity btcutil.Amount
	// BaselineDuration is how long each ceiling is measured.
	BaselineDuration time.Duration
	// Command is recorded in the report as the exact command line.
	Command string
	// Progress receives the progress line (nil: none); ProgressTTY
	// redraws one line with \r instead of printing periodic lines.
	Progress    io.Writer
	ProgressTTY bool
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	switch {
	case c.Devices <= 0 || c.Providers <= 0:
		return errors.New("loadtest: need at least one device and one provider")
	case c.Duration <= 0:
		return errors.New("loadtest: duration must be positive")
	case c.Rate < 0 || c.EventRate < 0 || c.Window < 0:
		return errors.New("loadtest: rates and the window must not be negative")
	case c.HubDir == "" && c.HubdBinary == "":
		return errors.New("loadtest: a hubd binary is needed to start a hub")
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.Batch > 1000 {
		return errors.New("loadtest: a batch holds at most 1000 events")
	}
	if c.Mix == nil {
		c.Mix = map[string]int{KindEV: 1, KindToll: 1, KindBW: 1, KindEnergy: 1}
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.BaselineDuration <= 0 {
		c.BaselineDuration = DefaultBaselineDuration
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run measures the ceilings, prepares the fleet on the hub, drives it for
// cfg.Duration, settles, and returns what it measured. It stops everything
// it started before returning.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &Results{
		Command: cfg.Command, Seed: cfg.Seed, Started: time.Now().UTC().Format(time.RFC3339),
		Config: RunConfig{
			Devices: cfg.Devices, Providers: cfg.Providers, Duration: cfg.Duration.String(),
			Rate: cfg.Rate, EventRate: cfg.EventRate, Batch: cfg.Batch, Window: cfg.Window, Mix: cfg.Mix, Hub: "child",
		},
		Machine: Machine{
			CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
			OS: runtime.GOOS, Arch: runtime.GOARCH, LoadAvg: loadAvg(),
		},
		Errors: map[string]int{},
	}
	if cfg.HubDir != "" {
		res.Config.Hub = cfg.HubDir
	}
	say := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", a...)
		}
	}

	// Ceilings first, while nothing else runs on the machine.
	say("measuring the signature-verify ceiling (%v)…", cfg.BaselineDuration)
	v, cores, err := VerifyCeiling(ctx, cfg.BaselineDuration)
	if err != nil {
		return nil, err
	}
	say("measuring the JetStream publish ceiling (%v, batches of %d)…", cfg.BaselineDuration, cfg.Batch)
	jsEv, jsMsg, err := JetStreamCeiling(ctx, cfg.BaselineDuration, cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("loadtest: JetStream ceiling: %w", err)
	}
	res.Baselines = Baselines{VerifyPerSecond: v, VerifyCores: cores,
		JetStreamEventsPerSecond: jsEv, JetStreamMsgsPerSecond: jsMsg, Batch: cfg.Batch}

	var runID [4]byte
	_, _ = rand.Read(runID[:])
	f := &fleet{cfg: cfg, say: say, runID: hex.EncodeToString(runID[:]), log: cfg.Logger}
	defer f.close()
	if err := f.startHub(ctx); err != nil {
		return nil, err
	}
	if err := f.setup(ctx, &res.Setup); err != nil {
		return nil, err
	}
	if err := f.drive(ctx, res); err != nil {
		return nil, err
	}
	res.Memory = f.memory()
	res.Settlement = f.settle(ctx)
	if v > 0 {
		res.Ratios.PaymentsToVerify = res.Payments.PerSecond / v
	}
	if jsEv > 0 {
		res.Ratios.EventsToJetStream = res.Events.PerSecond / jsEv
	}
	return res, nil
}

// loadAvg returns the three load averages of /proc/loadavg, or "" where
// there is none.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// hubRSS reads a process's resident and peak resident set sizes from
// /proc/<pid>/status, in KiB.
func hubRSS(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatusKiB(string(b), "VmRSS:"), parseStatusKiB(string(b), "VmHWM:"), nil
}
