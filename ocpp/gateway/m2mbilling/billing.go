// Package m2mbilling is the gateway's Billing over the hub's Go provider
// library: the hold through the Provider, the verified OCMF readings as
// one signed usage event over NATS through the Meter, whose id binds the
// readings into the hub's receipt and which names the hold the hub
// charges it against.
package m2mbilling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/metering/ocmf"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
)

// Holds is the part of *m2mclient.Provider the billing uses.
type Holds interface {
	RequestHold(ctx context.Context, payer string, max msat.Amount, ttl time.Duration, memo string) (m2mclient.HoldID, error)
	Release(ctx context.Context, id m2mclient.HoldID) error
}

// Meter is the part of *m2mclient.Meter the billing uses.
type Meter interface {
	Meter(ctx context.Context, events ...metering.Event) error
}

var (
	_ Holds           = (*m2mclient.Provider)(nil)
	_ Meter           = (*m2mclient.Meter)(nil)
	_ gateway.Billing = (*Billing)(nil)
)

// ErrNoSession means Readings or End came for a session Begin did not
// open.
var ErrNoSession = errors.New("m2mbilling: no such session")

// Config configures New.
type Config struct {
	// Holds and Meter are the provider's hub connections.
	Holds Holds
	Meter Meter
	// Contract is the published contract (an OCPI tariff) the sessions
	// are priced under; the hub prices the usage event with it.
	Contract *contracts.Contract
	// MeterKeys maps a station identity to its calibrated meter's public
	// key; readings are verified against it, never against a key the
	// station sends along.
	MeterKeys map[string]*ocmf.PublicKey
	// HoldMsat is the hold asked for when the tariff names no
	// preauthorize_amount.
	HoldMsat msat.Amount
	// HoldTTL is how long the hold lasts; 12 h when zero.
	HoldTTL time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Billing implements gateway.Billing.
type Billing struct {
	cfg  Config
	hash string
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // by station/transactionId
}

type session struct {
	hold     m2mclient.HoldID
	readings []*ocmf.Message
	dropped  int
}

// New returns a Billing.
func New(cfg Config) (*Billing, error) {
	if cfg.Holds == nil || cfg.Meter == nil || cfg.Contract == nil {
		return nil, errors.New("m2mbilling: needs holds, a meter and a contract")
	}
	if cfg.HoldTTL <= 0 {
		cfg.HoldTTL = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := cfg.Contract.Hash()
	return &Billing{cfg: cfg, hash: fmt.Sprintf("%x", h[:]), log: cfg.Logger, sessions: map[string]*session{}}, nil
}

func key(s gateway.Session) string { return s.Station + "/" + s.TransactionID }

// Begin asks the payer for the hold: the tariff's preauthorize_amount, or
// HoldMsat. A refusal wraps gateway.ErrRefused.
func (b *Billing) Begin(ctx context.Context, s gateway.Session) error {
	amt, ok, err := b.cfg.Contract.PreauthorizeMsat(b.cfg.Now(), "REGULAR")
	if err != nil {
		return fmt.Errorf("m2mbilling: hold size: %w", err)
	}
	if !ok {
		amt = b.cfg.HoldMsat
	}
	if amt == 0 {
		return errors.New("m2mbilling: no hold size: the tariff has no preauthorize_amount and HoldMsat is 0")
	}
	id, err := b.cfg.Holds.RequestHold(ctx, s.Payer, amt, b.cfg.HoldTTL, "ocpp "+key(s))
	if err != nil {
		if errors.Is(err, m2mclient.ErrHoldRefused) {
			return fmt.Errorf("%w: %w", gateway.ErrRefused, err)
		}
		return fmt.Errorf("m2mbilling: hold: %w", err)
	}
	b.mu.Lock()
	b.sessions[key(s)] = &session{hold: id}
	b.mu.Unlock()
	return nil
}

// Readings keeps the readings whose OCMF signature verifies against the
// station's meter key. A reading that does not parse or verify is logged
// and dead-lettered: it is never billed, and the session goes on.
func (b *Billing) Readings(ctx context.Context, s gateway.Session, signed []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ss := b.sessions[key(s)]
	if ss == nil {
		return fmt.Errorf("%w: %s", ErrNoSession, key(s))
	}
	pub := b.cfg.MeterKeys[s.Station]
	for _, raw := range signed {
		m, err := ocmf.Parse(raw)
		if err == nil {
			if pub == nil {
				err = errors.New("no meter key for the station")
			} else {
				err = m.Verify(pub)
			}
		}
		if err != nil {
			ss.dropped++
			b.log.Warn("ocmf reading dead-lettered", "session", key(s), "err", err)
			continue
		}
		ss.readings = append(ss.readings, m)
	}
	return nil
}

// End meters the session as one usage event priced by the hub from the
// verified readings, named ocmf.EventID(readings) so the receipt binds
// them, carrying the readings and the meter's key for the CDR's
// signed_data, and naming the session's hold (the "hold" attribute): the hub
// records the charge against the hold, the payer's payment captures it,
// and the hub releases the rest of the hold and sends the session's CDR.
// A session with fewer than two good readings bills nothing: its hold is
// released here.
func (b *Billing) End(ctx context.Context, s gateway.Session) error {
	b.mu.Lock()
	ss := b.sessions[key(s)]
	b.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("%w: %s", ErrNoSession, key(s))
	}
	if len(ss.readings) >= 2 {
		if err := b.meter(ctx, s, ss.hold, ss.readings); err != nil {
			return err // the station retries the Ended event; the hold stays
		}
	} else {
		b.log.Warn("session not billed: fewer than two verified readings", "session", key(s), "dropped", ss.dropped)
		if err := b.cfg.Holds.Release(ctx, ss.hold); err != nil {
			return fmt.Errorf("m2mbilling: release: %w", err)
		}
	}
	b.mu.Lock()
	delete(b.sessions, key(s))
	b.mu.Unlock()
	return nil
}

func (b *Billing) meter(ctx context.Context, s gateway.Session, hold m2mclient.HoldID, msgs []*ocmf.Message) error {
	mvs, err := ocmf.MeterValues(msgs)
	if err != nil {
		return fmt.Errorf("m2mbilling: readings: %w", err)
	}
	u, err := contracts.UsageFromMeterValues(contracts.Usage{Device: s.Payer, Session: key(s)}, mvs)
	if err != nil {
		return fmt.Errorf("m2mbilling: usage: %w", err)
	}
	rfc := func(t time.Time) string { return t.Format(time.RFC3339) }
	e := metering.Event{ID: ocmf.EventID(msgs), Subject: s.Payer, Time: rfc(u.End), Data: metering.Data{
		Contract: b.hash, Session: u.Session, Start: rfc(u.Start), End: rfc(u.End),
		Attributes: map[string]string{contracts.HoldAttribute: hold.String(),
			contracts.CDRAttrTokenUID: s.IDToken, contracts.CDRAttrLocationID: s.Station, contracts.CDRAttrEvseUID: strconv.Itoa(max(s.EvseID, 1))}}}
	for _, p := range u.Periods {
		e.Data.Periods = append(e.Data.Periods, metering.Period{Start: rfc(p.Start), EnergyKWh: p.EnergyKWh.String(), State: p.State})
	}
	// The readings themselves, with the key they verified under: the hub
	// checks both and gives them in the session's CDR (signed_data).
	for _, m := range msgs {
		e.Data.SignedReadings = append(e.Data.SignedReadings, m.Raw)
	}
	e.Data.Attributes[contracts.CDRAttrMeterPublicKey] = b.cfg.MeterKeys[s.Station].Base64()
	if err := b.cfg.Meter.Meter(ctx, e); err != nil {
		return fmt.Errorf("m2mbilling: meter: %w", err)
	}
	return nil
}
