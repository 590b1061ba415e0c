package hubtest

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/internal/natsembed"
)

// MeteringConfig adjusts StartMetering. The zero value is hubd's setup.
type MeteringConfig struct {
	// NoSyncAlways turns JetStream's fsync of every write off (hubd keeps
	// it on); benchmarks use it to show what the disk costs.
	NoSyncAlways bool
	// Charging and Intake, when set, adjust the configurations after the
	// harness filled them in.
	Charging func(*charging.Config)
	Intake   func(*natsintake.Config)
}

// Metering is the metering path of a harness hub, wired as cmd/hubd wires
// it: an embedded nats-server with nkey users (the hub's and one per
// provider), the metering streams, charging.Service on the hub's store,
// registry and channel manager, and the natsintake consumer feeding it.
// It does not survive RestartHub: start it after the last restart.
type Metering struct {
	h        *Hub
	Server   *natsembed.Server
	Issuer   *natsembed.Issuer
	Conn     *nats.Conn // the hub's own connection
	JS       jetstream.JetStream
	Charging *charging.Service
	Intake   *natsintake.Intake
}

// Provider is a provider enrolled with NATS credentials.
type Provider struct {
	ID   string
	Key  *btcec.PrivateKey
	Seed []byte // its NATS nkey seed, as `hubctl provider add` shows it
}

// natsPublisher publishes receipts through JetStream, as hubd does.
type natsPublisher struct{ js jetstream.JetStream }

func (p natsPublisher) Publish(ctx context.Context, subject string, data []byte) error {
	_, err := p.js.Publish(ctx, subject, data)
	return err
}

// StartMetering starts the metering path on h, stopped in tb's cleanup.
func (h *Hub) StartMetering(tb TB, cfg MeteringConfig) *Metering {
	tb.Helper()
	ctx := tb.Context()
	dir := filepath.Join(h.dir, "nats")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	seedPath := filepath.Join(dir, "hub.nkey")
	hubPub, err := natsembed.LoadOrCreateSeed(seedPath)
	if err != nil {
		tb.Fatal(err)
	}
	m := &Metering{h: h}
	m.Server, err = natsembed.Start(natsembed.Config{
		Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), SyncAlways: !cfg.NoSyncAlways,
		HubNkey: hubPub, Logger: h.log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Server.Close)
	opt, err := nats.NkeyOptionFromSeed(seedPath)
	if err != nil {
		tb.Fatal(err)
	}
	if m.Conn, err = nats.Connect(m.Server.ClientURL(), opt, nats.Name("hubtest hub")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Conn.Close)
	if m.JS, err = jetstream.New(m.Conn); err != nil {
		tb.Fatal(err)
	}
	if err := natsintake.EnsureStreams(ctx, m.JS, 0); err != nil {
		tb.Fatal(err)
	}
	m.Issuer, err = natsembed.NewIssuer(natsembed.IssuerConfig{
		Server: m.Server, Path: filepath.Join(dir, "providers.json"),
		Prepare: func(ctx context.Context, id string) error { return natsintake.EnsureReceiptsConsumer(ctx, m.JS, id) },
	})
	if err != nil {
		tb.Fatal(err)
	}

	store := h.Store()
	ccfg := charging.Config{
		Contracts: store, Charges: store, Devices: h.Registry(), Channels: h.Channels(),
		Freezer: h.Registry(), Publisher: natsPublisher{m.JS}, Logger: h.log,
	}
	if cfg.Charging != nil {
		cfg.Charging(&ccfg)
	}
	if m.Charging, err = charging.New(ccfg); err != nil {
		tb.Fatal(err)
	}
	m.Charging.Start()
	icfg := natsintake.Config{JS: m.JS, Providers: h.Registry(), Charger: m.Charging, Logger: h.log}
	if cfg.Intake != nil {
		cfg.Intake(&icfg)
	}
	if m.Intake, err = natsintake.New(icfg); err != nil {
		tb.Fatal(err)
	}
	if err := m.Intake.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	// Stop in hubd's order: intake, then charging; both before the hub
	// (registered earlier, so cleaned up later).
	tb.Cleanup(func() {
		_ = m.Intake.Close()
		_ = m.Charging.Close()
	})
	return m
}

// PublishContract parses doc and stores it as the admin API does, and
// returns it parsed.
func (m *Metering) PublishContract(tb TB, doc []byte) *contracts.Contract {
	tb.Helper()
	k, err := contracts.Parse(doc)
	if err != nil {
		tb.Fatal(err)
	}
	rec := hub.ContractRecord{
		Hash: hub.Hash(k.Hash()), Kind: string(k.Kind), Name: k.ID, Version: int(k.Version),
		Document: k.Canonical(), Published: time.Now().UTC(),
	}
	if err := m.h.Store().PutContract(tb.Context(), rec); err != nil {
		tb.Fatal(err)
	}
	return k
}

// AddProvider enrols a provider and issues its NATS user, as
// POST /v1/providers does.
func (m *Metering) AddProvider(tb TB) Provider {
	tb.Helper()
	key, id := m.h.EnrolDevice(tb, hub.RoleProvider)
	_, seed, err := m.Issuer.IssueNATS(tb.Context(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return Provider{ID: id, Key: key, Seed: seed}
}

// NewMeter connects provider p to the embedded NATS with its own
// credentials and returns its client Meter; both closed in tb's cleanup.
func (m *Metering) NewMeter(tb TB, p Provider, cfg m2mclient.MeterConfig) *m2mclient.Meter {
	tb.Helper()
	nc, err := m2mclient.ConnectNATS(m.Server.ClientURL(), p.ID, p.Seed)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	cfg.Conn, cfg.ProviderID, cfg.Key = nc, p.ID, p.Key
	if cfg.HubKey == nil {
		cfg.HubKey = m.h.PubKey()
	}
	if cfg.Logger == nil {
		cfg.Logger = m.h.log
	}
	mt, err := m2mclient.NewMeter(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = mt.Close() })
	return mt
}
