package natsintake_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/internal/natsembed"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const testContract = "5f2b6e0c9a1d4b3e8f7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"

// env is a real embedded nats-server with nkey users, the streams, a real
// registry on bbolt, and the hub's JetStream connection.
type env struct {
	t        testing.TB
	dir      string
	srv      *natsembed.Server
	issuer   *natsembed.Issuer
	reg      *registry.Registry
	hubSeed  string // path of the hub's nkey seed file
	nc       *nats.Conn
	js       jetstream.JetStream
	payer    hub.Device
	now      time.Time
	syncDisk bool
}

// provider is an enrolled provider with its key and NATS credentials.
type provider struct {
	dev  hub.Device
	key  *btcec.PrivateKey
	seed string // seed file path
}

func newEnv(tb testing.TB, syncAlways bool) *env {
	tb.Helper()
	dir := tb.TempDir()
	e := &env{t: tb, dir: dir, hubSeed: filepath.Join(dir, "nats.nkey"), now: time.Now().UTC(), syncDisk: syncAlways}
	hubPub, err := natsembed.LoadOrCreateSeed(e.hubSeed)
	if err != nil {
		tb.Fatal(err)
	}
	e.srv, err = natsembed.Start(natsembed.Config{
		Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), SyncAlways: syncAlways, HubNkey: hubPub,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.srv.Close)
	e.nc = e.connectHub()
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := natsintake.EnsureStreams(ctx, e.js, 0); err != nil {
		tb.Fatal(err)
	}
	e.issuer, err = natsembed.NewIssuer(natsembed.IssuerConfig{
		Server: e.srv, Path: filepath.Join(dir, "nats-providers.json"),
		Prepare: func(ctx context.Context, id string) error { return natsintake.EnsureReceiptsConsumer(ctx, e.js, id) },
	})
	if err != nil {
		tb.Fatal(err)
	}
	store, err := boltstore.New(boltstore.Config{Path: filepath.Join(dir, "store")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	e.reg, err = registry.New(registry.Config{Store: store})
	if err != nil {
		tb.Fatal(err)
	}
	pk, _ := btcec.NewPrivateKey()
	e.payer, err = e.reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(pk.PubKey()), Roles: []hub.Role{hub.RolePayer}}, "test")
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// connectHub opens a connection as the hub's own user.
func (e *env) connectHub() *nats.Conn {
	e.t.Helper()
	opt, err := nats.NkeyOptionFromSeed(e.hubSeed)
	if err != nil {
		e.t.Fatal(err)
	}
	nc, err := nats.Connect(e.srv.ClientURL(), opt)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// addProvider enrols a provider and issues its NATS credentials, as
// POST /v1/providers does.
func (e *env) addProvider() provider {
	e.t.Helper()
	ctx := context.Background()
	key, _ := btcec.NewPrivateKey()
	d, err := e.reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(key.PubKey()), Roles: []hub.Role{hub.RoleProvider}}, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	_, seed, err := e.issuer.IssueNATS(ctx, d.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, d.ID+".nkey")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return provider{dev: d, key: key, seed: path}
}

// connect opens provider p's NATS connection; errs receives asynchronous
// errors (permission violations).
func (e *env) connect(p provider, errs chan<- error) *nats.Conn {
	e.t.Helper()
	opt, err := nats.NkeyOptionFromSeed(p.seed)
	if err != nil {
		e.t.Fatal(err)
	}
	nc, err := nats.Connect(e.srv.ClientURL(), opt, nats.CustomInboxPrefix(metering.InboxPrefix(p.dev.ID)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errs != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// providerJS is provider p's JetStream context on its own connection.
func (e *env) providerJS(p provider) jetstream.JetStream {
	e.t.Helper()
	js, err := jetstream.New(e.connect(p, nil))
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// event returns a valid event of provider p, signed.
func (e *env) event(p provider, id string) metering.Event {
	e.t.Helper()
	ev := metering.Event{
		SpecVersion: metering.SpecVersion, ID: id, Source: p.dev.ID, Type: metering.EventType,
		Subject: e.payer.ID, Time: e.now.Add(-time.Minute).Format(time.RFC3339Nano),
		Data: metering.Data{Contract: testContract, Quantity: "1", Unit: "passage"},
	}
	if err := metering.Sign(&ev, p.key); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// publish sends evs as one message from provider p's connection through
// JetStream and returns the publish acknowledgement.
func (e *env) publish(js jetstream.JetStream, subject string, evs ...metering.Event) *jetstream.PubAck {
	e.t.Helper()
	body, err := metering.EncodeBatch(evs)
	if err != nil {
		e.t.Fatal(err)
	}
	provider := strings.TrimPrefix(subject, "usage.")
	return e.publishRaw(js, subject, body, metering.MsgID(provider, body, ""))
}

func (e *env) publishRaw(js jetstream.JetStream, subject string, body []byte, msgID string) *jetstream.PubAck {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, body, jetstream.WithMsgID(msgID))
	if err != nil {
		e.t.Fatal(err)
	}
	return ack
}

// intake starts an intake on nc with charger c.
func (e *env) intake(nc *nats.Conn, c natsintake.Charger, mod func(*natsintake.Config)) *natsintake.Intake {
	e.t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := natsintake.Config{
		JS: js, Providers: e.reg, Charger: c, Clock: clock.NewTestClock(e.now),
		NakDelay: 50 * time.Millisecond, MaxNakDelay: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	in, err := natsintake.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := in.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { in.Close() })
	return in
}

// deadLetters reads every message of the dead-letter stream.
func (e *env) deadLetters() []jetstream.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, metering.DLQStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	if info.State.Msgs == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	for range info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// charger is a test Charger that records event ids, reports repeats as
// duplicates (as the hub's ChargeStore does), rejects what reject names,
// fails while failures remain, and blocks while block is set.
type charger struct {
	mu       sync.Mutex
	seen     map[string]int // event id -> times charged or seen
	calls    int
	failures int
	reject   func(u charging.Usage) (code, detail string)
	block    chan struct{} // if non-nil, Charge waits for it to close (or ctx)
	entered  chan struct{} // signalled when a Charge call starts
}

func newCharger() *charger { return &charger{seen: map[string]int{}} }

func (c *charger) ChargeUsage(ctx context.Context, evs []charging.Usage) ([]charging.Outcome, error) {
	c.mu.Lock()
	c.calls++
	block, entered := c.block, c.entered
	if c.failures > 0 {
		c.failures--
		c.mu.Unlock()
		return nil, fmt.Errorf("store down")
	}
	c.mu.Unlock()
	if entered != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	outs := make([]charging.Outcome, len(evs))
	for i, e := range evs {
		if c.reject != nil {
			if code, detail := c.reject(e); code != "" {
				outs[i].Outcome = metering.Outcome{Rejected: code, Detail: detail}
				continue
			}
		}
		key := e.Provider + "/" + e.ID
		c.seen[key]++
		if c.seen[key] > 1 {
			outs[i].Outcome = metering.Outcome{Duplicate: true}
		} else {
			outs[i].Outcome = metering.Outcome{Charged: true}
		}
	}
	return outs, nil
}

func (c *charger) count(source, id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[source+"/"+id]
}

func (c *charger) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.seen {
		n += v
	}
	return n
}

// The hub's parts satisfy the interfaces the intake and the admin API
// declare, so hubd can wire them directly.
var (
	_ natsintake.Providers        = (*registry.Registry)(nil)
	_ natsintake.Charger          = (*charging.Service)(nil)
	_ httpapi.ProviderCredentials = (*natsembed.Issuer)(nil)
)
