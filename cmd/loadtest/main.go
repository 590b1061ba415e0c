// Command loadtest drives a real hubd with a simulated fleet of devices and
// providers and writes a report: report.md, results.json, throughput.png
// and latency.png in -out. By default it starts hubd (next to this
// program, as `make build` lays out ./bin) in a temporary data dir; -hub
// drives a running hubd through its data dir instead.
//
//	loadtest -devices 1000 -providers 20 -duration 60s
//	loadtest -report out/results.json   # redraw a report from its results
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcutil"

	"github.com/m2mhub/m2mhub/internal/hubproc"
	"github.com/m2mhub/m2mhub/loadtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// newFlagSet returns loadtest's own flag set. Not flag.CommandLine: lnd's
// lnwire links pgregory.net/rapid, which registers its -rapid.* test flags
// there, and --help would list them.
func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("loadtest", flag.ExitOnError) }

func run() error {
	fs := newFlagSet()
	var (
		devices   = fs.Int("devices", 100, "payer devices, each with its own BOLT 8 session and channel")
		providers = fs.Int("providers", 10, "providers, each paid over channels and metering over NATS")
		duration  = fs.Duration("duration", 30*time.Second, "how long the load runs, after setup")
		rate      = fs.Float64("rate", 0, "channel payments per second over the fleet (0 = as fast as each device can, up to 150/s each)")
		eventRate = fs.Float64("event-rate", 0, "usage events per second over all providers (0 = as fast as JetStream acknowledges)")
		batch     = fs.Int("batch", loadtest.DefaultBatch, "usage events per NATS message (batch-signed)")
		window    = fs.Int("window", 0, "events each provider may have unanswered (its Meter window; 0 = none): publishing waits for receipts")
		mix       = fs.String("mix", "ev=1,toll=1,bw=1,energy=1", "use-case weights of the providers")
		seed      = fs.Int64("seed", 1, "seed of the schedule (payees, amounts, event contents)")
		hubDir    = fs.String("hub", "", "data dir of a running hubd to drive (default: start a hubd child in a temporary dir)")
		hubdBin   = fs.String("hubd", "", "hubd binary for the child (default: the one next to this program)")
		capacity  = fs.Int64("capacity", int64(loadtest.DefaultCapacity), "channel capacity per device, sat")
		baseline  = fs.Duration("baseline", loadtest.DefaultBaselineDuration, "how long each ceiling is measured")
		out       = fs.String("out", "loadtest-out", "directory for report.md, results.json and the charts")
		verbose   = fs.Bool("v", false, "show hubd's log")
		report    = fs.String("report", "", "redraw report.md and the charts from this results.json and exit")
	)
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *report != "" {
		res, err := loadtest.ReadResultsFile(*report)
		if err != nil {
			return err
		}
		return res.WriteAll(*out)
	}
	weights, err := loadtest.ParseMix(*mix)
	if err != nil {
		return err
	}
	cfg := loadtest.Config{
		Devices: *devices, Providers: *providers, Duration: *duration, Rate: *rate, EventRate: *eventRate,
		Batch: *batch, Window: *window, Mix: weights, Seed: *seed, HubDir: *hubDir, HubdBinary: *hubdBin,
		Capacity: btcutil.Amount(*capacity), BaselineDuration: *baseline,
		Command: commandLine(os.Args), Progress: os.Stderr, ProgressTTY: isTerminal(os.Stderr),
		Logger: slog.New(slog.DiscardHandler),
	}
	if cfg.HubDir == "" && cfg.HubdBinary == "" {
		if cfg.HubdBinary, err = hubproc.Binary("hubd"); err != nil {
			return err
		}
	}
	if *verbose {
		cfg.HubLog = os.Stderr
	} else if err := os.MkdirAll(*out, 0o755); err == nil {
		// hubd's log goes beside the report, for a look after a bad run.
		if f, err := os.Create(filepath.Join(*out, "hubd.log")); err == nil {
			defer f.Close()
			cfg.HubLog = f
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := res.WriteAll(*out); err != nil {
		return err
	}
	summary(os.Stdout, res, *out)
	return nil
}

func summary(w io.Writer, r *loadtest.Results, out string) {
	fmt.Fprintf(w, "payments: %.0f/s (p50 %.2f ms, p99 %.2f ms), %.1f%% of %.0f verifies/s\n",
		r.Payments.PerSecond, float64(r.Payments.Latency.P50)/1000, float64(r.Payments.Latency.P99)/1000,
		100*r.Ratios.PaymentsToVerify, r.Baselines.VerifyPerSecond)
	fmt.Fprintf(w, "events:   %.0f/s published, %.0f/s receipted, %.1f%% of JetStream's %.0f/s\n",
		r.Events.PerSecond, r.Events.ReceiptedPerSecond, 100*r.Ratios.EventsToJetStream, r.Baselines.JetStreamEventsPerSecond)
	fmt.Fprintf(w, "receipts: p50 %.2f ms, p99 %.2f ms from the batch's making; p50 %.2f ms, p99 %.2f ms from its ack (payments p99 %.2f ms)\n",
		float64(r.Events.Receipt.P50)/1000, float64(r.Events.Receipt.P99)/1000,
		float64(r.Events.ReceiptAcked.P50)/1000, float64(r.Events.ReceiptAcked.P99)/1000, float64(r.Payments.Latency.P99)/1000)
	if lag := r.ReceiptLag(); lag != "" {
		fmt.Fprintf(w, "flag:     %s\n", lag)
	}
	errs := 0
	for _, n := range r.Errors {
		errs += n
	}
	fmt.Fprintf(w, "errors:   %d\nreport:   %s\n", errs, filepath.Join(out, loadtest.ReportFile))
}

// commandLine quotes the arguments that need it, so the report's command
// can be pasted back into a shell.
func commandLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// isTerminal reports whether f is a character device, where the progress
// line can be redrawn in place.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
