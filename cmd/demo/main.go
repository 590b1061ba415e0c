// Command demo is what `make demo` runs: it starts hubd on the embedded
// defaults (in-process NATS, embedded store, btcd regtest child) in a
// throw-away data dir, enrols a car through the admin API the way hubctl
// does, authenticates it over BOLT 8 with the Go client library, shows an
// unregistered key being refused, then runs the use cases through the
// client libraries over BOLT 8 and NATS (scenarios.go): an EV charging
// session under a hold, from a charging station written in Go through the
// OCPP 2.0.1 gateway (ev.go), ending in the hub's CDR, a vehicle past
// three toll gantries, a router
// selling bandwidth across a tier boundary, two households trading energy,
// and two cold-chain shipments (one released, one refunded). It then
// settles one epoch on regtest, reads the batch back from the chain,
// verifies a receipt against it (settle.go) and prints a summary. It exits
// 0 only if every step behaved as expected, and stops everything it
// started.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubproc"
)

// newFlagSet returns the demo's own flag set. Not flag.CommandLine: lnd's
// lnwire links pgregory.net/rapid, which registers its -rapid.* test flags
// there, and --help would list them.
func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("demo", flag.ExitOnError) }

func main() {
	fs := newFlagSet()
	var (
		dataDir = fs.String("datadir", "", "data dir for hubd (default: a fresh temporary dir, removed afterwards)")
		keep    = fs.Bool("keep", false, "leave hubd running afterwards for exploring with hubctl")
		asJSON  = fs.Bool("json", false, "print the summary as one JSON object")
		verbose = fs.Bool("v", false, "show hubd's log")
		hubdBin = fs.String("hubd", "", "hubd binary (default: the one next to this program)")
	)
	_ = fs.Parse(os.Args[1:]) // ExitOnError

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := io.Writer(os.Stdout)
	if *asJSON {
		out = io.Discard
	}
	if *hubdBin == "" {
		b, err := hubproc.Binary("hubd")
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
		*hubdBin = b
	}
	sum, err := run(ctx, out, *hubdBin, *dataDir, *keep, *verbose)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sum)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

// summary is what the demo found, for people and (with --json) scripts.
type summary struct {
	HubPubKey       string `json:"hub_pubkey"`
	P2PAddr         string `json:"p2p_addr"`
	AdminAddr       string `json:"admin_addr"`
	DeviceID        string `json:"device_id"`
	Authenticated   bool   `json:"authenticated"`
	HandshakeMillis int64  `json:"handshake_ms"`
	StrangerRefusal string `json:"stranger_refusal"`
	AuditEntries    uint64 `json:"audit_entries"`
	DataDir         string `json:"datadir,omitempty"`

	// Participants is each device's paid, earned and net (msat) and its
	// part of the settlement.
	Participants []*participant    `json:"participants"`
	Scenarios    scenarioSummary   `json:"scenarios"`
	Settlement   settlementSummary `json:"settlement"`
	// ReceiptVerified is true once the EV capture's receipt was proven
	// against the settlement's on-chain anchor.
	ReceiptVerified bool         `json:"receipt_verified"`
	Receipt         receiptCheck `json:"receipt"`
	// CDR is the OCPI CDR the hub issued for the EV session, as stored.
	CDR     json.RawMessage `json:"cdr"`
	Seconds float64         `json:"seconds"`
}

func run(ctx context.Context, out io.Writer, bin, dir string, keep, verbose bool) (summary, error) {
	var sum summary
	began := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	if dir == "" {
		tmp, err := os.MkdirTemp("", "m2mhub-demo-")
		if err != nil {
			return sum, err
		}
		dir = tmp
		if !keep {
			defer os.RemoveAll(tmp)
		}
	}
	var hubLog io.Writer
	if verbose {
		hubLog = os.Stderr
	}

	say("1. starting hubd (embedded NATS, embedded store, btcd regtest child) in %s", dir)
	p, err := hubproc.Start(ctx, hubproc.Config{Binary: bin, DataDir: dir, Output: hubLog,
		Args: []string{"--channels.credit-limit-msat", demoCreditLimit}})
	if err != nil {
		return sum, err
	}
	if keep {
		sum.DataDir = dir
		defer say("\nhubd keeps running (pid %d). Explore with:\n"+
			"  ./bin/hubctl --datadir %s info\n  ./bin/hubctl --datadir %s device list\n"+
			"  ./bin/hubctl --datadir %s epochs\n  ./bin/hubctl --datadir %s settle status\n"+
			"Dashboard: ./bin/hubctl --datadir %s creds create --scope read-only, then open\n"+
			"  http://%s/dashboard#token=<the token it prints>\nStop it with: kill %d",
			p.Pid(), dir, dir, dir, dir, dir, p.Runtime().AdminAddr, p.Pid())
	} else {
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.Stop(sctx); err != nil {
				fmt.Fprintln(os.Stderr, "stopping hubd:", err)
			}
		}()
	}
	rt := p.Runtime()
	sum.HubPubKey, sum.P2PAddr, sum.AdminAddr = rt.PubKey, rt.P2PAddr, rt.AdminAddr
	say("   hub %s, devices on %s, admin API on %s", rt.PubKey, rt.P2PAddr, rt.AdminAddr)
	hubKey, err := p.HubKey()
	if err != nil {
		return sum, err
	}
	token, err := datadir.Dir(dir).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		return sum, err
	}
	admin := httpapi.NewClient(rt.AdminAddr, token)

	say("2. a car makes its key and the operator enrols it (hubctl device add --pubkey … --role payer --kind car)")
	carKey, err := btcec.NewPrivateKey()
	if err != nil {
		return sum, err
	}
	dev, err := admin.AddDevice(ctx, httpapi.AddDeviceRequest{
		PubKey: hub.PubKeyOf(carKey.PubKey()), Roles: []hub.Role{hub.RolePayer}, Owner: "demo fleet", Kind: "car",
	})
	if err != nil {
		return sum, fmt.Errorf("enrol: %w", err)
	}
	sum.DeviceID = dev.ID
	say("   enrolled %s (%s)", dev.ID, dev.Key)

	say("3. the car connects over BOLT 8 with the Go client, pinning the hub's key")
	quiet := slog.New(slog.DiscardHandler)
	start := time.Now()
	s, err := m2mclient.Dial(ctx, rt.P2PAddr, hubKey, carKey, m2mclient.WithLogger(quiet))
	if err != nil {
		return sum, fmt.Errorf("enrolled device refused: %w", err)
	}
	sum.HandshakeMillis = time.Since(start).Milliseconds()
	sum.Authenticated = s.Connected()
	say("   authenticated in %d ms (noise handshake, Init exchange, registry check)", sum.HandshakeMillis)
	s.Close()

	say("4. a key the hub has never seen tries to connect")
	stranger, err := btcec.NewPrivateKey()
	if err != nil {
		return sum, err
	}
	_, err = m2mclient.Dial(ctx, rt.P2PAddr, hubKey, stranger, m2mclient.WithLogger(quiet))
	var refused *m2mclient.RefusedError
	if !errors.As(err, &refused) {
		return sum, fmt.Errorf("unregistered key was not refused: %v", err)
	}
	sum.StrangerRefusal = string(refused.Code)
	say("   refused: %s", refused)

	clientDir, err := tempDir()
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(clientDir)
	chain, err := dialChain(dir, rt)
	if err != nil {
		return sum, err
	}
	defer chain.Close()
	w := &world{ctx: ctx, say: say, rt: rt, hubKey: hubKey, admin: admin, quiet: quiet, dir: clientDir, sum: &sum.Scenarios}
	// The clients stay connected until the epoch is settled: the payers
	// co-sign their part of the batch.
	defer w.close()
	if err := runScenarios(w, chain, dev.ID, carKey); err != nil {
		return sum, err
	}
	sum.Participants = w.parts
	sum.CDR = w.cdr
	if err := settleEpoch(w, chain, &sum); err != nil {
		return sum, fmt.Errorf("settlement: %w", err)
	}
	rc, err := verifyReceipt(ctx, admin, chain, hubKey, w.evReceipt)
	if err != nil {
		return sum, fmt.Errorf("receipt against the chain: %w", err)
	}
	sum.Receipt, sum.ReceiptVerified = rc, true

	say("10. the audit log records every change and verifies (hubctl audit verify)")
	head, err := admin.VerifyAudit(ctx)
	if err != nil {
		return sum, err
	}
	sum.AuditEntries = head.Seq
	say("   %d entries, head %s", head.Seq, head.Hash)
	sum.Seconds = time.Since(began).Seconds()
	printSummary(say, &sum)

	// At least the enrolment of step 2 and the scenarios' operator
	// actions.
	if !sum.Authenticated || sum.StrangerRefusal != "unknown-key" || sum.AuditEntries < 1+sum.Scenarios.Audited {
		return sum, fmt.Errorf("unexpected outcome: authenticated %v, refusal %q, %d audit entries for %d actions",
			sum.Authenticated, sum.StrangerRefusal, sum.AuditEntries, 1+sum.Scenarios.Audited)
	}
	say("\ndemo OK")
	return sum, nil
}

// printSummary prints the participants' figures, the settlement and the
// receipt check.
func printSummary(say func(string, ...any), sum *summary) {
	say("\nSummary")
	say("  %-14s %-15s %13s %13s %13s  %s", "participant", "role", "paid msat", "earned msat", "net msat", "settled on chain")
	for _, p := range sum.Participants {
		how := fmt.Sprintf("%+d sat (%s)", p.OnChainSat, p.Mode)
		if p.Mode == "" {
			how = "carried to the next epoch: " + p.CarryReason
		}
		say("  %-14s %-15s %13d %13d %+13d  %s", p.Name, p.Role, p.PaidMsat, p.EarnedMsat, p.NetMsat, how)
	}
	sc := sum.Scenarios
	say("  paid %d msat = earned %d + hub fees %d", sc.PaidMsat, sc.EarnedMsat, sc.FeesMsat)
	ss := sum.Settlement
	for _, id := range ss.Txids {
		say("  settlement txid %s (epoch %d, height %d)", id, ss.Epoch, ss.ConfirmHeight)
	}
	say("  %d channels and %d payouts in %d vB: %.2f vB per cooperative channel (%.1f on average with payouts, revenue and anchor)",
		ss.Channels, ss.Payouts, ss.VBytes, ss.VBytesPerChannel, ss.VBytesAvgPerChannel)
	say("  fee %d sat, hub revenue %d sat", ss.FeeSat, ss.RevenueSat)
	if ev := sum.Scenarios.EV; ev.CDRID != "" {
		say("  EV session CDR %s: %s kWh, %d msat captured from a %d msat hold (cdr in --json)",
			ev.CDRID, ev.EnergyKWh, ev.CapturedMsat, ev.HoldMaxMsat)
	}
	if sum.ReceiptVerified {
		say("  receipt %s…: leaf %d of %d, anchored by %s with %d confirmation(s): verified against the chain",
			sum.Receipt.ID[:16], sum.Receipt.Leaf, sum.Receipt.Leaves, sum.Receipt.Txid, sum.Receipt.Confirmations)
	}
}
