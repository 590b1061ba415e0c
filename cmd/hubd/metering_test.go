package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// meterHubArgs are hubd's flags for the metering test: a credit limit far
// above what one flush interval charges (the default 10,000 msat would
// turn the EV session into unpaid charges), a 1 s JetStream dedup window so
// a replay past it can be shown, and a fast chain poll.
func meterHubArgs() []string {
	return []string{
		"--dedup-window", "1s",
		"--channels.credit-limit-msat", "100000000",
		"--channels.poll-interval", "200ms",
		"--channels.min-expiry-delta", "100",
	}
}

// meterHub is a real hubd driven through its admin API, its NATS and its
// BOLT 8 port, as operators, providers and devices reach it.
type meterHub struct {
	t      *testing.T
	dir    string
	p      *hubProc
	admin  *httpapi.Client
	hubKey *btcec.PublicKey
	// hub is the hub's own NATS connection (its seed in the data dir),
	// for reading the usage and dead-letter streams as an operator would.
	hub *nats.Conn
	js  jetstream.JetStream
}

func startMeterHub(t *testing.T, dir string) *meterHub {
	t.Helper()
	h := &meterHub{t: t, dir: dir}
	h.start()
	return h
}

// start (re)starts hubd on the data dir and reconnects the admin client
// and the hub's NATS connection to its new ports.
func (h *meterHub) start() {
	t := h.t
	t.Helper()
	h.p = startHubd(t, h.dir, meterHubArgs()...)
	h.hubKey = h.p.hubKey(t)
	token, err := datadir.Dir(h.dir).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	h.admin = httpapi.NewClient(h.p.rt.AdminAddr, token)
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(h.dir, datadir.NATSKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if h.hub, err = nats.Connect(h.p.rt.NATSURL, opt, nats.Name("metering test operator")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.hub.Close)
	if h.js, err = jetstream.New(h.hub); err != nil {
		t.Fatal(err)
	}
}

// publish stores a contract document through the admin API and returns its
// hash in hex, as events name it.
func (h *meterHub) publish(t *testing.T, ctx context.Context, doc []byte) string {
	t.Helper()
	rec, err := h.admin.PublishContract(ctx, doc)
	if err != nil {
		t.Fatalf("publish contract: %v", err)
	}
	return rec.Hash.String()
}

// exampleDoc reads one of the example contracts of package contracts.
func exampleDoc(t *testing.T, kind string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "contracts", "testdata", "examples", kind+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refundColdChain is the example cold-chain contract with on_breach:
// refund, so a breached shipment costs its payer nothing.
func refundColdChain(t *testing.T) []byte {
	t.Helper()
	doc := string(exampleDoc(t, "conditional_release"))
	out := strings.Replace(doc, `"on_breach": "penalty",
    "penalty": "20.00"`, `"on_breach": "refund"`, 1)
	out = strings.Replace(out, `"coldchain-vaccines-2to8"`, `"coldchain-vaccines-2to8-refund"`, 1)
	if out == doc || !strings.Contains(out, `"refund"`) {
		t.Fatal("the cold-chain example changed; update refundColdChain")
	}
	return []byte(out)
}

// flatContract prices every passage of a car at 1,000 msat with no
// security rule: for floods of events that must be charged, not frozen.
var flatContract = []byte(`{"kind":"toll","version":1,"id":"kill-test-flat","currency":"msat","fee":{"bps":"100"},` +
	`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000"}}}`)

// meterProvider is a provider with its NATS credentials from the admin
// API, its client Meter and its verified receipts.
type meterProvider struct {
	id      string
	key     *btcec.PrivateKey
	seed    []byte
	nc      *nats.Conn
	meter   *m2mclient.Meter
	notices <-chan m2mclient.Notice
	natsErr chan error // asynchronous NATS errors (permission violations)
}

// addProvider enrols key (or finds it enrolled) as a provider through
// POST /v1/providers and connects it to the hub's NATS with the seed.
func (h *meterHub) addProvider(t *testing.T, ctx context.Context, key *btcec.PrivateKey, kind string) *meterProvider {
	t.Helper()
	if key == nil {
		var err error
		if key, err = btcec.NewPrivateKey(); err != nil {
			t.Fatal(err)
		}
	}
	pr, err := h.admin.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(key.PubKey()), Owner: "metering test", Kind: kind})
	if err != nil {
		t.Fatalf("add provider: %v", err)
	}
	if pr.NATS == nil || pr.NATS.Seed == "" {
		t.Fatalf("no NATS seed issued: %+v", pr)
	}
	p := &meterProvider{id: pr.Device.ID, key: key, seed: []byte(pr.NATS.Seed), natsErr: make(chan error, 16)}
	h.connectProvider(t, ctx, p)
	return p
}

// connectProvider (re)connects p to the running hubd's NATS.
func (h *meterHub) connectProvider(t *testing.T, ctx context.Context, p *meterProvider) {
	t.Helper()
	nc, err := m2mclient.ConnectNATS(h.p.rt.NATSURL, p.id, p.seed,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case p.natsErr <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	p.attach(t, ctx, nc, h.hubKey)
}

// attach starts p's Meter and its receipt notices on nc, which it then
// owns.
func (p *meterProvider) attach(t *testing.T, ctx context.Context, nc *nats.Conn, hubKey *btcec.PublicKey) {
	t.Helper()
	t.Cleanup(nc.Close)
	m, err := m2mclient.NewMeter(m2mclient.MeterConfig{
		Conn: nc, ProviderID: p.id, Key: p.key, HubKey: hubKey, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if p.notices, err = m.Receipts(ctx); err != nil {
		t.Fatal(err)
	}
	p.nc, p.meter = nc, m
}

// send meters events through the provider's client library.
func (p *meterProvider) send(t *testing.T, ctx context.Context, evs ...metering.Event) {
	t.Helper()
	if err := p.meter.Meter(ctx, evs...); err != nil {
		t.Fatalf("meter %s: %v", p.id, err)
	}
}

// receipts reads p's notices until its receipts cover ids; an unpaid
// notice or a receipt for another event fails the test.
func (p *meterProvider) receipts(t *testing.T, ids ...string) []m2mclient.Receipt {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var got []m2mclient.Receipt
	timeout := time.After(20 * time.Second)
	for len(want) > 0 {
		select {
		case n, ok := <-p.notices:
			if !ok {
				t.Fatalf("%s: notice stream ended", p.id)
			}
			if n.Unpaid != nil {
				t.Fatalf("%s: unpaid notice %+v", p.id, *n.Unpaid)
			}
			r := n.Receipt
			enc, err := r.MarshalBinary()
			if err != nil || enc[0] != channel.ReceiptVersionEvents || r.EventCount != uint32(len(r.Events)) {
				t.Fatalf("%s: receipt (%v) is not version 2 with %d events for %v", p.id, err, r.EventCount, r.Events)
			}
			for _, id := range r.Events {
				if !want[id] {
					t.Fatalf("%s: receipt for unexpected event %q (a second charge?)", p.id, id)
				}
				delete(want, id)
			}
			got = append(got, *r)
		case <-timeout:
			t.Fatalf("%s: no receipt for %v after 20 s", p.id, want)
		}
	}
	return got
}

// payer is a device with a ready channel that pays the hub's payment
// requests automatically (within its Policy).
type payer struct {
	id   string
	key  *btcec.PrivateKey
	sess *m2mclient.Session
	dev  *m2mclient.Device
	ch   btcwire.OutPoint
	// prov is the Provider on the same Session (prosumers only).
	prov *m2mclient.Provider
}

// enrol registers a fresh key with roles through the admin API.
func (h *meterHub) enrol(t *testing.T, ctx context.Context, kind string, roles ...hub.Role) (*btcec.PrivateKey, string) {
	t.Helper()
	key, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	d, err := h.admin.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(key.PubKey()), Roles: roles, Owner: "metering test", Kind: kind})
	if err != nil {
		t.Fatalf("enrol %s: %v", kind, err)
	}
	return key, d.ID
}

// connect opens the payer's one Session with a Device on it and, for a
// prosumer, a Provider sharing the Session's Router.
func (h *meterHub) connect(t *testing.T, ctx context.Context, key *btcec.PrivateKey, id string, prosumer bool) *payer {
	t.Helper()
	return h.connectWith(t, ctx, key, id, prosumer, nil)
}

// connectWith is connect with the device's config adjusted by tune (when
// not nil) before the device starts.
func (h *meterHub) connectWith(t *testing.T, ctx context.Context, key *btcec.PrivateKey, id string, prosumer bool,
	tune func(*m2mclient.DeviceConfig)) *payer {
	t.Helper()
	return dialPayer(t, ctx, h.p.rt.P2PAddr, h.hubKey, key, id, prosumer, tune)
}

// dialPayer connects a payer at addrs (one address or several,
// comma-separated, as m2mclient.Dial takes them).
func dialPayer(t *testing.T, ctx context.Context, addrs string, hubKey *btcec.PublicKey, key *btcec.PrivateKey, id string, prosumer bool,
	tune func(*m2mclient.DeviceConfig)) *payer {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	s, err := m2mclient.Dial(ctx, addrs, hubKey, key,
		m2mclient.WithBackoff(50*time.Millisecond, 200*time.Millisecond), m2mclient.WithLogger(quiet))
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	dc := m2mclient.DeviceConfig{
		Key: key, HubKey: hubKey, Params: &chaincfg.RegressionNetParams, Dir: t.TempDir(), Logger: quiet,
		Policy: m2mclient.Policy{MaxPerPayment: 50_000_000, MaxPerHour: 100_000_000},
	}
	if tune != nil {
		tune(&dc)
	}
	d, err := m2mclient.NewDevice(s, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	py := &payer{id: id, key: key, sess: s, dev: d}
	if prosumer {
		if py.prov, err = m2mclient.NewProvider(s, m2mclient.ProviderConfig{HubKey: hubKey, Logger: quiet}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = py.prov.Close() })
	}
	return py
}

// fund opens a channel for every payer, all funded by one transaction from
// the hub's regtest wallet (a faucet), and waits until each is ready.
func (h *meterHub) fund(t *testing.T, ctx context.Context, capacity btcutil.Amount, payers ...*payer) {
	t.Helper()
	rt := h.p.rt
	chain, err := btcdchain.New(btcdchain.Config{
		Host: rt.Btcd.Host, User: rt.Btcd.User, Pass: rt.Btcd.Pass, CertPath: rt.Btcd.CertPath,
		Params: &chaincfg.RegressionNetParams, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	fundPayers(t, ctx, chain, filepath.Join(h.dir, datadir.WalletKeyFile), capacity, payers...)
}

// fundPayers opens a channel for every payer, funded by one transaction
// from the wallet at walletKey on chain, and waits until each is ready.
func fundPayers(t *testing.T, ctx context.Context, chain *btcdchain.Client, walletKey string, capacity btcutil.Amount, payers ...*payer) {
	t.Helper()
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: walletKey, Chain: chain, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	height, err := chain.BlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pending := make([]*m2mclient.PendingChannel, len(payers))
	outs := make([]*btcwire.TxOut, len(payers))
	for i, py := range payers {
		if pending[i], err = py.dev.OpenChannel(ctx, capacity, uint32(height)+500); err != nil {
			t.Fatalf("open %s: %v", py.id, err)
		}
		outs[i] = btcwire.NewTxOut(int64(capacity), pending[i].PkScript)
	}
	txid, err := wallet.SendMany(ctx, outs)
	if err != nil {
		t.Fatalf("fund channels: %v", err)
	}
	if _, err := chain.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(payers))
	for i, py := range payers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			ch, err := py.dev.Funded(octx, pending[i].PendingID, btcwire.OutPoint{Hash: txid, Index: uint32(i)})
			if err == nil && ch.Status != m2mclient.StatusReady {
				err = fmt.Errorf("channel is %s", ch.Status)
			}
			if err == nil {
				py.ch = ch.ID
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("channel of %s: %v", payers[i].id, err)
		}
	}
}

// paid is what the payer's channel has paid so far, by its own record,
// once the device holds no unacknowledged payment. The hub sends a
// provider its receipt as soon as the payment is stored, which can be
// before the paying device has read its PayAck: a test that checks the
// payer right after the receipt waits here for that acknowledgement.
func (py *payer) paid(t *testing.T) msat.Amount {
	t.Helper()
	b := py.balanceWhen(t, func(b m2mclient.Balance) bool { return b.Unconfirmed == 0 },
		func(b m2mclient.Balance) string {
			return fmt.Sprintf("still holds an unacknowledged payment of %d msat", uint64(b.Unconfirmed))
		})
	return b.Paid
}

// balanceWhen polls the device's own record of its channel (local, no
// hub call) until ok holds, for 10 s at most; why says what was wrong.
func (py *payer) balanceWhen(t *testing.T, ok func(m2mclient.Balance) bool, why func(m2mclient.Balance) string) m2mclient.Balance {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := py.dev.Balance(py.ch)
		if err != nil {
			t.Fatal(err)
		}
		if ok(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s", py.id, why(b))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// income asks the admin API for a provider's income over every charge.
func (h *meterHub) income(t *testing.T, ctx context.Context, provider string) charging.Income {
	t.Helper()
	in, err := h.admin.Income(ctx, provider, time.Time{}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// drained waits until the hub's intake has acknowledged every message of
// the usage stream: whatever it was going to charge or dead-letter is done.
func (h *meterHub) drained(t *testing.T, ctx context.Context) {
	t.Helper()
	h.drainedWithin(t, ctx, 20*time.Second)
}

// drainedWithin is drained with its own bound.
func (h *meterHub) drainedWithin(t *testing.T, ctx context.Context, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s, err := h.js.Stream(ctx, metering.UsageStream)
		if err != nil {
			t.Fatal(err)
		}
		si, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Consumer(ctx, natsintake.DefaultConsumer)
		if err == nil {
			ci, err := c.Info(ctx)
			if err == nil && ci.AckFloor.Stream >= si.State.LastSeq && ci.NumAckPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the intake has not acknowledged the usage stream up to %d", si.State.LastSeq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// usageMsgs is how many messages the usage stream has taken in.
func (h *meterHub) usageMsgs(t *testing.T, ctx context.Context) uint64 {
	t.Helper()
	s, err := h.js.Stream(ctx, metering.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return si.State.Msgs
}

// deadLetter reads M2M_DLQ (with the hub's own credentials) for the dead
// letter of provider's event id and returns its reason and detail.
func (h *meterHub) deadLetter(t *testing.T, ctx context.Context, provider, id string) (reason, detail string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s, err := h.js.Stream(ctx, metering.DLQStream)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{metering.DLQSubject(provider)}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := c.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
			if err != nil {
				break
			}
			var ev struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(m.Data(), &ev) == nil && ev.ID == id {
				return m.Headers().Get(metering.HeaderReason), m.Headers().Get(metering.HeaderDetail)
			}
		}
	}
	t.Fatalf("no dead letter for %s's event %s", provider, id)
	return "", ""
}

// lastWeekday is the latest local time hh:mm in zone on weekday wd strictly
// before today (at most 8 days back), so events are priced in the past
// within the hub's 30-day window, on the weekday the tariff figures assume.
func lastWeekday(t *testing.T, now time.Time, zone string, wd time.Weekday, hh, mm int) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	n := now.In(loc)
	for d := 1; d <= 8; d++ {
		day := n.AddDate(0, 0, -d)
		if day.Weekday() == wd {
			return time.Date(day.Year(), day.Month(), day.Day(), hh, mm, 0, 0, loc)
		}
	}
	t.Fatal("no such weekday in a week")
	return time.Time{}
}

func rfc(t time.Time) string { return t.Format(time.RFC3339) }

// TestMeteringEndToEnd drives the four use cases and the metering
// guarantees through the real hubd, the provider client over NATS with
// credentials from POST /v1/providers, and payers that auto-pay over BOLT 8.
func TestMeteringEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubd with its regtest btcd")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	h := startMeterHub(t, dir)

	// Contracts: the examples, and the cold chain with a refund on breach.
	ev := h.publish(t, ctx, exampleDoc(t, "ev_charging"))
	toll := h.publish(t, ctx, exampleDoc(t, "toll"))
	bw := h.publish(t, ctx, exampleDoc(t, "bandwidth"))
	energy := h.publish(t, ctx, exampleDoc(t, "energy"))
	cold := h.publish(t, ctx, refundColdChain(t))
	flat := h.publish(t, ctx, flatContract)

	// Providers, with NATS credentials from the admin API.
	cp := h.addProvider(t, ctx, nil, "charger")
	gantry := h.addProvider(t, ctx, nil, "toll-gantry")
	uplink := h.addProvider(t, ctx, nil, "router")
	truck := h.addProvider(t, ctx, nil, "reefer-truck")

	// Payers with channels; the two households are prosumers: enrolled
	// with both roles, issued NATS credentials for the same key, and one
	// BOLT 8 session each serving their Device and their Provider.
	carKey, carID := h.enrol(t, ctx, "car", hub.RolePayer)
	routerKey, routerID := h.enrol(t, ctx, "router", hub.RolePayer)
	pharmaKey, pharmaID := h.enrol(t, ctx, "pharma-buyer", hub.RolePayer)
	aKey, aID := h.enrol(t, ctx, "household", hub.RolePayer, hub.RoleProvider)
	bKey, bID := h.enrol(t, ctx, "household", hub.RolePayer, hub.RoleProvider)
	car := h.connect(t, ctx, carKey, carID, false)
	router := h.connect(t, ctx, routerKey, routerID, false)
	pharma := h.connect(t, ctx, pharmaKey, pharmaID, false)
	hhA := h.connect(t, ctx, aKey, aID, true)
	hhB := h.connect(t, ctx, bKey, bID, true)
	sellerA := h.addProvider(t, ctx, aKey, "household")
	sellerB := h.addProvider(t, ctx, bKey, "household")
	if sellerA.id != aID || sellerB.id != bID {
		t.Fatalf("provider ids %s %s, want the households' %s %s", sellerA.id, sellerB.id, aID, bID)
	}
	payers := []*payer{car, router, pharma, hhA, hhB}
	h.fund(t, ctx, 1_000_000, payers...)
	t.Logf("setup (hubd, 6 contracts, 6 providers, 5 funded channels) took %v", time.Since(start).Round(time.Millisecond))

	now := time.Now()
	type charge struct {
		prov   *meterProvider
		events []metering.Event
		total  msat.Amount
	}
	var uses []charge

	t.Run("EVCharging", func(t *testing.T) {
		// Wednesday 22:30–23:30 local: half day rate, half night rate.
		s := lastWeekday(t, now, "Europe/Amsterdam", time.Wednesday, 22, 30)
		e := metering.Event{ID: "ev-session-1", Subject: carID, Time: rfc(s.Add(time.Hour)), Data: metering.Data{
			Contract: ev, Session: "s-1", Start: rfc(s), End: rfc(s.Add(time.Hour)),
			Periods:    []metering.Period{{Start: rfc(s), EnergyKWh: "6", PowerKW: "11", State: "charging"}},
			Attributes: map[string]string{"evse": "NL*M2M*E1"},
		}}
		cp.send(t, ctx, e)
		rs := cp.receipts(t, e.ID)
		assertPaid(t, rs, ev, 3_256_000)
		uses = append(uses, charge{cp, []metering.Event{e}, 3_256_000})
	})
	t.Run("Toll", func(t *testing.T) {
		// Monday 07:15 in Oslo: the morning peak, a car.
		at := lastWeekday(t, now, "Europe/Oslo", time.Monday, 7, 15)
		e := metering.Event{ID: "passage-1", Subject: carID, Time: rfc(at), Data: metering.Data{
			Contract: toll, Quantity: "1", Unit: "passage", VehicleClass: "car",
		}}
		gantry.send(t, ctx, e)
		assertPaid(t, gantry.receipts(t, e.ID), toll, 60_000)
		uses = append(uses, charge{gantry, []metering.Event{e}, 60_000})
	})
	t.Run("BandwidthAcrossTier", func(t *testing.T) {
		// 990 MB in the first tier (50 msat/MB), then 20 MB of which 10
		// are past 1000 MB (20 msat/MB): 49,500 + 700. The hub counts the
		// volume itself; both travel in one batch, in order.
		at := rfc(now.UTC().Add(-time.Minute))
		evs := []metering.Event{
			{ID: "mb-1", Subject: routerID, Time: at, Data: metering.Data{Contract: bw, Quantity: "990", Unit: "MB"}},
			{ID: "mb-2", Subject: routerID, Time: at, Data: metering.Data{Contract: bw, Quantity: "20", Unit: "MB"}},
		}
		uplink.send(t, ctx, evs...)
		assertPaid(t, uplink.receipts(t, "mb-1", "mb-2"), bw, 49_500+700)
		uses = append(uses, charge{uplink, evs, 50_200})
	})
	t.Run("EnergyTradeBothWays", func(t *testing.T) {
		// Wednesday 17:45 in Amsterdam, evening band 0.28 EUR/kWh: A
		// sells B 1 kWh, B sells A 0.5 kWh in the same interval.
		at := rfc(lastWeekday(t, now, "Europe/Amsterdam", time.Wednesday, 17, 45))
		ab := metering.Event{ID: "trade-a-b", Subject: bID, Time: at, Data: metering.Data{
			Contract: energy, Quantity: "1", Unit: "kWh", SellerMeter: aID, BuyerMeter: bID}}
		ba := metering.Event{ID: "trade-b-a", Subject: aID, Time: at, Data: metering.Data{
			Contract: energy, Quantity: "0.5", Unit: "kWh", SellerMeter: bID, BuyerMeter: aID}}
		sellerA.send(t, ctx, ab)
		sellerB.send(t, ctx, ba)
		assertPaid(t, sellerA.receipts(t, ab.ID), energy, 308_000)
		assertPaid(t, sellerB.receipts(t, ba.ID), energy, 154_000)
		// Each household's one session carried both sides: its Device
		// paid, and its Provider was told of the payment it received.
		for _, c := range []struct {
			hh   *payer
			from string
			amt  msat.Amount
		}{{hhA, bID, 308_000}, {hhB, aID, 154_000}} {
			select {
			case r := <-c.hh.prov.Receipts():
				if err := c.hh.prov.VerifyReceipt(r); err != nil || r.Payer != c.from || r.Amount != c.amt {
					t.Fatalf("%s's provider got receipt %+v (%v), want %d msat from %s", c.hh.id, r, err, c.amt, c.from)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s's provider got no receipt over its session", c.hh.id)
			}
		}
		if a, b := hhA.paid(t), hhB.paid(t); a != 154_000 || b != 308_000 {
			t.Fatalf("household A paid %d, B paid %d; want 154000 and 308000", a, b)
		}
		uses = append(uses, charge{sellerA, []metering.Event{ab}, 308_000}, charge{sellerB, []metering.Event{ba}, 154_000})
	})
	t.Run("ColdChainReleaseAndRefund", func(t *testing.T) {
		s := now.UTC().Add(-5 * time.Hour)
		startEv := func(id, session string) metering.Event {
			return metering.Event{ID: id, Subject: pharmaID, Time: rfc(s), Data: metering.Data{Contract: cold, Session: session, Start: rfc(s)}}
		}
		endEv := func(id, session string, temps ...string) metering.Event {
			e := metering.Event{ID: id, Subject: pharmaID, Time: rfc(s.Add(4 * time.Hour)), Data: metering.Data{
				Contract: cold, Session: session, Start: rfc(s), End: rfc(s.Add(4 * time.Hour))}}
			for i, v := range temps {
				e.Data.Readings = append(e.Data.Readings, metering.Reading{Time: rfc(s.Add(time.Duration(i+1) * time.Hour)), Value: v})
			}
			return e
		}
		truck.send(t, ctx, startEv("ship-1-start", "ship-1"), startEv("ship-2-start", "ship-2"))
		h.drained(t, ctx)
		truck.send(t, ctx, endEv("ship-1-end", "ship-1", "4.5", "5.1", "6.3", "6.0"),
			endEv("ship-2-end", "ship-2", "4.5", "5.1", "8.3", "6.0"))
		// Released: 25 EUR at 1,100,000 msat/EUR. Refunded: nothing to
		// pay, so no receipt.
		assertPaid(t, truck.receipts(t, "ship-1-end"), cold, 27_500_000)
		h.drained(t, ctx)
		in := h.income(t, ctx, truck.id)
		// Both holds resolved; the refunded shipment's is withheld by the
		// contract, which is not unpaid.
		if in.Earned+in.Fees != 27_500_000 || in.Held != 0 || in.Unpaid != 0 || in.Withheld != 27_500_000 || in.Owed != 0 {
			t.Fatalf("cold chain income %+v: want 27,500,000 paid, 27,500,000 withheld, nothing unpaid", in)
		}
		if p := pharma.paid(t); p != 27_500_000 {
			t.Fatalf("pharma paid %d msat, want only the released shipment", p)
		}
		uses = append(uses, charge{truck, []metering.Event{endEv("ship-1-end", "ship-1")}, 27_500_000})
	})
	if t.Failed() {
		return
	}

	t.Run("ConservationToTheMsat", func(t *testing.T) {
		h.drained(t, ctx)
		var paid, earned, fees msat.Amount
		for _, py := range payers {
			paid += py.paid(t)
		}
		seen := map[string]bool{}
		var want msat.Amount
		for _, u := range uses {
			want += u.total
			if seen[u.prov.id] {
				continue
			}
			seen[u.prov.id] = true
			in := h.income(t, ctx, u.prov.id)
			if in.Owed != 0 {
				t.Fatalf("%s is still owed %d msat", u.prov.id, in.Owed)
			}
			earned += in.Earned
			fees += in.Fees
		}
		if paid != want || earned+fees != paid || fees == 0 {
			t.Fatalf("payers paid %d msat, providers earned %d + hub fees %d = %d; priced %d", paid, earned, fees, earned+fees, want)
		}
		t.Logf("conservation: payers paid %d msat = providers earned %d + hub fees %d", paid, earned, fees)
	})

	t.Run("ExactlyOnce/SameEventThreeTimes", func(t *testing.T) {
		at := rfc(now.UTC().Add(-time.Minute))
		e := metering.Event{ID: "mb-3", Subject: routerID, Time: at, Data: metering.Data{Contract: bw, Quantity: "1", Unit: "MB"}}
		before := h.usageMsgs(t, ctx)
		for range 3 {
			uplink.send(t, ctx, e)
		}
		if got := h.usageMsgs(t, ctx) - before; got != 1 {
			t.Fatalf("the usage stream took %d copies, want 1 (JetStream dedup)", got)
		}
		// 1 MB at 20 msat/MB (past 1000 MB this month).
		assertPaid(t, uplink.receipts(t, e.ID), bw, 20)
	})
	t.Run("ExactlyOnce/ReplayAfterDedupWindow", func(t *testing.T) {
		e := metering.Event{ID: "passage-1", Subject: carID, Time: uses[1].events[0].Time, Data: uses[1].events[0].Data}
		time.Sleep(1500 * time.Millisecond) // past --dedup-window 1s
		before := h.usageMsgs(t, ctx)
		gantry.send(t, ctx, e)
		if got := h.usageMsgs(t, ctx) - before; got != 1 {
			t.Fatalf("the replay past the window was not stored (%d), so this shows nothing", got)
		}
		h.drained(t, ctx)
		if in := h.income(t, ctx, gantry.id); in.Events != 1 || in.Earned+in.Fees != 60_000 {
			t.Fatalf("replayed toll charged again: %+v", in)
		}
	})

	t.Run("ErrPermission_OtherProvidersSubject", func(t *testing.T) {
		if err := gantry.nc.Publish(metering.UsageSubject(cp.id), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		_ = gantry.nc.Flush()
		select {
		case err := <-gantry.natsErr:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), metering.UsageSubject(cp.id)) {
				t.Fatalf("got %v, want a publish permission violation on %s", err, metering.UsageSubject(cp.id))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no permission error publishing on another provider's subject")
		}
	})

	t.Run("DeadLetters", func(t *testing.T) {
		at := rfc(now.UTC().Add(-time.Minute))
		passage := func(id, subject, contract string) metering.Event {
			return metering.Event{ID: id, Subject: subject, Time: at, Data: metering.Data{Contract: contract, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
		}
		// Forged: signed by a key that is not the provider's.
		forger, _ := btcec.NewPrivateKey()
		fm, err := m2mclient.NewMeter(m2mclient.MeterConfig{Conn: gantry.nc, ProviderID: gantry.id, Key: forger, HubKey: h.hubKey,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer fm.Close()
		if err := fm.Meter(ctx, passage("forged-1", carID, flat)); err != nil {
			t.Fatal(err)
		}
		gantry.send(t, ctx, passage("nocontract-1", carID, strings.Repeat("ab", 32)))
		_, revokedID := h.enrol(t, ctx, "stolen-car", hub.RolePayer)
		if _, err := h.admin.Revoke(ctx, revokedID, "stolen"); err != nil {
			t.Fatal(err)
		}
		gantry.send(t, ctx, passage("revoked-dev-1", revokedID, flat))
		// A provider revoked after its credentials were issued: its
		// NATS user may still publish, the hub refuses the events.
		gone := h.addProvider(t, ctx, nil, "decommissioned")
		if _, err := h.admin.Revoke(ctx, gone.id, "decommissioned"); err != nil {
			t.Fatal(err)
		}
		// hubd removes a revoked provider's NATS user, so the publish is
		// normally refused outright; Meter would retry until its context
		// ends, so give it a short one.
		goneCtx, cancelGone := context.WithTimeout(ctx, 5*time.Second)
		goneErr := gone.meter.Meter(goneCtx, passage("revoked-prov-1", carID, flat))
		cancelGone()

		for _, c := range []struct{ prov, id, reason string }{
			{gantry.id, "forged-1", metering.ReasonSignature},
			{gantry.id, "nocontract-1", charging.RejectUnknownContract},
			{gantry.id, "revoked-dev-1", charging.RejectRevoked},
		} {
			if reason, detail := h.deadLetter(t, ctx, c.prov, c.id); reason != c.reason {
				t.Fatalf("%s dead-lettered %q (%s), want %q", c.id, reason, detail, c.reason)
			}
		}
		// Revoking the provider removed its NATS user before the admin
		// call returned, so nothing it publishes reaches the stream.
		if goneErr == nil {
			t.Fatal("a revoked provider could still publish")
		}
		t.Logf("the revoked provider could not publish: %v", goneErr)
	})

	t.Run("SecurityRuleFreezesFlooder", func(t *testing.T) {
		// The toll contract allows a device 4 passages a minute.
		_, floodID := h.enrol(t, ctx, "cloned-tag", hub.RolePayer)
		at := rfc(now.UTC().Add(-time.Minute))
		var evs []metering.Event
		for i := range 5 {
			evs = append(evs, metering.Event{ID: fmt.Sprintf("flood-%d", i), Subject: floodID, Time: at,
				Data: metering.Data{Contract: toll, Quantity: "1", Unit: "passage", VehicleClass: "car"}})
		}
		gantry.send(t, ctx, evs...)
		if reason, detail := h.deadLetter(t, ctx, gantry.id, "flood-4"); reason != charging.RejectSecurity || !strings.Contains(detail, "max_event_rate") {
			t.Fatalf("fifth passage dead-lettered %q (%s), want %s", reason, detail, charging.RejectSecurity)
		}
		d, err := h.admin.Device(ctx, floodID)
		if err != nil || d.Status != hub.StatusFrozen {
			t.Fatalf("flooding device is %+v (%v), want frozen", d.Status, err)
		}
		if g, err := h.admin.Device(ctx, gantry.id); err != nil || g.Status != hub.StatusActive {
			t.Fatalf("the gantry is %v (%v): the rule targets the device", g.Status, err)
		}
		var entries []hub.AuditEntry
		if err := json.Unmarshal([]byte(mustHubctl(t, dir, "--json", "audit", "list")), &entries); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range entries {
			if e.Kind == hub.AuditFreeze && e.Subject == floodID && e.Actor == "system" {
				found = strings.Contains(string(e.Detail), "max_event_rate")
			}
		}
		if !found {
			t.Fatalf("no device.freeze audit entry by the system for %s naming the rule", floodID)
		}
	})

	t.Run("Kill9WhileBatchInFlight", func(t *testing.T) {
		// A payer without a channel: its charges are recorded unpaid, so
		// counting them counts charges, whatever happens to payments.
		_, truckerID := h.enrol(t, ctx, "rental-car", hub.RolePayer)
		meterer := h.addProvider(t, ctx, nil, "parking-gate")
		at := rfc(now.UTC().Add(-time.Minute))
		const n = 3000 // three messages of 1000
		evs := make([]metering.Event, n)
		for i := range evs {
			evs[i] = metering.Event{ID: fmt.Sprintf("gate-%d", i), Subject: truckerID, Time: at,
				Data: metering.Data{Contract: flat, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
		}
		pubCtx, stopPub := context.WithCancel(ctx)
		pubDone := make(chan error, 1)
		go func() { pubDone <- meterer.meter.Meter(pubCtx, evs...) }()
		// Kill hubd the moment the intake holds a delivered message it has
		// not acknowledged: a batch is being charged.
		cons, err := h.js.Consumer(ctx, metering.UsageStream, natsintake.DefaultConsumer)
		if err != nil {
			t.Fatal(err)
		}
		inFlight := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			ci, err := cons.Info(ctx)
			if err == nil && ci.NumAckPending > 0 {
				inFlight = true
				break
			}
			time.Sleep(time.Millisecond)
		}
		h.p.Kill()
		stopPub()
		<-pubDone
		if !inFlight {
			t.Fatal("never saw a batch in flight")
		}
		h.hub.Close()
		h.start()
		// The intake's unacknowledged messages come back after
		// JetStream's ack wait (natsintake's default, 30 s; hubd has no
		// flag for it), so this wait is long.
		restarted := time.Now()
		h.drainedWithin(t, ctx, 45*time.Second)
		t.Logf("after the restart the intake caught up in %v", time.Since(restarted).Round(time.Millisecond))
		if in := h.income(t, ctx, meterer.id); in.Events > n {
			t.Fatalf("after kill -9 and restart: %d charges for %d events", in.Events, n)
		}
		// The provider resends everything (it cannot know what was
		// stored before the kill) on a new connection, same ids: what
		// was charged is found a duplicate, the rest is charged now.
		h.connectProvider(t, ctx, meterer)
		meterer.send(t, ctx, evs...)
		h.drained(t, ctx)
		if in := h.income(t, ctx, meterer.id); in.Events != n || in.Unpaid != n*1000 {
			t.Fatalf("after kill -9, restart and resend: %d charges, %d msat unpaid; want %d and %d", in.Events, in.Unpaid, n, n*1000)
		}
	})
	t.Logf("metering end to end took %v", time.Since(start).Round(time.Millisecond))
}

// assertPaid checks that receipts, already verified by the client (hub
// signature, payee, events root), name contract and pay total.
func assertPaid(t *testing.T, rs []m2mclient.Receipt, contract string, total msat.Amount) {
	t.Helper()
	var sum msat.Amount
	for _, r := range rs {
		if hex.EncodeToString(r.Contract[:]) != contract {
			t.Fatalf("receipt for contract %x, want %s", r.Contract, contract)
		}
		sum += r.Amount
	}
	if sum != total {
		t.Fatalf("receipts pay %d msat, want %d", sum, total)
	}
}
