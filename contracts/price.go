package contracts

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/shopspring/decimal"
)

// Usage is one priced event as the hub sees it: who used what, when, and
// the attributes the contract kind needs. Fields a kind does not use are
// ignored by it.
type Usage struct {
	// Device is the paying device; Provider the one that served it.
	Device   string `json:"device,omitempty"`
	Provider string `json:"provider,omitempty"`
	// Contract, when set (hex SHA-256), must equal the pricing contract's
	// hash: a provider cannot have usage priced under another tariff.
	Contract string `json:"contract,omitempty"`
	// Session groups the events of one charging session or shipment.
	Session string `json:"session,omitempty"`
	// Start and End bound a session (EV charging).
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	// EventTime is when a point event happened: a toll passage, the start
	// of an energy interval, a bandwidth report.
	EventTime time.Time `json:"event_time,omitzero"`
	// Quantity and Unit measure the event: passages, MB or kWh.
	Quantity Dec    `json:"quantity,omitzero"`
	Unit     string `json:"unit,omitempty"`

	// VehicleClass selects the toll table row.
	VehicleClass string `json:"vehicle_class,omitempty"`
	// CumulativeMB is the volume already used in the current bandwidth
	// billing window before this event; the hub tracks it.
	CumulativeMB Dec `json:"cumulative_mb,omitzero"`
	// SellerMeter and BuyerMeter are the two meters of an energy trade.
	SellerMeter string `json:"seller_meter,omitempty"`
	BuyerMeter  string `json:"buyer_meter,omitempty"`
	// Periods is the charging profile of an EV session.
	Periods []ChargingPeriod `json:"periods,omitempty"`
	// Reservation is the reservation that preceded an EV session, or one
	// that expired without a session (then Periods is empty).
	Reservation *Reservation `json:"reservation,omitempty"`
	// TariffType is the OCPI TariffType the session asks for through a
	// charging preference; empty means TariffRegular.
	TariffType string `json:"tariff_type,omitempty"`
	// Readings are the condition readings of a conditional release.
	Readings []Reading `json:"readings,omitempty"`
}

// ChargingPeriod is one stretch of an EV session with constant state. It
// lasts until the next period's Start, the last one until Usage.End.
type ChargingPeriod struct {
	Start time.Time `json:"start"`
	// EnergyKWh is the energy delivered during the period.
	EnergyKWh Dec `json:"energy_kwh,omitzero"`
	// PowerKW is the charging power, for min_power/max_power restrictions.
	PowerKW Dec `json:"power_kw,omitzero"`
	// CurrentA is the charging current summed over all phases, for
	// min_current/max_current restrictions.
	CurrentA Dec `json:"current_a,omitzero"`
	// State is StateCharging or StateParking.
	State string `json:"state"`
}

// Reservation is a reservation of a charge point: from when it was made
// to when its session started (End equals the session's Start) or, when
// Expired, to when it expired without a session.
type Reservation struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Expired bool      `json:"expired,omitempty"`
}

// TariffRegular is the OCPI TariffType of a session without a charging
// preference.
const TariffRegular = "REGULAR"

// Charging period states.
const (
	StateCharging = "charging"
	StateParking  = "parking"
)

// Reading is one measurement, such as a temperature, with its time.
type Reading struct {
	Time  time.Time `json:"time,omitzero"`
	Value Dec       `json:"value"`
}

// ParseUsage decodes a usage record strictly: unknown fields and trailing
// data are refused, errors wrap ErrBadUsage.
func ParseUsage(b []byte) (Usage, error) {
	var u Usage
	if len(b) > MaxSize {
		return u, fmt.Errorf("%w: %d bytes, limit %d", ErrBadUsage, len(b), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		return u, fmt.Errorf("%w: %v", ErrBadUsage, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return u, fmt.Errorf("%w: trailing data after usage", ErrBadUsage)
	}
	return u, nil
}

// Line is one priced component of a breakdown.
type Line struct {
	// Component names what is priced: ENERGY, TIME, PARKING_TIME, FLAT,
	// PASSAGE, TIER, INTERVAL, RELEASE.
	Component string `json:"component"`
	// Element is the index of the tariff element, band or tier that
	// priced the line, -1 for a default price.
	Element int `json:"element"`
	// Quantity is what was billed, in Unit, after step rounding. Hours
	// are shown to 9 decimal places; the amount uses the exact seconds.
	Quantity Dec    `json:"quantity"`
	Unit     string `json:"unit"`
	// UnitPrice is the contract price per Unit.
	UnitPrice Dec `json:"unit_price"`
	// Amount is Quantity × UnitPrice in the contract currency, exact to
	// 12 decimal places.
	Amount Dec `json:"amount"`
	// Msat is Amount converted at the contract rate and rounded half up.
	Msat msat.Amount `json:"msat"`
	// VATPercent and VATMsat are the VAT rate and amount of the line,
	// reported for invoicing. VAT is not charged on top through the hub;
	// under a tax-included tariff it is the part of Msat that is tax.
	VATPercent *Dec        `json:"vat_percent,omitempty"`
	VATMsat    msat.Amount `json:"vat_msat"`
}

// Breakdown is the result of pricing one usage record. Invariants:
// SubtotalMsat is the sum of the lines' Msat; TotalMsat is SubtotalMsat
// unless Adjustment names a min or max price; TotalMsat = FeeMsat +
// ProviderMsat exactly.
type Breakdown struct {
	// Contract is the hex hash of the pricing contract.
	Contract string `json:"contract"`
	Kind     Kind   `json:"kind"`
	Currency string `json:"currency"`
	// Payer is debited TotalMsat; Provider is credited ProviderMsat. For
	// an energy trade these are the buyer and seller meters.
	Payer    string `json:"payer,omitempty"`
	Provider string `json:"provider,omitempty"`
	Lines    []Line `json:"lines"`

	SubtotalMsat msat.Amount `json:"subtotal_msat"`
	// Adjustment is "MIN_PRICE" or "MAX_PRICE" when an EV tariff's bound
	// replaced the subtotal, else empty.
	Adjustment   string      `json:"adjustment,omitempty"`
	TotalMsat    msat.Amount `json:"total_msat"`
	FeeMsat      msat.Amount `json:"fee_msat"`
	ProviderMsat msat.Amount `json:"provider_msat"`
	// VATMsat is the VAT on TotalMsat, reported, not charged on top.
	VATMsat msat.Amount `json:"vat_msat"`
	// TaxIncluded is set when TotalMsat includes VATMsat (an OCPI 2.3.0
	// tariff with tax_included YES); otherwise VAT comes on top.
	TaxIncluded bool `json:"tax_included,omitempty"`
	// Tariff names the OCPI tariff (country_code*party_id*id) that priced
	// an EV session, when the contract lists OCPI tariffs.
	Tariff string `json:"tariff,omitempty"`

	// Release is the decision of a conditional release contract.
	Release *ReleaseDecision `json:"release,omitempty"`
}

// item is a line before conversion: its amount is num/den in the contract
// currency, kept as a fraction so that hours (den 3600) convert to msat
// with a single rounding.
type item struct {
	component string
	element   int
	quantity  decimal.Decimal
	unit      string
	unitPrice decimal.Decimal
	num       decimal.Decimal
	den       int64
	vat       *Dec
	// taxIncluded: num includes the VAT, which is then num × vat/(100+vat).
	taxIncluded bool
}

// Price prices one usage record under c. Per line, the exact amount in the
// contract currency is multiplied by the rate and rounded half up to a whole
// msat; the subtotal is the sum of those lines; an EV tariff's min/max price
// then bounds it; the hub fee is floor(total × bps / 10000) + per-event fee,
// capped at the total; the provider gets total − fee. Errors wrap
// ErrBadUsage, ErrContractMismatch, ErrNoPrice, ErrOverLimit or ErrOverflow.
func Price(c *Contract, u Usage) (Breakdown, error) {
	if c == nil || !c.parsed {
		// Time zones and integer fields are resolved by Parse; a
		// contract assembled by hand would price wrongly, not fail.
		return Breakdown{}, fmt.Errorf("%w: contract was not made by Parse", ErrInvalid)
	}
	hash := c.Hash()
	hexHash := hex.EncodeToString(hash[:])
	if u.Contract != "" && u.Contract != hexHash {
		return Breakdown{}, fmt.Errorf("%w: usage names %s, contract is %s", ErrContractMismatch, u.Contract, hexHash)
	}
	b := Breakdown{Contract: hexHash, Kind: c.Kind, Currency: c.Currency, Payer: u.Device, Provider: u.Provider, Lines: []Line{}}

	var (
		items []item
		ev    *evTariff
		err   error
	)
	switch c.Kind {
	case KindEVCharging:
		if ev, err = c.EVCharging.tariffFor(u); err == nil {
			items, err = ev.items(u)
			b.Tariff = ev.id
			b.TaxIncluded = ev.taxIncluded == TaxYes
		}
	case KindToll:
		items, err = c.Toll.items(u)
	case KindBandwidth:
		items, err = c.Bandwidth.items(u)
	case KindEnergy:
		items, err = c.Energy.items(u)
		b.Payer, b.Provider = u.BuyerMeter, u.SellerMeter
	case KindConditionalRelease:
		var d ReleaseDecision
		d, items, err = c.ConditionalRelease.decide(c, u.Readings)
		b.Release = &d
	default:
		err = fmt.Errorf("%w: unknown kind %q", ErrInvalid, c.Kind)
	}
	if err != nil {
		return Breakdown{}, err
	}

	rate := c.rate()
	var subtotal, vat decimal.Decimal
	for _, it := range items {
		msat := it.num.Mul(rate).DivRound(decimal.NewFromInt(it.den), 0)
		m, err := toMsat(msat)
		if err != nil {
			return Breakdown{}, err
		}
		line := Line{
			Component:  it.component,
			Element:    it.element,
			Quantity:   D(it.quantity),
			Unit:       it.unit,
			UnitPrice:  D(it.unitPrice),
			Amount:     D(it.num.DivRound(decimal.NewFromInt(it.den), 12)),
			Msat:       m,
			VATPercent: it.vat,
		}
		if it.vat != nil {
			den := decimal.NewFromInt(100)
			if it.taxIncluded {
				den = den.Add(it.vat.Decimal)
			}
			v, err := toMsat(msat.Mul(it.vat.Decimal).DivRound(den, 0))
			if err != nil {
				return Breakdown{}, err
			}
			line.VATMsat = v
			vat = vat.Add(decimal.NewFromUint64(uint64(v)))
		}
		subtotal = subtotal.Add(msat)
		b.Lines = append(b.Lines, line)
	}
	if b.SubtotalMsat, err = toMsat(subtotal); err != nil {
		return Breakdown{}, err
	}
	total, vatTotal := subtotal, vat
	if ev != nil {
		total, vatTotal, b.Adjustment = ev.bound(subtotal, vat, rate)
	}
	if b.TotalMsat, err = toMsat(total); err != nil {
		return Breakdown{}, err
	}
	if b.VATMsat, err = toMsat(vatTotal); err != nil {
		return Breakdown{}, err
	}
	b.FeeMsat = c.fee(b.TotalMsat)
	b.ProviderMsat = b.TotalMsat - b.FeeMsat
	return b, nil
}

// rate is msat per unit of the contract currency.
func (c *Contract) rate() decimal.Decimal {
	if c.RateMsatPerUnit == nil {
		return decimal.NewFromInt(1)
	}
	return c.RateMsatPerUnit.Decimal
}

// fee is the hub's share of total: floor(total × bps / 10000) plus the
// per-event fee, never more than total, so the provider's share is never
// negative.
func (c *Contract) fee(total msat.Amount) msat.Amount {
	if c.Fee == nil {
		return 0
	}
	t := decimal.NewFromUint64(uint64(total))
	f := t.Mul(decimal.NewFromInt(c.Fee.bps)).Shift(-4).Floor()
	f = f.Add(decimal.NewFromInt(c.Fee.perEvent))
	if f.GreaterThan(t) {
		return total
	}
	return msat.Amount(f.BigInt().Uint64())
}

// toMsat converts a decimal msat amount, rounding half up (all amounts
// here are non-negative, where half away from zero is half up).
func toMsat(d decimal.Decimal) (msat.Amount, error) {
	r := d.Round(0)
	if r.IsNegative() {
		return 0, fmt.Errorf("%w: negative amount %s", ErrOverflow, r)
	}
	n := r.BigInt()
	if !n.IsUint64() {
		return 0, fmt.Errorf("%w: %s msat", ErrOverflow, r)
	}
	return msat.Amount(n.Uint64()), nil
}
