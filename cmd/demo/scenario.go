package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/metering"
)

// demoCreditLimit is hubd's per-channel credit limit in the demo: above the
// largest single charge (the cold-chain shipment, 165,000,000 msat), so it
// is paid rather than turned away as beyond credit (the default is 10,000
// msat, for streams of small events).
const demoCreditLimit = "500000000"

// The contracts the demo publishes: the examples of package contracts
// (contracts/testdata/examples, worked out in docs/contracts.md), and a
// cold chain with a refund on breach, so one shipment releases and one
// refunds. The shipment is worth 150 EUR with a 2% hub fee: the epoch's
// hub fees must pay the settlement's mining fee (2 sat/vB) before a
// provider without a channel can be paid out (docs/settlement-run.md).
var demoContracts = map[string]string{
	// The charge point's tariff is an OCPI 2.2.1 Tariff object, published
	// as it is (hubctl contract publish with --rate-msat-per-unit and
	// --time-zone; evEnvelope): the prices of the ev_charging example,
	// without its hub fee, since an OCPI file names none.
	"ev_charging": `{"country_code":"NL","party_id":"FCN","id":"fastcharge-2026","currency":"EUR","type":"REGULAR",
 "tariff_alt_text":[{"language":"en","text":"0.50 EUR start; 0.30 EUR/kWh and 1.20 EUR/h (0.22 and 0.60 from 23:00 to 07:00); parking 3.00 EUR/h on weekdays 09:00-18:00."}],
 "min_price":{"excl_vat":0.50,"incl_vat":0.605},"elements":[
  {"price_components":[{"type":"FLAT","price":0.50,"vat":21,"step_size":1}]},
  {"price_components":[{"type":"ENERGY","price":0.30,"vat":21,"step_size":1},{"type":"TIME","price":1.20,"vat":21,"step_size":60}],"restrictions":{"start_time":"07:00","end_time":"23:00"}},
  {"price_components":[{"type":"ENERGY","price":0.22,"vat":21,"step_size":1},{"type":"TIME","price":0.60,"vat":21,"step_size":60}],"restrictions":{"start_time":"23:00","end_time":"07:00"}},
  {"price_components":[{"type":"PARKING_TIME","price":3.00,"vat":21,"step_size":300}],"restrictions":{"start_time":"09:00","end_time":"18:00","day_of_week":["MONDAY","TUESDAY","WEDNESDAY","THURSDAY","FRIDAY"]}}],
 "last_updated":"2026-01-05T08:00:00Z"}`,
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
 "fee":{"bps":"200","per_event_msat":"1000"},
 "security":[{"rule":"reading_bounds","target":"provider","min":"-80","max":"60"}],
 "conditional_release":{"amount":"150.00","quantity":"temperature_c","min":"2","max":"8","min_readings":"4","on_breach":"refund"}}`,
}

// evEnvelope is what the OCPI tariff file leaves out, given as hubctl's
// --rate-msat-per-unit and --time-zone.
var evEnvelope = contracts.OCPIEnvelope{RateMsatPerUnit: contracts.MustDec("1100000"), TimeZone: "Europe/Amsterdam"}

// contractDoc is the contract document of kind, as hubctl contract
// publish sends it: an OCPI tariff file wrapped in its envelope.
func contractDoc(kind string) ([]byte, error) {
	doc := []byte(demoContracts[kind])
	if contracts.IsOCPI(doc) {
		return contracts.WrapOCPI(doc, evEnvelope)
	}
	return doc, nil
}

// demoKinds is the order contracts are published and shown in.
var demoKinds = []string{"ev_charging", "toll", "bandwidth", "energy", "conditional_release"}

// scenarioRow is one priced use of the demo's table.
type scenarioRow struct {
	Scenario   string `json:"scenario"`
	Use        string `json:"use"`
	Payer      string `json:"payer"`
	Provider   string `json:"provider"`
	AmountMsat uint64 `json:"amount_msat"`
	FeeMsat    uint64 `json:"fee_msat"`
}

// participant is one device taking part, with what it paid and earned by
// the demo's own records: payers' channel states and providers' verified
// receipts priced with the contracts.
type participant struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	Role       string `json:"role"`
	PaidMsat   uint64 `json:"paid_msat"`
	EarnedMsat uint64 `json:"earned_msat"`
	NetMsat    int64  `json:"net_msat"`
	// Channel is the payer's channel before settlement; PayoutScript the
	// provider's payout output script (hex in JSON).
	Channel      string `json:"channel,omitempty"`
	PayoutScript []byte `json:"-"`
	// Mode, SettledSat, CarriedMsat and CarryReason are the settlement's
	// view; OnChainSat what the batch moves for it, read from the chain.
	Mode        string `json:"settle_mode,omitempty"`
	SettledSat  int64  `json:"settled_sat"`
	OnChainSat  int64  `json:"onchain_sat"`
	CarriedMsat int64  `json:"carried_msat,omitempty"`
	CarryReason string `json:"carry_reason,omitempty"`
}

// scenarioSummary is what the scenarios charged.
type scenarioSummary struct {
	Rows []scenarioRow `json:"uses"`
	// EV is the charging session through the OCPP gateway and its hold.
	EV         evSummary `json:"ev_hold"`
	PaidMsat   uint64    `json:"paid_msat"`
	EarnedMsat uint64    `json:"earned_msat"`
	FeesMsat   uint64    `json:"hub_fees_msat"`
	Receipts   int       `json:"receipts"`
	// Audited counts the operator actions that the audit log must hold.
	Audited uint64 `json:"audited_actions"`
}

// payer is a device with a channel and a Device that pays automatically.
type payer struct {
	name string
	id   string
	key  *btcec.PrivateKey
	sess *m2mclient.Session
	dev  *m2mclient.Device
	ch   btcwire.OutPoint
	part *participant
}

// provider is a device selling over NATS (a Meter) with its receipts.
type provider struct {
	name    string
	id      string
	meter   *m2mclient.Meter
	notices <-chan m2mclient.Notice
	part    *participant
}

// world is everything the scenarios share.
type world struct {
	ctx     context.Context
	say     func(string, ...any)
	rt      datadir.Runtime
	hubKey  *btcec.PublicKey
	admin   *httpapi.Client
	quiet   *slog.Logger
	dir     string // client state
	parsed  map[string]*contracts.Contract
	hashes  map[string]string
	parts   []*participant
	closers []func()
	sum     *scenarioSummary
	// evReceipt is the charge point's receipt for the capture, the one
	// verified against the chain after settlement.
	evReceipt *channel.Receipt
	// cdr is the session's CDR as the hub stored it.
	cdr json.RawMessage
}

func (w *world) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
}

func (w *world) addPart(name, id, role string) *participant {
	p := &participant{Name: name, ID: id, Role: role}
	w.parts = append(w.parts, p)
	return p
}

// price prices u under the contract of kind as the hub does; the demo's
// providers use it to check their receipts and count their earnings.
func (w *world) price(kind string, u contracts.Usage) (contracts.Breakdown, error) {
	u.Contract = w.hashes[kind]
	return contracts.Price(w.parsed[kind], u)
}

// newPayer dials a session for key (enrolling it first when id is empty)
// and starts a Device on it. earnings, when set, is the Device's own
// count of what it earned as a provider.
func (w *world) newPayer(name, id string, key *btcec.PrivateKey, policy m2mclient.Policy, roles []hub.Role,
	earnings func(context.Context, uint64) (msat.Amount, error)) (*payer, error) {

	if id == "" {
		d, err := w.admin.AddDevice(w.ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(key.PubKey()), Roles: roles, Owner: "demo", Kind: name})
		if err != nil {
			return nil, fmt.Errorf("enrol %s: %w", name, err)
		}
		w.sum.Audited++
		id = d.ID
	}
	s, err := m2mclient.Dial(w.ctx, w.rt.P2PAddr, w.hubKey, key, m2mclient.WithLogger(w.quiet))
	if err != nil {
		return nil, err
	}
	// NewDevice uses the session's shared Router, so a Provider of the
	// same identity can be attached to the same connection.
	dev, err := m2mclient.NewDevice(s, m2mclient.DeviceConfig{
		Key: key, HubKey: w.hubKey, Params: &chaincfg.RegressionNetParams, Dir: filepath.Join(w.dir, id), Logger: w.quiet,
		Policy: policy, AutoAuthorize: true, Earnings: earnings,
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	w.closers = append(w.closers, func() { _ = dev.Close(); _ = s.Close() })
	role := "payer"
	if len(roles) > 1 {
		role = "payer+provider"
	}
	return &payer{name: name, id: id, key: key, sess: s, dev: dev, part: w.addPart(name, id, role)}, nil
}

// newProvider gives key NATS credentials (enrolling it as a provider, or
// only issuing credentials when part is already enrolled) and a Meter.
func (w *world) newProvider(name string, key *btcec.PrivateKey, part *participant) (*provider, error) {
	pr, err := w.admin.AddProvider(w.ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(key.PubKey()), Owner: "demo", Kind: name})
	if err != nil {
		return nil, fmt.Errorf("add provider %s: %w", name, err)
	}
	if pr.NATS == nil {
		return nil, errors.New("hubd issued no NATS credentials")
	}
	w.sum.Audited++ // NATS credentials
	if part == nil {
		w.sum.Audited++ // enrolment
		part = w.addPart(name, pr.Device.ID, "provider")
	}
	nc, err := m2mclient.ConnectNATS(w.rt.NATSURL, pr.Device.ID, []byte(pr.NATS.Seed), nats.Name("demo "+name))
	if err != nil {
		return nil, err
	}
	m, err := m2mclient.NewMeter(m2mclient.MeterConfig{Conn: nc, ProviderID: pr.Device.ID, Key: key, HubKey: w.hubKey, Logger: w.quiet})
	if err != nil {
		nc.Close()
		return nil, err
	}
	notices, err := m.Receipts(w.ctx)
	if err != nil {
		_ = m.Close()
		nc.Close()
		return nil, err
	}
	w.closers = append(w.closers, func() { _ = m.Close(); nc.Close() })
	return &provider{name: name, id: pr.Device.ID, meter: m, notices: notices, part: part}, nil
}

// setPayout gives a provider without a channel a payout address.
func (w *world) setPayout(p *participant) error {
	addr, script, err := payoutAddress()
	if err != nil {
		return err
	}
	if _, err := w.admin.SetPayout(w.ctx, p.ID, addr); err != nil {
		return fmt.Errorf("payout address of %s: %w", p.Name, err)
	}
	w.sum.Audited++
	p.PayoutScript = script
	w.say("   %-14s payout to %s", p.Name, addr)
	return nil
}

// sale is one metered use: the event a provider publishes and the usage
// the provider prices it with.
type sale struct {
	scenario, label string
	prov            *provider
	payer           *participant
	ev              metering.Event
	usage           contracts.Usage
	kind            string
	// receipted is false for a use that costs nothing (a refunded
	// shipment): the hub records it and sends no receipt.
	receipted bool
}

// meterAll publishes every sale through its provider's Meter (in order:
// bandwidth tiers depend on it), prices each with the provider's own copy
// of the contract, and waits until verified receipts cover every sale that
// costs something. The hub may pay several events of one payer with one
// payment, so receipts are checked per provider: their amounts must add
// up to the prices, to the msat.
func (w *world) meterAll(sales []sale) error {
	for _, s := range sales {
		if err := s.prov.meter.Meter(w.ctx, s.ev); err != nil {
			return fmt.Errorf("meter %s: %w", s.ev.ID, err)
		}
	}
	want := map[*provider]map[string]bool{}
	total := map[*provider]msat.Amount{}
	for _, s := range sales {
		b, err := w.price(s.kind, s.usage)
		if err != nil {
			return fmt.Errorf("price %s: %w", s.ev.ID, err)
		}
		if s.receipted != (b.TotalMsat != 0) {
			return fmt.Errorf("%s: priced %d msat, receipt expected: %v", s.ev.ID, uint64(b.TotalMsat), s.receipted)
		}
		if s.receipted {
			if want[s.prov] == nil {
				want[s.prov] = map[string]bool{}
			}
			want[s.prov][s.ev.ID] = true
			total[s.prov] += b.TotalMsat
		}
		s.prov.part.EarnedMsat += uint64(b.ProviderMsat)
		w.sum.FeesMsat += uint64(b.FeeMsat)
		w.sum.Rows = append(w.sum.Rows, scenarioRow{Scenario: s.scenario, Use: s.label, Payer: s.payer.Name, Provider: s.prov.part.Name,
			AmountMsat: uint64(b.TotalMsat), FeeMsat: uint64(b.FeeMsat)})
		w.say("   %-10s %-46s %11d msat  fee %7d", s.scenario, s.label, uint64(b.TotalMsat), uint64(b.FeeMsat))
	}
	for p, ids := range want {
		got, n, err := awaitReceipts(p, ids)
		if err != nil {
			return err
		}
		if got != total[p] {
			return fmt.Errorf("%s: receipts of %d msat, the contract prices %d", p.name, uint64(got), uint64(total[p]))
		}
		w.sum.Receipts += n
	}
	return nil
}

// awaitReceipts reads p's notices until verified receipts cover every id,
// and returns their total and count.
func awaitReceipts(p *provider, ids map[string]bool) (msat.Amount, int, error) {
	timeout := time.After(20 * time.Second)
	left := len(ids)
	var sum msat.Amount
	n := 0
	for left > 0 {
		select {
		case note, ok := <-p.notices:
			if !ok {
				return 0, 0, errors.New("receipt stream ended")
			}
			if note.Unpaid != nil {
				return 0, 0, fmt.Errorf("%s: unpaid (%s) for %s", p.name, note.Unpaid.Reason, strings.Join(note.Unpaid.EventIDs, ","))
			}
			mine := false
			for _, e := range note.Receipt.Events {
				if ids[e] {
					ids[e] = false
					left--
					mine = true
				}
			}
			if mine {
				sum += note.Receipt.Amount
				n++
			}
		case <-timeout:
			return 0, 0, fmt.Errorf("%s: %d receipts missing", p.name, left)
		}
	}
	return sum, n, nil
}

// waitIncome polls a provider's income until ok holds, for up to 10 s.
func waitIncome(ctx context.Context, admin *httpapi.Client, provider string, ok func(charging.Income) bool) error {
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

// tempDir makes the clients' state directory.
func tempDir() (string, error) { return os.MkdirTemp("", "m2mhub-demo-clients-") }
