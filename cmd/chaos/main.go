// Command chaos runs devices with durable client stores and providers under
// load against a real hubd (external Redis with appendfsync always, an
// external nats-server, hubd's btcd regtest child) while hubd, btcd, Redis
// and NATS are killed with SIGKILL at random and started again, then
// compares the devices' stores, the hub's ledger and the chain, and prints
//
//	faults N, acknowledged payments lost L, doubled D, events lost E
//
// A payment is acknowledged when Pay returned its receipt (its state is
// then in the device's store); it is lost when the hub's channel state
// after recovery is below it, and doubled when the hub holds more paid
// than the device signed. An event is lost when Meter reported it sent and
// the hub holds neither a charge nor a dead letter for it after the drain.
// The exit status is non-zero when any count is, or when the chain or the
// recovery was inconsistent. make chaos builds what it needs and runs it.
//
// With -outages D it takes NATS, Redis and btcd down in turn instead, each
// paused (SIGSTOP) and then killed -9 for D, under the same load, and also
// fails when /healthz is slow, does not name what is down, or does not
// recover without a hubd restart (make chaos-deps: D = 30 s).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/m2mhub/m2mhub/internal/chaos"
	"github.com/m2mhub/m2mhub/internal/hubproc"
)

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long faults are injected under load")
	devices := flag.Int("devices", 4, "payer devices, each with a durable file store and one channel")
	providers := flag.Int("providers", 2, "providers metering toll passages of the devices")
	uniqueIDs := flag.Bool("unique-ids", false, "give every provider's events ids no other provider uses (by default they share one sequence, as ids need only be unique per provider)")
	outages := flag.Duration("outages", 0, "instead of random kills, take NATS, Redis and btcd down in turn, each paused (SIGSTOP) and then killed -9 for this long, checking /healthz throughout (0: random kills)")
	seed := flag.Uint64("seed", 0, "seed of the faults and amounts (0: from the clock)")
	dir := flag.String("dir", "", "work directory, kept for inspection (default: a new one under $TMPDIR)")
	flag.Parse()

	hubd, err := hubproc.Binary("hubd")
	if err != nil {
		fatal(err)
	}
	natsBin, err := hubproc.Binary("nats-server")
	if err != nil {
		fatal(err)
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "m2mhub-chaos-"); err != nil {
			fatal(err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := chaos.Run(ctx, chaos.Config{
		HubdBinary: hubd, NATSBinary: natsBin, Dir: *dir, Duration: *duration,
		Devices: *devices, Providers: *providers, Seed: *seed, UniqueIDs: *uniqueIDs,
		Outages: outagesOf(*outages),
		Say: func(format string, args ...any) {
			fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		fatal(err)
	}
	fmt.Printf("faults by target %v; payments acknowledged %d; events accepted %d (charged %d, dead-lettered %d, lost %d of which %d share their id with another provider's event); failed pays during faults %v\n",
		res.FaultsByTarget, res.Acked, res.Accepted, res.Charged, res.DeadLettered, res.EventsLost, res.LostSharedID, res.PayErrors)
	for _, p := range res.Problems {
		fmt.Println("problem:", p)
	}
	fmt.Println(res.Line())
	if !res.OK() {
		os.Exit(1)
	}
}

// outagesOf is the scripted schedule for -outages d, none for 0.
func outagesOf(d time.Duration) []chaos.Outage {
	if d <= 0 {
		return nil
	}
	return chaos.Outages(d)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "chaos:", err)
	os.Exit(2)
}
