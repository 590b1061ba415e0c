package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// config is hubd's configuration. Every option can come from a flag, from an
// M2MHUB_* environment variable, or from an ini config file (--config). The
// precedence is go-flags': a flag beats the file, the file beats the
// environment (which go-flags treats as a default), and that beats the
// built-in default.
type config struct {
	ConfigFile string `long:"config" env:"M2MHUB_CONFIG" description:"ini config file (options by long name)" no-ini:"true"`
	Version    bool   `long:"version" description:"print the version and exit" no-ini:"true"`
	DataDir    string `long:"datadir" env:"M2MHUB_DATADIR" description:"data directory (default: $XDG_DATA_HOME/m2mhub or ~/.m2mhub)"`
	LogLevel   string `long:"loglevel" env:"M2MHUB_LOGLEVEL" default:"info" choice:"debug" choice:"info" choice:"warn" choice:"error" description:"log level"`

	Listen    string `long:"listen" env:"M2MHUB_LISTEN" default:"127.0.0.1:9736" description:"BOLT 8 listen address for devices"`
	AdminAddr string `long:"admin" env:"M2MHUB_ADMIN" default:"127.0.0.1:9737" description:"admin API listen address (keep it private)"`
	// MetricsListen serves Prometheus metrics without a credential, so it
	// belongs on a private interface like the admin API.
	MetricsListen string `long:"metrics-listen" env:"M2MHUB_METRICS_LISTEN" default:"127.0.0.1:9738" description:"Prometheus /metrics listen address (empty disables)"`
	// MetricsPprof adds Go's profiler to the metrics listener, for
	// profiling a hub under load (go tool pprof http://<addr>/debug/pprof/profile).
	MetricsPprof bool `long:"metrics-pprof" env:"M2MHUB_METRICS_PPROF" description:"also serve Go's profiler (/debug/pprof/) on the metrics listener"`

	NATSURL    string `long:"nats-url" env:"M2MHUB_NATS_URL" description:"external NATS server; empty runs nats-server in-process"`
	NATSListen string `long:"nats-listen" env:"M2MHUB_NATS_LISTEN" default:"127.0.0.1:9739" description:"listen address of the in-process NATS (stable, so provider back ends can pin it; hubctl info names it)"`
	// NATSReplicas is the replica count of the metering streams on an
	// external NATS cluster (3 on a 3-node cluster).
	NATSReplicas int    `long:"nats-replicas" env:"M2MHUB_NATS_REPLICAS" default:"1" description:"replicas of the JetStream metering streams on an external NATS cluster (3 on a 3-node cluster)"`
	NATSCreds    string `long:"nats-creds" env:"M2MHUB_NATS_CREDS" description:"credentials file of the hub's user on an external NATS"`
	// NATSAuthority makes the hub the signer of its NATS account on an
	// external NATS in operator mode (internal/natsjwt).
	NATSAuthority string `long:"nats-authority" env:"M2MHUB_NATS_AUTHORITY" description:"with --nats-url: seeds file of the hub's NATS operator and account (created when missing, with the nats-server config include <file>.conf beside it); the hub then signs its own and each provider's NATS user"`
	// DedupWindow is JetStream's de-duplication window of the usage stream.
	DedupWindow time.Duration `long:"dedup-window" env:"M2MHUB_DEDUP_WINDOW" default:"2m" description:"JetStream de-duplication window for usage events (the hub's own record catches later repeats)"`

	RedisURL    string `long:"redis-url" env:"M2MHUB_REDIS_URL" description:"Redis URL (redis://host:port/db); empty uses the embedded store in the data dir"`
	RedisPrefix string `long:"redis-prefix" env:"M2MHUB_REDIS_PREFIX" default:"m2mhub:" description:"key prefix in Redis"`

	Btcd btcdConfig `group:"btcd" namespace:"btcd" env-namespace:"M2MHUB_BTCD"`

	Limits limitsConfig `group:"limits" namespace:"limits" env-namespace:"M2MHUB_LIMITS"`

	HTTP httpConfig `group:"http" namespace:"http" env-namespace:"M2MHUB_HTTP"`

	Webhook webhookConfig `group:"webhook" namespace:"webhook" env-namespace:"M2MHUB_WEBHOOK"`

	Channels channelsConfig `group:"channels" namespace:"channels" env-namespace:"M2MHUB_CHANNELS"`

	Settle settleConfig `group:"settle" namespace:"settle" env-namespace:"M2MHUB_SETTLE"`
}

// settleConfig is the operator's settlement period. With neither a period nor
// a block count, epochs settle only on demand (hubctl settle run).
type settleConfig struct {
	Period        time.Duration `long:"period" env:"PERIOD" description:"settle once per this period (0: on demand only)"`
	Blocks        uint32        `long:"blocks" env:"BLOCKS" description:"settle once per this many blocks (0: not by blocks)"`
	Confirmations uint32        `long:"confirmations" env:"CONFIRMATIONS" description:"confirmations before a settlement counts as done (default 1 on regtest, more elsewhere: see docs/settlement-run.md)"`
	LeaseTTL      time.Duration `long:"lease-ttl" env:"LEASE_TTL" description:"lifetime of the settlement leader lease among hubd sharing a store; a killed leader is replaced within about this (default 10s)"`
	Instance      string        `long:"instance" env:"INSTANCE" description:"this hubd's instance id in the settlement lease (default host/pid)"`
}

// channelsConfig sets the channel manager's terms; zero values take the
// manager's defaults (hub.Default…), which the descriptions name.
type channelsConfig struct {
	MinDepth        uint32        `long:"min-depth" env:"MIN_DEPTH" description:"confirmations a funding output needs (default 1 on regtest, 3 elsewhere)"`
	MinExpiryDelta  uint32        `long:"min-expiry-delta" env:"MIN_EXPIRY_DELTA" description:"fewest blocks from now a new channel may expire (default 144)"`
	SafetyMargin    uint32        `long:"safety-margin" env:"SAFETY_MARGIN" description:"blocks before expiry at which the hub claims what it was paid (default 36)"`
	CreditLimitMsat uint64        `long:"credit-limit-msat" env:"CREDIT_LIMIT_MSAT" description:"service on credit allowed per channel, msat (default 10000)"`
	PollInterval    time.Duration `long:"poll-interval" env:"POLL_INTERVAL" description:"how often the chain is polled for funding and closing (default 5s)"`
}

type btcdConfig struct {
	RPCHost string `long:"rpchost" env:"RPCHOST" description:"external btcd RPC host:port; empty starts btcd in regtest as a child process"`
	RPCUser string `long:"rpcuser" env:"RPCUSER" description:"btcd RPC user"`
	RPCPass string `long:"rpcpass" env:"RPCPASS" description:"btcd RPC password"`
	RPCCert string `long:"rpccert" env:"RPCCERT" description:"btcd RPC TLS certificate file"`
	Network string `long:"network" env:"NETWORK" default:"regtest" choice:"regtest" choice:"testnet3" choice:"signet" choice:"mainnet" description:"bitcoin network"`
	Binary  string `long:"binary" env:"BINARY" description:"btcd binary for the child process (default: next to hubd, then PATH, then go tool btcd)"`
}

// webhookConfig is the address policy of webhook deliveries
// (webhook.AddressPolicy).
type webhookConfig struct {
	AllowPrivate bool `long:"allow-private" env:"ALLOW_PRIVATE" description:"let webhook URLs reach loopback and private addresses (link-local and metadata addresses stay refused)"`
}

// httpConfig bounds the admin API's and the metrics' HTTP listeners, so
// that idle or slow clients cannot hold the descriptors the rest of hubd
// needs (docs/operations.md, "Connections and descriptors").
type httpConfig struct {
	MaxConns          int           `long:"max-conns" env:"MAX_CONNS" default:"256" description:"admin API connections open at once; at the cap the one idle longest is closed for a new one"`
	MetricsMaxConns   int           `long:"metrics-max-conns" env:"METRICS_MAX_CONNS" default:"32" description:"metrics connections open at once"`
	ReadHeaderTimeout time.Duration `long:"read-header-timeout" env:"READ_HEADER_TIMEOUT" default:"10s" description:"time a connection has to send a request's headers (and its first request)"`
	ReadTimeout       time.Duration `long:"read-timeout" env:"READ_TIMEOUT" default:"30s" description:"time to read a whole request"`
	WriteTimeout      time.Duration `long:"write-timeout" env:"WRITE_TIMEOUT" default:"2m" description:"time to handle a request and write its answer"`
	IdleTimeout       time.Duration `long:"idle-timeout" env:"IDLE_TIMEOUT" default:"60s" description:"keep-alive connections idle this long are closed"`
}

// limits returns the admin (or, with metrics, the metrics) listener's
// bounds.
func (c httpConfig) limits(metrics bool) httpapi.Limits {
	l := httpapi.Limits{MaxConns: c.MaxConns, ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout: c.ReadTimeout, WriteTimeout: c.WriteTimeout, IdleTimeout: c.IdleTimeout}
	if metrics {
		l.MaxConns = c.MetricsMaxConns
	}
	return l
}

type limitsConfig struct {
	HandshakeTimeout time.Duration `long:"handshake-timeout" env:"HANDSHAKE_TIMEOUT" default:"10s" description:"time a connection has after the noise handshake to authenticate"`
	MaxSessions      int           `long:"max-sessions" env:"MAX_SESSIONS" default:"10000" description:"live sessions in total"`
	MaxSessionsPerIP int           `long:"max-sessions-per-ip" env:"MAX_SESSIONS_PER_IP" default:"1000" description:"live sessions from one IP address"`
	MaxMessageSize   int           `long:"max-message-size" env:"MAX_MESSAGE_SIZE" default:"65535" description:"largest message accepted from a device, in bytes"`
	SendQueue        int           `long:"send-queue" env:"SEND_QUEUE" default:"64" description:"messages queued to one device before it is dropped as too slow"`
	PingInterval     time.Duration `long:"ping-interval" env:"PING_INTERVAL" default:"30s" description:"keepalive ping interval"`
	PongTimeout      time.Duration `long:"pong-timeout" env:"PONG_TIMEOUT" default:"15s" description:"time to answer a ping before the session is dropped"`

	// The accept path: a connection is in handshake from TCP accept until
	// its device is authenticated (docs/protocol.md §1.1).
	ActTimeout    time.Duration `long:"act-timeout" env:"ACT_TIMEOUT" default:"3s" description:"time for each act of the noise handshake"`
	MaxHandshakes int           `long:"max-handshakes" env:"MAX_HANDSHAKES" default:"512" description:"connections in handshake at once (TCP accept to authenticated), which bounds their file descriptors"`
	// MaxHandshakesPerSource is one source's share of MaxHandshakes; a
	// connection beyond it is closed as soon as it is accepted.
	MaxHandshakesPerSource int `long:"max-handshakes-per-source" env:"MAX_HANDSHAKES_PER_SOURCE" default:"8" description:"connections in handshake from one IPv4 address or IPv6 /64; more are closed at once"`
}

// defaultDataDir follows the XDG base directory convention.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "m2mhub")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".m2mhub")
	}
	return ".m2mhub"
}

// loadConfig parses flags and environment, then the config file if one is
// named, then flags again so they win over the file.
func loadConfig(args []string) (config, error) {
	var pre config
	p := flags.NewParser(&pre, flags.Default)
	if _, err := p.ParseArgs(args); err != nil {
		return config{}, err
	}
	if pre.Version {
		return pre, nil
	}
	var cfg config
	p = flags.NewParser(&cfg, flags.Default)
	if pre.ConfigFile != "" {
		if err := flags.NewIniParser(p).ParseFile(pre.ConfigFile); err != nil {
			return config{}, fmt.Errorf("config file %s: %w", pre.ConfigFile, err)
		}
	}
	rest, err := p.ParseArgs(args)
	if err != nil {
		return config{}, err
	}
	if len(rest) > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %v", rest)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = defaultDataDir()
	}
	cfg.DataDir, err = filepath.Abs(cfg.DataDir)
	if err != nil {
		return config{}, err
	}
	if cfg.Btcd.RPCHost == "" && cfg.Btcd.Network != "regtest" {
		return config{}, errors.New("an in-process btcd runs only in regtest: set --btcd.rpchost for other networks")
	}
	if cfg.Limits.MaxMessageSize < 1 || cfg.Limits.MaxMessageSize > 65535 {
		return config{}, errors.New("--limits.max-message-size must be between 1 and 65535")
	}
	if cfg.HTTP.MaxConns < 1 || cfg.HTTP.MetricsMaxConns < 1 {
		return config{}, errors.New("--http.max-conns and --http.metrics-max-conns must be positive")
	}
	if cfg.HTTP.ReadHeaderTimeout <= 0 || cfg.HTTP.ReadTimeout <= 0 || cfg.HTTP.WriteTimeout <= 0 || cfg.HTTP.IdleTimeout <= 0 {
		return config{}, errors.New("the --http.*-timeout options must be positive")
	}
	return cfg, nil
}
