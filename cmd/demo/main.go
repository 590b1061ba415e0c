// Command demo is what `make demo` runs: it starts hubd on the embedded
// defaults (in-process NATS, embedded store, btcd regtest child) in a
// throw-away data dir, enrols a device through the admin API the way hubctl
// does, authenticates the device over BOLT 8 with the Go client library,
// shows an unregistered key being refused, pays over a regtest channel, and
// meters one event of each use case through NATS (metering.go). It exits 0 only if every step
// behaved as expected, and stops everything it started.
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

func main() {
	var (
		dataDir = flag.String("datadir", "", "data dir for hubd (default: a fresh temporary dir, removed afterwards)")
		keep    = flag.Bool("keep", false, "leave hubd running afterwards for exploring with hubctl")
		asJSON  = flag.Bool("json", false, "print the summary as one JSON object")
		verbose = flag.Bool("v", false, "show hubd's log")
		hubdBin = flag.String("hubd", "", "hubd binary (default: the one next to this program)")
	)
	flag.Parse()

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

	Channel  channelSummary  `json:"channel"`
	Metering meteringSummary `json:"metering"`
}

// channelSummary is what the channel part of the demo measured.
type channelSummary struct {
	Outpoint        string `json:"outpoint"`
	CapacitySat     int64  `json:"capacity_sat"`
	Payments        int    `json:"payments"`
	PaidMsat        uint64 `json:"paid_msat"`
	ProviderReceipt int    `json:"provider_receipts"`
	// ClaimableSat is what the hub's stored device signature moves to the
	// hub on chain: the paid amount rounded down to whole satoshis.
	ClaimableSat int64  `json:"claimable_sat"`
	CloseTxID    string `json:"close_txid"`
	DeviceGotSat int64  `json:"device_got_sat"`
}

func run(ctx context.Context, out io.Writer, bin, dir string, keep, verbose bool) (summary, error) {
	var sum summary
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
		defer say("\nhubd keeps running (pid %d). Explore with:\n  ./bin/hubctl --datadir %s info\n  ./bin/hubctl --datadir %s device list\nStop it with: kill %d", p.Pid(), dir, dir, p.Pid())
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

	if err := channelDemo(ctx, say, dir, rt, hubKey, admin, carKey, &sum); err != nil {
		return sum, err
	}

	if err := meteringDemo(ctx, say, dir, rt, hubKey, admin, &sum); err != nil {
		return sum, fmt.Errorf("metering: %w", err)
	}

	say("9. the audit log records every change and verifies (hubctl audit verify)")
	head, err := admin.VerifyAudit(ctx)
	if err != nil {
		return sum, err
	}
	sum.AuditEntries = head.Seq
	say("   %d entries, head %s", head.Seq, head.Hash)

	if !sum.Authenticated || sum.StrangerRefusal != "unknown-key" || sum.AuditEntries != 2+sum.Metering.Audited {
		return sum, fmt.Errorf("unexpected outcome: %+v", sum)
	}
	say("\ndemo OK")
	return sum, nil
}
