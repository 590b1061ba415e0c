package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/cosign"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/metrics"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/hub/natsroute"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/hub/webhook"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/natsembed"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// shutdownGrace bounds each step of a clean shutdown.
const shutdownGrace = 20 * time.Second

// stack collects what run started so it can be stopped in reverse order,
// whatever step failed.
type stack struct {
	log   *slog.Logger
	stops []func(ctx context.Context)
}

func (s *stack) push(name string, stop func(ctx context.Context) error) {
	s.stops = append(s.stops, func(ctx context.Context) {
		if err := stop(ctx); err != nil {
			s.log.Warn("stop failed", "part", name, "err", err)
		}
	})
}

func (s *stack) stopAll() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		s.stops[i](ctx)
		cancel()
	}
}

// run starts every part of the hub, serves until ctx ends, then stops them.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	dir := datadir.Dir(cfg.DataDir)
	if err := dir.Ensure(); err != nil {
		return err
	}
	st := &stack{log: log}
	defer st.stopAll()
	// A busy port fails now, before btcd and NATS are started for
	// nothing.
	if err := checkPorts(cfg); err != nil {
		return err
	}

	// Identity, operator key and admin credential: created once, 0600.
	hubKey, err := dir.LoadOrCreateKey(datadir.HubKeyFile)
	if err != nil {
		return fmt.Errorf("hub key: %w", err)
	}
	operatorKey, err := dir.LoadOrCreateKey(datadir.OperatorKeyFile)
	if err != nil {
		return fmt.Errorf("operator key: %w", err)
	}
	adminToken, err := dir.LoadOrCreateToken(datadir.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("admin credential: %w", err)
	}

	// State.
	store, storeName, health, err := openStore(ctx, cfg, dir, log)
	if err != nil {
		return err
	}
	st.push("store", func(context.Context) error { return store.Close() })
	checks := []httpapi.HealthCheck{{Name: "store", Check: health}}
	// Admin credentials, webhook endpoints and outbox: shared on Redis
	// (its own connection, so its own check) or local files.
	shared, err := openAdminState(ctx, cfg, dir, adminToken, log, st)
	if err != nil {
		return err
	}
	if shared.healthy != nil {
		checks = append(checks, httpapi.HealthCheck{Name: "shared", Check: shared.healthy})
	}

	// Event bus.
	events, err := startNATS(ctx, cfg, dir, log, st)
	if err != nil {
		return err
	}
	natsURL := events.url
	if events.authority != nil {
		events.authority.devices = store
	}
	checks = append(checks, httpapi.HealthCheck{Name: "nats", Check: events.Healthy})

	// Base chain and the hub's wallet.
	chain, params, btcdRPC, err := startChain(ctx, cfg, dir, log, st)
	if err != nil {
		return err
	}
	checks = append(checks, httpapi.HealthCheck{Name: "btcd", Check: chain.Healthy})
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: dir.Path(datadir.WalletKeyFile), Chain: chain, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("wallet: %w", err)
	}
	log.Info("hub wallet", "address", wallet.Address().String())

	// Metrics: the counters are fed by the parts below as they work, so
	// they come first; the gauges are read from the parts, so the
	// Metrics that serve both are built after them (below the intake).
	counters := metrics.NewCounters()

	// Webhooks: receipts, enforcement and settlement events are also
	// POSTed to providers' back ends, from a durable outbox.
	hookPolicy := webhook.AddressPolicy{AllowPrivate: cfg.Webhook.AllowPrivate}
	hookEndpoints := webhook.NewEndpoints(shared.endpoints, nil, hookPolicy)
	hooks, err := webhook.New(webhook.Config{
		Outbox: shared.outbox, OutboxPath: dir.Path(datadir.WebhookOutboxFile), Endpoints: hookEndpoints, Policy: hookPolicy, Logger: log,
	})
	if err != nil {
		return err
	}
	hooks.Start()
	st.push("webhooks", func(context.Context) error { return hooks.Close() })

	// Devices, channels and sessions, in dependency order: the directory
	// of live sessions first, which the channel manager and the cosigners
	// reach devices through and the registry drops revoked ones from; the
	// server last, which lists its sessions in it, authenticates through
	// the registry and routes each device message to its subsystem.
	sessions := session.NewDirectory()
	payout, err := txscript.PayToAddrScript(wallet.Address())
	if err != nil {
		return fmt.Errorf("wallet script: %w", err)
	}
	// Work follows the device (hub/natsroute): what the hub asks of or
	// tells a device whose session is on another hubd goes there over
	// NATS. The relay sends; the router, built once the channel manager
	// and the cosigners it serves exist, answers.
	relay, err := natsroute.NewRelay(natsroute.RelayConfig{Conn: events.conn, Logger: log})
	if err != nil {
		return err
	}
	chans, err := channels.New(channels.Config{
		Relay: relay,
		Store: store, Devices: store, Sessions: sessions, Chain: btcdchain.HubChain{Client: chain},
		HubKey: hubKey, PayoutScript: payout, Params: params, Logger: log,
		MinDepth:       cfg.Channels.MinDepth,
		MinExpiryDelta: cfg.Channels.MinExpiryDelta,
		SafetyMargin:   cfg.Channels.SafetyMargin,
		CreditLimit:    msat.Amount(cfg.Channels.CreditLimitMsat),
		PollInterval:   cfg.Channels.PollInterval,
		PayObserver:    counters,
	})
	if err != nil {
		return err
	}
	reg, err := registry.New(registry.Config{
		Store: store, OperatorKey: operatorKey.PubKey(), Logger: log,
		Sessions: revocations{sessions: sessions, relay: relay, nats: events.remover(), log: log},
		Channels: chans,
	})
	if err != nil {
		return err
	}
	cosigners, err := cosign.New(cosign.Config{
		Sessions: sessions, Channels: chans, Runs: store, Logger: log,
	})
	if err != nil {
		return err
	}
	// One id names this process in routing and owns its charge claims.
	instance := instanceID()
	routed, err := natsroute.New(natsroute.Config{
		Relay: relay, Instance: instance, Local: chans, Sessions: sessions, Cosigners: cosigners, Logger: log,
	})
	if err != nil {
		return err
	}
	st.push("routing", func(context.Context) error { return routed.Close() })
	// Settlement answers go to the cosigners, every other channel
	// message to the channel manager.
	router := &session.Router{
		Default:      chans,
		ByType:       map[wire.MessageType]session.Handler{wire.MsgSettleSign: cosigners},
		ErrorsByCode: map[wire.ChanCode]session.Handler{wire.ChanSettleRefused: cosigners},
	}
	// The p2p listener runs the noise handshake (lnd's brontide); the
	// session server, which links no lnd, gets the finished connections.
	ln, err := p2plisten.Listen(p2plisten.Config{
		Addr: cfg.Listen, Key: &keychain.PrivKeyECDH{PrivKey: hubKey}, Logger: log,
		ActTimeout: cfg.Limits.ActTimeout, MaxHandshakes: cfg.Limits.MaxHandshakes, MaxHandshakesPerSource: cfg.Limits.MaxHandshakesPerSource,
	})
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	srv, err := session.New(session.Config{
		Listener: session.NewListener(ln), Auth: reg, Handler: router, Directory: sessions, Logger: log,
		HandshakeTimeout: cfg.Limits.HandshakeTimeout,
		MaxSessions:      cfg.Limits.MaxSessions,
		MaxSessionsPerIP: cfg.Limits.MaxSessionsPerIP,
		MaxMessageSize:   cfg.Limits.MaxMessageSize,
		SendQueue:        cfg.Limits.SendQueue,
		PingInterval:     cfg.Limits.PingInterval,
		PongTimeout:      cfg.Limits.PongTimeout,
	})
	if err != nil {
		return err
	}
	st.push("sessions", func(context.Context) error { return srv.Close() })
	chans.Start()
	st.push("channels", func(context.Context) error { return chans.Close() })
	cosigners.Start()
	st.push("cosigners", func(context.Context) error { return cosigners.Close() })

	// Settlement: once per period (and on demand) every participant's net
	// is settled on chain in one batch.
	settle, err := settler.New(settler.Config{
		Store: store, Channels: chans, Chain: btcdchain.HubChain{Client: chain}, Cosigners: routed,
		Payouts: reg,
		AuditHead: func(ctx context.Context) ([32]byte, error) {
			e, err := store.AuditHead(ctx)
			return e.Hash, err
		},
		RevenueScript: payout, RevenueKey: wallet.PrivKey(),
		CutRule:       settlement.CutRule{Period: cfg.Settle.Period, Blocks: cfg.Settle.Blocks},
		AfterState:    afterSettleState(hooks.SettlementState, log),
		Confirmations: cfg.Settle.Confirmations,
		Logger:        log,
		Lease:         store, Instance: settleInstance(cfg), LeaseTTL: cfg.Settle.LeaseTTL,
	})
	if err != nil {
		return err
	}
	settle.Start()
	st.push("settlement", func(context.Context) error { return settle.Close() })

	// Metering: usage events from NATS are verified, priced, charged
	// exactly once and paid through the payers' channels.
	charging, err := charging.New(charging.Config{
		Contracts: store, Charges: store, Devices: reg, Channels: routed,
		Freezer: reg, Publisher: webhook.NewPublisher(events, hooks), Observer: counters, Logger: log, CDRs: store,
		Instance: instance,
	})
	if err != nil {
		return err
	}
	charging.Start()
	st.push("charging", func(context.Context) error { return charging.Close() })
	intake, err := natsintake.New(natsintake.Config{
		JS: events.js, Providers: reg, Charger: charging, Logger: log,
		Duplicates: cfg.DedupWindow, Replicas: cfg.NATSReplicas,
	})
	if err != nil {
		return err
	}
	if err := intake.Start(ctx); err != nil {
		return fmt.Errorf("metering intake: %w", err)
	}
	st.push("intake", func(context.Context) error { return intake.Close() })
	probes := make([]metrics.HealthCheck, len(checks))
	for i, c := range httpapi.BoundChecks(checks, httpapi.HealthTimeout) {
		probes[i] = metrics.HealthCheck(c)
	}
	meter, err := metrics.New(metrics.Config{
		Counters: counters, Sessions: srv, Exposure: chans, Intake: intake, Channels: store, Chain: chain, Runs: store,
		IntakeLag: metrics.JetStreamLag(events.js, metering.UsageStream, natsintake.DefaultConsumer),
		Health:    probes, Logger: log, Leader: settleLeaderView(settle),
	})
	if err != nil {
		return err
	}
	contractsAPI, err := httpapi.JoinContracts(httpapi.ContractsConfig{Store: store, Auditor: reg, Incomes: charging})
	if err != nil {
		return err
	}

	// History: the dashboard's charts and alerts, sampled from the
	// metrics into a bounded ring in memory.
	hist, err := metrics.NewSampler(metrics.HistoryConfig{
		Metrics: meter, Incomes: charging, Logger: log,
		Devices: reg,
		Wallet: func(ctx context.Context) (btcutil.Amount, error) {
			b, err := wallet.Balance(ctx)
			return b.Total(), err
		},
	})
	if err != nil {
		return err
	}
	hist.Start()
	st.push("history", func(context.Context) error { return hist.Close() })

	// Metrics first, so the admin API's info can name their address.
	metricsAddr, err := serveMetrics(cfg.MetricsListen, cfg.MetricsPprof, cfg.HTTP.limits(true), meter, st)
	if err != nil {
		return err
	}

	// Admin API.
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	pubHex := hex.EncodeToString(hubKey.PubKey().SerializeCompressed())
	info := httpapi.Info{
		PubKey: pubHex, P2PAddr: srv.Addr().String(), AdminAddr: adminLn.Addr().String(),
		MetricsAddr: metricsAddr, NATSURL: natsURL, Network: params.Name, Store: storeName,
		SettlePeriodSeconds: int64(cfg.Settle.Period / time.Second), SettleBlocks: cfg.Settle.Blocks,
	}
	apiCfg := httpapi.Config{
		Registry: reg, Token: adminToken, Logger: log, Health: checks,
		Contracts: contractsAPI, Settlement: settle,
		Creds: shared.creds, Channels: chans, Webhooks: hookEndpoints, Receipts: store, Deliveries: hooks, CDRs: store,
		History: hist,
		Info: func() httpapi.Info {
			i := info
			i.Sessions = srv.Sessions()
			withLeader(&i, settle)
			return i
		},
	}
	if events.issuer != nil { // an external NATS has its own users
		apiCfg.Providers = events.issuer
	} else if events.authority != nil { // unless the hub signs them
		apiCfg.Providers = events.authority
	}
	api, err := httpapi.New(apiCfg)
	if err != nil {
		return err
	}
	httpSrv, adminLimited, err := httpapi.NewServer(api, adminLn, cfg.HTTP.limits(false))
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(adminLimited) }()
	st.push("admin api", func(ctx context.Context) error {
		err := httpSrv.Shutdown(ctx)
		<-serveErr // Serve has returned once Shutdown has
		return err
	})

	// Tell hubctl where we are, last, so it never finds a half-started hub.
	if err := dir.WriteRuntime(datadir.Runtime{
		PID: os.Getpid(), PubKey: pubHex, P2PAddr: info.P2PAddr, AdminAddr: info.AdminAddr,
		NATSURL: natsURL, Network: params.Name, Btcd: btcdRPC, MetricsAddr: metricsAddr,
	}); err != nil {
		return err
	}
	st.push("runtime file", func(context.Context) error { return dir.RemoveRuntime() })
	log.Info("hubd ready", "pubkey", pubHex, "p2p", info.P2PAddr, "admin", info.AdminAddr,
		"nats", natsURL, "store", storeName, "network", params.Name, "datadir", cfg.DataDir)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-serveErr:
		serveErr <- err // let the stop step see it
		return fmt.Errorf("admin api: %w", err)
	}
}

// revocations closes a revoked or rotated device's session, here and on
// every other instance, and, for a revoked provider on the embedded bus,
// removes its NATS user so it can no longer publish at all (its events
// would be dead-lettered anyway).
type revocations struct {
	sessions *session.Directory
	relay    *natsroute.Relay
	nats     interface { // nil with an external NATS the hub does not sign for
		RemoveNATS(ctx context.Context, id string) error
	}
	log *slog.Logger
}

func (r revocations) Drop(deviceID, code, reason string) {
	r.sessions.Drop(deviceID, code, reason)
	r.relay.Drop(deviceID, code, reason)
	if r.nats == nil || code != "revoked" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.nats.RemoveNATS(ctx, deviceID); err != nil {
		r.log.Error("remove NATS user of revoked device", "id", deviceID, "err", err)
	}
}

// crashAfterEnv names a settlement state after which hubd kills itself with
// SIGKILL, once that state is durable. It exists for the kill -9 tests of
// the settlement state machine, which must crash the real process at each
// step; operators never set it.
const crashAfterEnv = "M2MHUB_TEST_CRASH_AFTER_SETTLE_STATE"

// afterSettleState chains the crash point (when set) after next.
func afterSettleState(next func(settlement.Run) error, log *slog.Logger) func(settlement.Run) error {
	crashAt := os.Getenv(crashAfterEnv)
	if crashAt == "" {
		return next
	}
	log.Warn("test crash point armed", "env", crashAfterEnv, "state", crashAt)
	return func(r settlement.Run) error {
		err := next(r)
		if string(r.State) == crashAt {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught; wait for it
		}
		return err
	}
}

// checkPorts binds and releases every address hubd listens on, so a port
// already in use (another hubd on the same defaults) is named at once.
// The real listeners are opened later; this is a check, not a
// reservation.
func checkPorts(cfg config) error {
	addrs := [][2]string{{"--listen", cfg.Listen}, {"--admin", cfg.AdminAddr}, {"--metrics-listen", cfg.MetricsListen}}
	if cfg.NATSURL == "" {
		addrs = append(addrs, [2]string{"--nats-listen", cfg.NATSListen})
	}
	for _, a := range addrs {
		if a[1] == "" {
			continue
		}
		ln, err := net.Listen("tcp", a[1])
		if err != nil {
			return fmt.Errorf("%s %s is not free (is another hubd running?): %w", a[0], a[1], err)
		}
		if err := ln.Close(); err != nil {
			return fmt.Errorf("%s %s: %w", a[0], a[1], err)
		}
	}
	return nil
}

// Sampling of the mutex and block profiles with --metrics-pprof.
const (
	pprofMutexFraction = 10
	pprofBlockRate     = 100_000 // ns
)

// serveMetrics serves Prometheus metrics on addr (nothing when empty) and
// returns the address it listens on.
func serveMetrics(addr string, withPprof bool, lim httpapi.Limits, m *metrics.Metrics, st *stack) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if withPprof {
		// The mutex and block profiles stay empty unless sampled: one
		// contention event in pprofMutexFraction, and blocking events
		// in proportion to their length (every one of pprofBlockRate ns
		// or longer), so a hub under load shows where it waits.
		runtime.SetMutexProfileFraction(pprofMutexFraction)
		runtime.SetBlockProfileRate(pprofBlockRate)
		// pprof.Index serves the named profiles (heap, goroutine, block,
		// ...) under the same prefix.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv, limited, err := httpapi.NewServer(mux, ln, lim)
	if err != nil {
		_ = ln.Close()
		return "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(limited) // returns ErrServerClosed after Shutdown
	}()
	st.push("metrics", func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		<-done
		return err
	})
	return ln.Addr().String(), nil
}

// channelStore is what hubd needs of a store: the registry and the channels.
type channelStore interface {
	hub.Store
	hub.ChannelStore
	hub.ContractStore
	hub.ChargeStore
	hub.SettlementStore
	hub.CDRStore
	hub.LeaderLease
}

// openStore opens the embedded store, or Redis when --redis-url is set.
func openStore(ctx context.Context, cfg config, dir datadir.Dir, log *slog.Logger) (channelStore, string, func(context.Context) error, error) {
	if cfg.RedisURL != "" {
		s, err := redisstore.New(redisstore.Config{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Logger: log})
		if err != nil {
			return nil, "", nil, fmt.Errorf("redis store: %w", err)
		}
		return s, "redis", s.Healthy, nil
	}
	s, err := boltstore.New(boltstore.Config{Path: cfg.DataDir, Logger: log})
	if err != nil {
		return nil, "", nil, fmt.Errorf("embedded store: %w", err)
	}
	return s, "embedded", s.Healthy, nil
}

// bus is the hub's event bus: its own NATS connection with JetStream, and,
// when NATS runs in-process, the issuer of per-provider NATS users.
type bus struct {
	url    string
	conn   *nats.Conn
	js     jetstream.JetStream
	issuer *natsembed.Issuer // nil with an external NATS
	// authority signs NATS users on an external NATS in operator mode
	// (--nats-authority); nil otherwise.
	authority *natsAuthority
}

// remover is what revokes a provider's NATS user, or nil.
func (b *bus) remover() interface {
	RemoveNATS(ctx context.Context, id string) error
} {
	if b.issuer != nil {
		return b.issuer
	}
	if b.authority != nil {
		return b.authority
	}
	return nil
}

// startNATS runs nats-server in-process (with nkey users: the hub's own and
// one per provider) unless --nats-url names a server, connects the hub, and
// makes sure the metering streams exist.
func startNATS(ctx context.Context, cfg config, dir datadir.Dir, log *slog.Logger, st *stack) (*bus, error) {
	b := &bus{url: cfg.NATSURL}
	var ns *natsembed.Server
	opts := []nats.Option{nats.Name("hubd"), nats.MaxReconnects(-1)}
	if cfg.NATSURL == "" {
		hubNkey, err := natsembed.LoadOrCreateSeed(dir.Path(datadir.NATSKeyFile))
		if err != nil {
			return nil, fmt.Errorf("nats key: %w", err)
		}
		providers, err := natsembed.LoadProviders(dir.Path(datadir.NATSProvidersFile))
		if err != nil {
			return nil, fmt.Errorf("nats providers: %w", err)
		}
		ns, err = natsembed.Start(natsembed.Config{
			Listen: cfg.NATSListen, StoreDir: dir.Path(datadir.NATSDir), SyncAlways: true,
			HubNkey: hubNkey, Providers: providers, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		st.push("nats", func(context.Context) error { ns.Close(); return nil })
		b.url = ns.ClientURL()
		seed, err := nats.NkeyOptionFromSeed(dir.Path(datadir.NATSKeyFile))
		if err != nil {
			return nil, fmt.Errorf("nats key: %w", err)
		}
		opts = append(opts, seed)
	} else if cfg.NATSAuthority != "" {
		if err := b.signUsers(cfg, log, st, &opts); err != nil {
			return nil, err
		}
	} else if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	nc, err := nats.Connect(b.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", b.url, err)
	}
	st.push("nats client", func(context.Context) error { return nc.Drain() })
	b.conn = nc
	if b.js, err = jetstream.New(nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := natsintake.EnsureStreamsReplicated(ctx, b.js, 0, cfg.NATSReplicas); err != nil {
		return nil, fmt.Errorf("metering streams: %w", err)
	}
	if b.authority != nil {
		b.authority.prepare = func(ctx context.Context, id string) error {
			return natsintake.EnsureReceiptsConsumer(ctx, b.js, id)
		}
	}
	if ns != nil {
		b.issuer, err = natsembed.NewIssuer(natsembed.IssuerConfig{
			Server: ns, Path: dir.Path(datadir.NATSProvidersFile),
			// Providers may not create consumers (one could deliver onto
			// another provider's subject), so the hub makes each one's.
			Prepare: func(ctx context.Context, id string) error {
				return natsintake.EnsureReceiptsConsumer(ctx, b.js, id)
			},
		})
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Healthy reports whether the hub's NATS connection is up and the server
// answers a PING within ctx: a stopped server keeps the connection open,
// and the client notices only after minutes of missed pings.
func (b *bus) Healthy(ctx context.Context) error {
	if !b.conn.IsConnected() {
		return errors.New("nats: not connected")
	}
	if err := b.conn.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: ping: %w", err)
	}
	return nil
}

// Publish sends receipts and enforcement messages to providers through
// JetStream, so a provider that was offline reads them later. Each message
// is named by its subject and content (Nats-Msg-Id): one published again
// within the stream's duplicate window (a hubd settling a payment whose
// first settler died after publishing, charging's settleProvider) is
// stored once.
func (b *bus) Publish(ctx context.Context, subject string, data []byte) error {
	_, err := b.js.Publish(ctx, subject, data, jetstream.WithMsgID(contentMsgID(subject, data)))
	return err
}

// contentMsgID names a message by its subject and data.
func contentMsgID(subject string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(subject))
	h.Write([]byte{0})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// startChain starts btcd in regtest as a child process unless
// --btcd.rpchost names a node, and connects the chain client.
func startChain(ctx context.Context, cfg config, dir datadir.Dir, log *slog.Logger, st *stack) (*btcdchain.Client, *chaincfg.Params, *datadir.BtcdRPC, error) {
	params, err := networkParams(cfg.Btcd.Network)
	if err != nil {
		return nil, nil, nil, err
	}
	ccfg := btcdchain.Config{
		Host: cfg.Btcd.RPCHost, User: cfg.Btcd.RPCUser, Pass: cfg.Btcd.RPCPass,
		CertPath: cfg.Btcd.RPCCert, Params: params, Logger: log,
	}
	var (
		node *regtest.Supervisor
		info *datadir.BtcdRPC
	)
	if cfg.Btcd.RPCHost == "" {
		addr, err := btcdchain.KeyAddress(dir.Path(datadir.WalletKeyFile), params)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("wallet key: %w", err)
		}
		// Supervised: a btcd that dies is started again, on the same
		// chain and behind the same RPC address.
		node, err = regtest.Supervise(ctx, regtest.Config{
			Dir: dir.Path(datadir.BtcdDir), Binary: cfg.Btcd.Binary, MiningAddr: addr.String(), Logger: log,
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("btcd: %w", err)
		}
		st.push("btcd", node.Stop)
		rpc := node.RPC()
		ccfg.Host, ccfg.User, ccfg.Pass, ccfg.Cert, ccfg.CertPath = rpc.Host, rpc.User, rpc.Pass, rpc.Cert, ""
		info = &datadir.BtcdRPC{Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, CertPath: rpc.CertPath}
	}
	chain, err := btcdchain.New(ccfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("btcd rpc: %w", err)
	}
	st.push("btcd rpc", func(context.Context) error { chain.Close(); return nil })
	if err := chain.Healthy(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("btcd rpc: %w", err)
	}
	// Channels are taproot outputs: on a fresh regtest chain, mine past the
	// segwit/taproot activation height once, to the hub's wallet.
	if node != nil {
		if err := node.MineToActivation(ctx); err != nil {
			return nil, nil, nil, fmt.Errorf("btcd: activate taproot: %w", err)
		}
	}
	return chain, params, info, nil
}

func networkParams(name string) (*chaincfg.Params, error) {
	switch name {
	case "regtest":
		return &chaincfg.RegressionNetParams, nil
	case "testnet3":
		return &chaincfg.TestNet3Params, nil
	case "signet":
		return &chaincfg.SigNetParams, nil
	case "mainnet":
		return &chaincfg.MainNetParams, nil
	}
	return nil, fmt.Errorf("unknown network %q", name)
}

// instanceID names this hubd process in the cluster's routing subjects
// and owns its charge claims: a fresh random id each start, since nothing
// routed to a former process survives it, and its claims are left to
// expire.
func instanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
