package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/nats-io/nats.go"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// demoCreditLimit is hubd's per-channel credit limit in the demo: far above
// what is charged between two payment flushes, so the EV session (3.2M
// msat) is paid rather than turned away as beyond credit (the default is
// 10,000 msat).
const demoCreditLimit = "100000000"

// The contracts the demo publishes: the examples of package contracts
// (contracts/testdata/examples, worked out in docs/contracts.md), and the
// cold chain with a refund on breach, so one shipment releases and one
// refunds.
var demoContracts = map[string]string{
	"ev_charging": `{"kind":"ev_charging","version":1,"id":"fastcharge-nl-2026","currency":"EUR","rate_msat_per_unit":"1100000",
 "fee":{"bps":"100","per_event_msat":"0"},
 "security":[{"rule":"max_event_rate","target":"provider","limit":"120","window_seconds":"60"},{"rule":"reading_bounds","target":"provider","min":"0","max":"400"}],
 "ev_charging":{"time_zone":"Europe/Amsterdam","min_price":{"excl_vat":"0.50","incl_vat":"0.605"},"elements":[
  {"price_components":[{"type":"FLAT","price":"0.50","vat":"21","step_size":"1"}]},
  {"price_components":[{"type":"ENERGY","price":"0.30","vat":"21","step_size":"1"},{"type":"TIME","price":"1.20","vat":"21","step_size":"60"}],"restrictions":{"start_time":"07:00","end_time":"23:00"}},
  {"price_components":[{"type":"ENERGY","price":"0.22","vat":"21","step_size":"1"},{"type":"TIME","price":"0.60","vat":"21","step_size":"60"}],"restrictions":{"start_time":"23:00","end_time":"07:00"}},
  {"price_components":[{"type":"PARKING_TIME","price":"3.00","vat":"21","step_size":"300"}],"restrictions":{"start_time":"09:00","end_time":"18:00","day_of_week":["MONDAY","TUESDAY","WEDNESDAY","THURSDAY","FRIDAY"]}}]}}`,
	"toll": `{"kind":"toll","version":1,"id":"ring-road-oslo","currency":"msat","fee":{"bps":"50"},
 "security":[{"rule":"max_event_rate","target":"device","limit":"4","window_seconds":"60"}],
 "toll":{"time_zone":"Europe/Oslo","bands":[
  {"name":"morning-peak","start_time":"06:30","end_time":"09:00","day_of_week":["MONDAY","TUESDAY","WEDNESDAY","THURSDAY","FRIDAY"],"prices":{"car":"60000","truck":"250000"}},
  {"name":"evening-peak","start_time":"15:00","end_time":"17:00","day_of_week":["MONDAY","TUESDAY","WEDNESDAY","THURSDAY","FRIDAY"],"prices":{"car":"60000","truck":"250000"}},
  {"name":"night","start_time":"22:00","end_time":"06:00","prices":{"truck":"100000"}}],
  "default":{"car":"40000","truck":"160000","motorcycle":"10000"}}}`,
	"bandwidth": `{"kind":"bandwidth","version":1,"id":"mesh-uplink-monthly","currency":"msat","fee":{"bps":"200","per_event_msat":"10"},
 "security":[{"rule":"max_event_rate","target":"provider","limit":"600","window_seconds":"60"}],
 "bandwidth":{"time_zone":"UTC","window":"month","tiers":[{"up_to_mb":"1000","price_per_mb":"50"},{"up_to_mb":"10000","price_per_mb":"20"},{"price_per_mb":"5"}]}}`,
	"energy": `{"kind":"energy","version":1,"id":"street-microgrid-p2p","currency":"EUR","rate_msat_per_unit":"1100000","fee":{"bps":"100"},
 "security":[{"rule":"reading_bounds","target":"provider","min":"0","max":"25"}],
 "energy":{"time_zone":"Europe/Amsterdam","interval_minutes":"15","price_per_kwh":"0.12","bands":[
  {"start_time":"17:00","end_time":"21:00","price_per_kwh":"0.28"},
  {"start_time":"11:00","end_time":"15:00","day_of_week":["SATURDAY","SUNDAY"],"price_per_kwh":"0.05"}]}}`,
	"conditional_release": `{"kind":"conditional_release","version":1,"id":"coldchain-vaccines-2to8-refund","currency":"EUR","rate_msat_per_unit":"1100000",
 "fee":{"bps":"100","per_event_msat":"1000"},
 "security":[{"rule":"reading_bounds","target":"provider","min":"-80","max":"60"}],
 "conditional_release":{"amount":"25.00","quantity":"temperature_c","min":"2","max":"8","min_readings":"4","on_breach":"refund"}}`,
}

// meteringSummary is what the metering part of the demo charged.
type meteringSummary struct {
	Events []meteredEvent `json:"events"`
	// PaidMsat is what the payers' channels paid, by their own records;
	// EarnedMsat and FeesMsat are the providers' and the hub's parts of
	// it, as the admin API reports them. PaidMsat = EarnedMsat + FeesMsat.
	PaidMsat   uint64 `json:"paid_msat"`
	EarnedMsat uint64 `json:"earned_msat"`
	FeesMsat   uint64 `json:"fees_msat"`
	Receipts   int    `json:"receipts"`
	// Audited counts the operator actions of this part that the audit log
	// must hold (enrolments, NATS credentials, published contracts).
	Audited uint64 `json:"audited_actions"`
}

// meteredEvent is one row of the demo's metering table.
type meteredEvent struct {
	Event      string `json:"event"`
	Kind       string `json:"kind"`
	AmountMsat uint64 `json:"amount_msat"`
	FeeMsat    uint64 `json:"fee_msat"`
	Receipt    string `json:"receipt,omitempty"` // hex prefix of the receipt id; empty when nothing was due
}

// demoProvider is a provider with its NATS credentials and client Meter.
type demoProvider struct {
	id      string
	meter   *m2mclient.Meter
	notices <-chan m2mclient.Notice
}

// demoPayer is a device with one session, a Device that auto-pays, and a
// channel.
type demoPayer struct {
	id  string
	key *btcec.PrivateKey
	dev *m2mclient.Device
	ch  btcwire.OutPoint
}

// meteringDemo enrols providers with NATS credentials, publishes the
// example contracts, funds payers' channels and meters one event of each
// kind through the Go client library over NATS; the hub charges each to
// the payer's channel, the payer's Device pays automatically, and the
// provider gets a verified receipt.
func meteringDemo(ctx context.Context, say func(string, ...any), dir string, rt datadir.Runtime,
	hubKey *btcec.PublicKey, admin *httpapi.Client, sum *summary) error {

	ms := &sum.Metering
	quiet := slog.New(slog.DiscardHandler)
	say("8. metering: the operator publishes the example contracts (hubctl contract publish)")
	hashes := map[string]string{}
	for _, kind := range []string{"ev_charging", "toll", "bandwidth", "energy", "conditional_release"} {
		rec, err := admin.PublishContract(ctx, []byte(demoContracts[kind]))
		if err != nil {
			return fmt.Errorf("publish %s: %w", kind, err)
		}
		hashes[kind] = rec.Hash.String()
		ms.Audited++
		say("   %-20s %s…", kind, rec.Hash.String()[:16])
	}

	say("   providers get NATS credentials (hubctl provider add); two households are payers and providers on one session each")
	// closers are the open clients, closed in reverse order on return.
	var closers []func()
	newKey := func() *btcec.PrivateKey {
		k, _ := btcec.NewPrivateKey()
		return k
	}
	addProvider := func(key *btcec.PrivateKey, kind string) (*demoProvider, error) {
		pr, err := admin.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(key.PubKey()), Owner: "demo", Kind: kind})
		if err != nil {
			return nil, fmt.Errorf("add provider %s: %w", kind, err)
		}
		if pr.NATS == nil {
			return nil, errors.New("hubd issued no NATS credentials")
		}
		nc, err := m2mclient.ConnectNATS(rt.NATSURL, pr.Device.ID, []byte(pr.NATS.Seed), nats.Name("demo "+kind))
		if err != nil {
			return nil, err
		}
		m, err := m2mclient.NewMeter(m2mclient.MeterConfig{Conn: nc, ProviderID: pr.Device.ID, Key: key, HubKey: hubKey, Logger: quiet})
		if err != nil {
			nc.Close()
			return nil, err
		}
		notices, err := m.Receipts(ctx)
		if err != nil {
			_ = m.Close()
			nc.Close()
			return nil, err
		}
		closers = append(closers, func() { _ = m.Close(); nc.Close() })
		return &demoProvider{id: pr.Device.ID, meter: m, notices: notices}, nil
	}
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	stateDir, err := os.MkdirTemp("", "m2mhub-demo-meters-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	newPayer := func(kind string, roles ...hub.Role) (*demoPayer, error) {
		key := newKey()
		d, err := admin.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(key.PubKey()), Roles: roles, Owner: "demo", Kind: kind})
		if err != nil {
			return nil, fmt.Errorf("enrol %s: %w", kind, err)
		}
		ms.Audited++
		s, err := m2mclient.Dial(ctx, rt.P2PAddr, hubKey, key, m2mclient.WithLogger(quiet))
		if err != nil {
			return nil, err
		}
		dev, err := m2mclient.NewDevice(s, m2mclient.DeviceConfig{
			Key: key, HubKey: hubKey, Params: &chaincfg.RegressionNetParams, Dir: filepath.Join(stateDir, d.ID), Logger: quiet,
			Policy: m2mclient.Policy{MaxPerPayment: 50_000_000, MaxPerHour: 100_000_000},
		})
		if err != nil {
			s.Close()
			return nil, err
		}
		closers = append(closers, func() { _ = dev.Close(); _ = s.Close() })
		return &demoPayer{id: d.ID, key: key, dev: dev}, nil
	}

	cp, err := addProvider(newKey(), "charger")
	if err != nil {
		return err
	}
	gantry, err := addProvider(newKey(), "toll-gantry")
	if err != nil {
		return err
	}
	uplink, err := addProvider(newKey(), "mesh-router")
	if err != nil {
		return err
	}
	truck, err := addProvider(newKey(), "reefer-truck")
	if err != nil {
		return err
	}
	ms.Audited += 4 * 2 // each: enrolment and NATS credentials
	var payers []*demoPayer
	for _, p := range []struct {
		kind  string
		roles []hub.Role
	}{{"car", []hub.Role{hub.RolePayer}}, {"router", []hub.Role{hub.RolePayer}}, {"pharmacy", []hub.Role{hub.RolePayer}},
		{"household", []hub.Role{hub.RolePayer, hub.RoleProvider}}, {"household", []hub.Role{hub.RolePayer, hub.RoleProvider}}} {
		py, err := newPayer(p.kind, p.roles...)
		if err != nil {
			return err
		}
		payers = append(payers, py)
	}
	car, router, pharmacy, hhA, hhB := payers[0], payers[1], payers[2], payers[3], payers[4]
	// The households' NATS credentials, for the keys their sessions use:
	// one identity buys through its Device and sells through its Meter.
	sellerA, err := addProvider(hhA.key, "household")
	if err != nil {
		return err
	}
	sellerB, err := addProvider(hhB.key, "household")
	if err != nil {
		return err
	}
	ms.Audited += 2

	say("   5 payers open 1,000,000 sat channels, all funded by one regtest transaction")
	if err := fundDemoChannels(ctx, dir, rt, payers); err != nil {
		return err
	}

	say("   providers meter signed CloudEvents over NATS; the hub prices, charges the payer's channel (auto-paid) and receipts:")
	now := time.Now()
	at := func(zone string, wd time.Weekday, hh, mm int) time.Time { return lastWeekday(now, zone, wd, hh, mm) }
	evStart := at("Europe/Amsterdam", time.Wednesday, 22, 30)
	recent := now.UTC().Add(-time.Minute)
	ship := now.UTC().Add(-5 * time.Hour)
	shipEnd := func(id, session string, temps ...string) metering.Event {
		e := metering.Event{ID: id, Subject: pharmacy.id, Time: rfc(ship.Add(4 * time.Hour)), Data: metering.Data{
			Contract: hashes["conditional_release"], Session: session, Start: rfc(ship), End: rfc(ship.Add(4 * time.Hour))}}
		for i, v := range temps {
			e.Data.Readings = append(e.Data.Readings, metering.Reading{Time: rfc(ship.Add(time.Duration(i+1) * time.Hour)), Value: v})
		}
		return e
	}
	trade := at("Europe/Amsterdam", time.Wednesday, 17, 45)
	type use struct {
		label, kind string
		prov        *demoProvider
		ev          metering.Event
		receipted   bool
	}
	uses := []use{
		{"EV session 6 kWh, Wed 22:30-23:30", "ev_charging", cp, metering.Event{ID: "ev-session-1", Subject: car.id, Time: rfc(evStart.Add(time.Hour)),
			Data: metering.Data{Contract: hashes["ev_charging"], Session: "s-1", Start: rfc(evStart), End: rfc(evStart.Add(time.Hour)),
				Periods: []metering.Period{{Start: rfc(evStart), EnergyKWh: "6", PowerKW: "11", State: "charging"}}}}, true},
		{"toll passage, car, Mon 07:15", "toll", gantry, metering.Event{ID: "passage-1", Subject: car.id,
			Time: rfc(at("Europe/Oslo", time.Monday, 7, 15)),
			Data: metering.Data{Contract: hashes["toll"], Quantity: "1", Unit: "passage", VehicleClass: "car"}}, true},
		{"bandwidth 20 MB", "bandwidth", uplink, metering.Event{ID: "mb-1", Subject: router.id, Time: rfc(recent),
			Data: metering.Data{Contract: hashes["bandwidth"], Quantity: "20", Unit: "MB"}}, true},
		{"energy A→B 1 kWh, 17:45-18:00", "energy", sellerA, metering.Event{ID: "trade-a-b", Subject: hhB.id, Time: rfc(trade),
			Data: metering.Data{Contract: hashes["energy"], Quantity: "1", Unit: "kWh", SellerMeter: hhA.id, BuyerMeter: hhB.id}}, true},
		{"energy B→A 0.5 kWh, 17:45-18:00", "energy", sellerB, metering.Event{ID: "trade-b-a", Subject: hhA.id, Time: rfc(trade),
			Data: metering.Data{Contract: hashes["energy"], Quantity: "0.5", Unit: "kWh", SellerMeter: hhB.id, BuyerMeter: hhA.id}}, true},
		{"cold chain kept 2-8 °C: release", "conditional_release", truck, shipEnd("ship-1-end", "ship-1", "4.5", "5.1", "6.3", "6.0"), true},
		{"cold chain hit 8.3 °C: refund", "conditional_release", truck, shipEnd("ship-2-end", "ship-2", "4.5", "5.1", "8.3", "6.0"), false},
	}

	// A shipment's start event holds the amount; its end event settles it.
	if err := truck.meter.Meter(ctx,
		metering.Event{ID: "ship-1-start", Subject: pharmacy.id, Time: rfc(ship), Data: metering.Data{Contract: hashes["conditional_release"], Session: "ship-1", Start: rfc(ship)}},
		metering.Event{ID: "ship-2-start", Subject: pharmacy.id, Time: rfc(ship), Data: metering.Data{Contract: hashes["conditional_release"], Session: "ship-2", Start: rfc(ship)}},
	); err != nil {
		return err
	}
	// The hub opens a job per start; give the intake a moment before the
	// ends (the end of a job that is not open yet is refused).
	if err := waitIncome(ctx, admin, truck.id, func(in hub.Income) bool { return in.Held == 2*27_500_000 }); err != nil {
		return fmt.Errorf("cold chain holds: %w", err)
	}
	for _, u := range uses {
		if err := u.prov.meter.Meter(ctx, u.ev); err != nil {
			return fmt.Errorf("meter %s: %w", u.ev.ID, err)
		}
	}
	receipts := map[string]*m2mclient.Receipt{}
	for _, u := range uses {
		if !u.receipted {
			continue
		}
		r, err := awaitReceipt(u.prov, u.ev.ID)
		if err != nil {
			return err
		}
		receipts[u.ev.ID] = r
		ms.Receipts++
	}
	if err := waitIncome(ctx, admin, truck.id, func(in hub.Income) bool { return in.Held == 0 }); err != nil {
		return fmt.Errorf("cold chain refund: %w", err)
	}

	// Fees come from the admin API's income per provider; each provider
	// here has one paid event (the truck's refund pays nothing).
	seen := map[string]bool{}
	say("   %-34s %-20s %12s %10s  %s", "event", "kind", "amount msat", "fee msat", "receipt")
	for _, u := range uses {
		row := meteredEvent{Event: u.label, Kind: u.kind}
		if r := receipts[u.ev.ID]; r != nil {
			id := r.ID()
			row.AmountMsat, row.Receipt = uint64(r.Amount), hex.EncodeToString(id[:6])
			in, err := admin.Income(ctx, u.prov.id, time.Time{}, time.Now().Add(time.Hour))
			if err != nil {
				return err
			}
			row.FeeMsat = uint64(in.Fees)
			if !seen[u.prov.id] {
				seen[u.prov.id] = true
				ms.EarnedMsat += uint64(in.Earned)
				ms.FeesMsat += uint64(in.Fees)
			}
		}
		ms.Events = append(ms.Events, row)
		rc := row.Receipt + "…"
		if row.Receipt == "" {
			rc = "none (nothing due)"
		}
		say("   %-34s %-20s %12d %10d  %s", row.Event, row.Kind, row.AmountMsat, row.FeeMsat, rc)
	}
	for _, py := range payers {
		b, err := py.dev.Balance(py.ch)
		if err != nil {
			return err
		}
		ms.PaidMsat += uint64(b.Paid)
	}
	say("   payers paid %d msat = providers earned %d + hub fees %d", ms.PaidMsat, ms.EarnedMsat, ms.FeesMsat)
	if ms.PaidMsat != ms.EarnedMsat+ms.FeesMsat {
		return fmt.Errorf("metering does not conserve: paid %d, earned %d + fees %d", ms.PaidMsat, ms.EarnedMsat, ms.FeesMsat)
	}
	return nil
}

// fundDemoChannels opens a channel for each payer, pays all of them in one
// transaction from the hub's regtest wallet (a faucet) and waits for them
// to be ready.
func fundDemoChannels(ctx context.Context, dir string, rt datadir.Runtime, payers []*demoPayer) error {
	quiet := slog.New(slog.DiscardHandler)
	chain, err := btcdchain.New(btcdchain.Config{
		Host: rt.Btcd.Host, User: rt.Btcd.User, Pass: rt.Btcd.Pass, CertPath: rt.Btcd.CertPath,
		Params: &chaincfg.RegressionNetParams, Logger: quiet,
	})
	if err != nil {
		return err
	}
	defer chain.Close()
	faucet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: filepath.Join(dir, datadir.WalletKeyFile), Chain: chain, Logger: quiet,
	})
	if err != nil {
		return err
	}
	height, err := chain.BlockCount(ctx)
	if err != nil {
		return err
	}
	const capacity = btcutil.Amount(1_000_000)
	pending := make([]*m2mclient.PendingChannel, len(payers))
	outs := make([]*btcwire.TxOut, len(payers))
	for i, py := range payers {
		if pending[i], err = py.dev.OpenChannel(ctx, capacity, uint32(height)+1000); err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		outs[i] = btcwire.NewTxOut(int64(capacity), pending[i].PkScript)
	}
	txid, err := faucet.SendMany(ctx, outs)
	if err != nil {
		return fmt.Errorf("fund channels: %w", err)
	}
	if _, err := chain.Mine(ctx, 1); err != nil {
		return err
	}
	for i, py := range payers {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ch, err := py.dev.Funded(octx, pending[i].PendingID, btcwire.OutPoint{Hash: txid, Index: uint32(i)})
		cancel()
		if err != nil {
			return fmt.Errorf("channel of %s: %w", py.id, err)
		}
		py.ch = ch.ID
	}
	return nil
}

// awaitReceipt reads p's notices until a verified receipt covers id.
func awaitReceipt(p *demoProvider, id string) (*m2mclient.Receipt, error) {
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n, ok := <-p.notices:
			if !ok {
				return nil, errors.New("receipt stream ended")
			}
			if n.Unpaid != nil {
				return nil, fmt.Errorf("%s: unpaid (%s) for %s", p.id, n.Unpaid.Reason, strings.Join(n.Unpaid.EventIDs, ","))
			}
			for _, e := range n.Receipt.Events {
				if e == id {
					return n.Receipt, nil
				}
			}
		case <-timeout:
			return nil, fmt.Errorf("%s: no receipt for %s", p.id, id)
		}
	}
}

// waitIncome polls a provider's income until ok holds, for up to 10 s.
func waitIncome(ctx context.Context, admin *httpapi.Client, provider string, ok func(hub.Income) bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, err := admin.Income(ctx, provider, time.Time{}, time.Now().Add(time.Hour))
		if err != nil {
			return err
		}
		if ok(in) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("income of %s is %+v", provider, in)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastWeekday is the latest local hh:mm in zone on weekday wd before today
// (at most 8 days back): the tariffs' figures assume that weekday, and the
// hub refuses events older than 30 days.
func lastWeekday(now time.Time, zone string, wd time.Weekday, hh, mm int) time.Time {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		loc = time.UTC // contracts embeds time/tzdata, so this does not happen
	}
	n := now.In(loc)
	for d := 1; d <= 8; d++ {
		if day := n.AddDate(0, 0, -d); day.Weekday() == wd {
			return time.Date(day.Year(), day.Month(), day.Day(), hh, mm, 0, 0, loc)
		}
	}
	return n
}

func rfc(t time.Time) string { return t.Format(time.RFC3339) }
