// Command ocppgw is an OCPP 2.0.1 CSMS gateway: charging stations connect
// to it over OCPP-J (WebSocket, TLS with basic auth per station), and it
// acts as their provider towards the hub: a hold per transaction, the
// meter's OCMF-signed readings as a usage event over NATS, the hold
// released at the end, and RequestStopTransaction when the hub says stop
// service. See docs/ev-charging.md.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
	"github.com/m2mhub/m2mhub/ocpp/gateway/m2mbilling"
)

type options struct {
	listen, certFile, keyFile string
	plain                     bool
	config                    string
	hubAddr, hubKey           string
	providerID, providerKey   string
	natsURL, natsSeed         string
	tariff, rate, timeZone    string
	holdMsat                  uint64
}

// newFlags returns the gateway's flag set, filling o; on says what a
// bad flag does.
func newFlags(o *options, on flag.ErrorHandling) *flag.FlagSet {
	fs := flag.NewFlagSet("ocppgw", on)
	fs.StringVar(&o.listen, "listen", ":8443", "address of the OCPP endpoint (stations connect to wss://host/ocpp/{stationId})")
	fs.StringVar(&o.certFile, "tls-cert", "", "TLS certificate (PEM)")
	fs.StringVar(&o.keyFile, "tls-key", "", "TLS key (PEM)")
	fs.BoolVar(&o.plain, "insecure-plain-ws", false, "serve plain ws without TLS (tests only: security profile 2 needs TLS)")
	fs.StringVar(&o.config, "config", "", "station and idToken file (JSON)")
	fs.StringVar(&o.hubAddr, "hub", "", "hub's device address (host:port)")
	fs.StringVar(&o.hubKey, "hub-key", "", "hub's identity public key (hex)")
	fs.StringVar(&o.providerID, "provider-id", "", "the gateway's provider device id")
	fs.StringVar(&o.providerKey, "provider-key", "", "file holding the provider's identity private key (hex)")
	fs.StringVar(&o.natsURL, "nats", "", "hub's NATS URL")
	fs.StringVar(&o.natsSeed, "nats-seed", "", "file holding the provider's NATS nkey seed")
	fs.StringVar(&o.tariff, "tariff", "", "the OCPI tariff file as published with hubctl contract publish")
	fs.StringVar(&o.rate, "rate-msat-per-unit", "", "msat per unit of the tariff's currency, as published")
	fs.StringVar(&o.timeZone, "time-zone", "", "IANA zone of the charge points, as published")
	fs.Uint64Var(&o.holdMsat, "hold-msat", 0, "hold per session when the tariff has no preauthorize_amount")
	return fs
}

func main() {
	var o options
	fs := newFlags(&o, flag.ExitOnError)
	_ = fs.Parse(os.Args[1:])
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("ocppgw", "err", err)
		os.Exit(1)
	}
}

func readHexFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(strings.TrimSpace(string(b)))
}

// run wires the gateway in dependency order: config, hub connections,
// billing, gateway, the stop-service watcher, then the listener.
func run(ctx context.Context, o options, log *slog.Logger) error {
	if !o.plain && (o.certFile == "" || o.keyFile == "") {
		return errors.New("ocppgw: -tls-cert and -tls-key are required (or -insecure-plain-ws for tests)")
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	file, err := os.ReadFile(o.tariff)
	if err != nil {
		return fmt.Errorf("ocppgw: tariff: %w", err)
	}
	var rate contracts.Dec
	if err := rate.UnmarshalJSON([]byte(`"` + o.rate + `"`)); err != nil {
		return fmt.Errorf("ocppgw: -rate-msat-per-unit: %w", err)
	}
	doc, err := contracts.WrapOCPI(file, contracts.OCPIEnvelope{RateMsatPerUnit: rate, TimeZone: o.timeZone})
	if err != nil {
		return fmt.Errorf("ocppgw: tariff: %w", err)
	}
	contract, err := contracts.Parse(doc)
	if err != nil {
		return fmt.Errorf("ocppgw: tariff: %w", err)
	}
	hk, err := hex.DecodeString(o.hubKey)
	if err != nil {
		return fmt.Errorf("ocppgw: -hub-key: %w", err)
	}
	hubKey, err := btcec.ParsePubKey(hk)
	if err != nil {
		return fmt.Errorf("ocppgw: -hub-key: %w", err)
	}
	pk, err := readHexFile(o.providerKey)
	if err != nil {
		return fmt.Errorf("ocppgw: -provider-key: %w", err)
	}
	key, _ := btcec.PrivKeyFromBytes(pk)
	seed, err := os.ReadFile(o.natsSeed)
	if err != nil {
		return fmt.Errorf("ocppgw: -nats-seed: %w", err)
	}

	sess, err := m2mclient.Dial(ctx, o.hubAddr, hubKey, key, m2mclient.WithLogger(log))
	if err != nil {
		return fmt.Errorf("ocppgw: hub: %w", err)
	}
	defer sess.Close()
	prov, err := m2mclient.NewProvider(sess, m2mclient.ProviderConfig{HubKey: hubKey, Logger: log})
	if err != nil {
		return err
	}
	defer prov.Close()
	nc, err := m2mclient.ConnectNATS(o.natsURL, o.providerID, []byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return fmt.Errorf("ocppgw: nats: %w", err)
	}
	defer nc.Close()
	meter, err := m2mclient.NewMeter(m2mclient.MeterConfig{Conn: nc, ProviderID: o.providerID, Key: key, HubKey: hubKey, Logger: log})
	if err != nil {
		return err
	}
	defer meter.Close()
	billing, err := m2mbilling.New(m2mbilling.Config{Holds: prov, Meter: meter, Contract: contract,
		MeterKeys: cfg.meterKeys, HoldMsat: msat.Amount(o.holdMsat), Logger: log})
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{Stations: cfg.passwords, Tokens: cfg.tokens, Billing: billing, Logger: log})
	if err != nil {
		return err
	}
	defer gw.Close()

	// The hub's enforcement notices: stop service means stop the payer's
	// transactions at the station. The watcher ends when run returns.
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopWatch(); wg.Wait() }()
	notices, err := meter.Receipts(watchCtx)
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := range notices {
			if n.Unpaid == nil || !n.Unpaid.StopService {
				continue
			}
			if k, err := gw.StopPayer(watchCtx, n.Unpaid.Payer); err != nil || k > 0 {
				log.Warn("stop service", "payer", n.Unpaid.Payer, "transactions", k, "err", err)
			}
		}
	}()

	mux := http.NewServeMux()
	mux.Handle("/ocpp/", gw)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	log.Info("ocppgw listening", "addr", ln.Addr().String(), "tls", !o.plain)
	errc := make(chan error, 1)
	go func() {
		if o.plain {
			errc <- srv.Serve(ln)
		} else {
			errc <- srv.ServeTLS(ln, o.certFile, o.keyFile)
		}
	}()
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gw.Close()
		return srv.Shutdown(shut)
	case err := <-errc:
		return err
	}
}
