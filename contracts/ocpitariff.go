package contracts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/shopspring/decimal"
)

// OCPITariff is an OCPI 2.2.1 Tariff object, with the fields OCPI 2.3.0
// added (tax_included, preauthorize_amount, PriceLimit bounds), as its
// publisher wrote it: numbers are JSON numbers, parsed exactly; display and
// metadata fields are kept in the contract (and so in its hash) though the
// price does not depend on them. Times of day and dates in restrictions
// are local to the envelope's time_zone, which OCPI takes from the
// Location.
type OCPITariff struct {
	CountryCode        string          `json:"country_code"`
	PartyID            string          `json:"party_id"`
	ID                 string          `json:"id"`
	Currency           string          `json:"currency"`
	Type               string          `json:"type,omitempty"`
	TariffAltText      []DisplayText   `json:"tariff_alt_text,omitempty"`
	TariffAltURL       string          `json:"tariff_alt_url,omitempty"`
	MinPrice           *OCPIPrice      `json:"min_price,omitempty"`
	MaxPrice           *OCPIPrice      `json:"max_price,omitempty"`
	PreauthorizeAmount *Num            `json:"preauthorize_amount,omitempty"`
	Elements           []OCPIElement   `json:"elements"`
	TaxIncluded        string          `json:"tax_included,omitempty"`
	StartDateTime      string          `json:"start_date_time,omitempty"`
	EndDateTime        string          `json:"end_date_time,omitempty"`
	EnergyMix          json.RawMessage `json:"energy_mix,omitempty"`
	LastUpdated        string          `json:"last_updated"`
}

// DisplayText is an OCPI DisplayText: a text in one language.
type DisplayText struct {
	Language string `json:"language"`
	Text     string `json:"text"`
}

// OCPIPrice is an OCPI 2.2.1 Price (excl_vat, incl_vat) or an OCPI 2.3.0
// PriceLimit (before_taxes, after_taxes); one of the two spellings.
type OCPIPrice struct {
	ExclVAT     *Num `json:"excl_vat,omitempty"`
	InclVAT     *Num `json:"incl_vat,omitempty"`
	BeforeTaxes *Num `json:"before_taxes,omitempty"`
	AfterTaxes  *Num `json:"after_taxes,omitempty"`
}

// OCPIElement is an OCPI TariffElement.
type OCPIElement struct {
	PriceComponents []OCPIPriceComponent `json:"price_components"`
	Restrictions    *OCPIRestrictions    `json:"restrictions,omitempty"`
}

// OCPIPriceComponent is an OCPI PriceComponent. Price is per kWh, per hour
// or per session, excluding taxes unless the tariff says tax_included
// YES; VAT is a percentage; StepSize is in Wh (ENERGY) or seconds (TIME,
// PARKING_TIME) and has no meaning for FLAT.
type OCPIPriceComponent struct {
	Type     Dimension `json:"type"`
	Price    Num       `json:"price"`
	VAT      *Num      `json:"vat,omitempty"`
	StepSize int64     `json:"step_size"`
}

// OCPIRestrictions is an OCPI TariffRestrictions object.
type OCPIRestrictions struct {
	StartTime   string   `json:"start_time,omitempty"`
	EndTime     string   `json:"end_time,omitempty"`
	StartDate   string   `json:"start_date,omitempty"`
	EndDate     string   `json:"end_date,omitempty"`
	MinKWh      *Num     `json:"min_kwh,omitempty"`
	MaxKWh      *Num     `json:"max_kwh,omitempty"`
	MinCurrent  *Num     `json:"min_current,omitempty"`
	MaxCurrent  *Num     `json:"max_current,omitempty"`
	MinPower    *Num     `json:"min_power,omitempty"`
	MaxPower    *Num     `json:"max_power,omitempty"`
	MinDuration *int64   `json:"min_duration,omitempty"`
	MaxDuration *int64   `json:"max_duration,omitempty"`
	DayOfWeek   []string `json:"day_of_week,omitempty"`
	Reservation string   `json:"reservation,omitempty"`
}

// The OCPI TariffType values.
var tariffTypes = []string{"AD_HOC_PAYMENT", "PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN", TariffRegular}

// Name returns country_code*party_id*id, the tariff's OCPI identity.
func (o *OCPITariff) Name() string { return o.CountryCode + "*" + o.PartyID + "*" + o.ID }

// engine validates the tariff and converts it for the pricing engine.
func (o *OCPITariff) engine(field, currency string, loc *time.Location) (*evTariff, error) {
	switch {
	case len(o.CountryCode) != 2 || len(o.PartyID) != 3:
		return nil, fmt.Errorf("%w: %s needs a 2-letter country_code and a 3-character party_id", ErrInvalid, field)
	case o.ID == "" || len(o.ID) > 36:
		return nil, fmt.Errorf("%w: %s.id must be 1 to 36 characters", ErrInvalid, field)
	case o.Currency != currency:
		return nil, fmt.Errorf("%w: %s.currency %q is not the contract's %q", ErrInvalid, field, o.Currency, currency)
	case o.Type != "" && !contains(tariffTypes, o.Type):
		return nil, fmt.Errorf("%w: %s.type %q is not an OCPI TariffType", ErrInvalid, field, o.Type)
	case len(o.EnergyMix) > 0 && o.EnergyMix[0] != '{':
		return nil, fmt.Errorf("%w: %s.energy_mix must be an object", ErrInvalid, field)
	case len(o.TariffAltURL) > 255:
		return nil, fmt.Errorf("%w: %s.tariff_alt_url is over 255 characters", ErrInvalid, field)
	}
	for i, d := range o.TariffAltText {
		if len(d.Language) != 2 || d.Text == "" || len(d.Text) > 512 {
			return nil, fmt.Errorf("%w: %s.tariff_alt_text[%d] needs a 2-letter language and 1 to 512 bytes of text", ErrInvalid, field, i)
		}
	}
	if _, err := parseOCPITime(field+".last_updated", o.LastUpdated); err != nil {
		return nil, err
	}
	tr := &evTariff{id: o.Name(), typ: o.Type, loc: loc}
	var err error
	if o.StartDateTime != "" {
		if tr.from, err = parseOCPITime(field+".start_date_time", o.StartDateTime); err != nil {
			return nil, err
		}
	}
	if o.EndDateTime != "" {
		if tr.until, err = parseOCPITime(field+".end_date_time", o.EndDateTime); err != nil {
			return nil, err
		}
	}
	if !tr.from.IsZero() && !tr.until.IsZero() && !tr.until.After(tr.from) {
		return nil, fmt.Errorf("%w: %s.end_date_time is not after start_date_time", ErrInvalid, field)
	}
	if tr.taxIncluded, err = taxIncluded(field+".tax_included", o.TaxIncluded); err != nil {
		return nil, err
	}
	if a := o.PreauthorizeAmount; a != nil {
		if a.IsNegative() {
			return nil, fmt.Errorf("%w: %s.preauthorize_amount must not be negative", ErrInvalid, field)
		}
		tr.preauth = &a.Decimal
	}
	if tr.min, err = o.MinPrice.limit(field + ".min_price"); err != nil {
		return nil, err
	}
	if tr.max, err = o.MaxPrice.limit(field + ".max_price"); err != nil {
		return nil, err
	}
	if err := validateLimits(field, tr.min, tr.max); err != nil {
		return nil, err
	}
	for _, el := range o.Elements {
		tr.elements = append(tr.elements, el.native())
	}
	if tr.current, err = validateElements(field, tr.elements); err != nil {
		return nil, err
	}
	return tr, nil
}

// limit reads either spelling of a price bound.
func (p *OCPIPrice) limit(field string) (*priceLimit, error) {
	if p == nil {
		return nil, nil
	}
	v221 := p.ExclVAT != nil || p.InclVAT != nil
	v230 := p.BeforeTaxes != nil || p.AfterTaxes != nil
	before, after := p.ExclVAT, p.InclVAT
	if v230 {
		before, after = p.BeforeTaxes, p.AfterTaxes
	}
	if v221 == v230 || before == nil {
		return nil, fmt.Errorf("%w: %s needs excl_vat (OCPI 2.2.1) or before_taxes (2.3.0), and not both spellings", ErrInvalid, field)
	}
	l := &priceLimit{before: before.Decimal}
	if after != nil {
		l.after = &after.Decimal
	}
	return l, nil
}

// native converts an element to the engine's form; the engine validates
// it, naming the same fields.
func (e OCPIElement) native() TariffElement {
	var el TariffElement
	for _, pc := range e.PriceComponents {
		c := PriceComponent{Type: pc.Type, Price: pc.Price.Dec(), StepSize: D(decimal.NewFromInt(pc.StepSize))}
		if pc.VAT != nil {
			v := pc.VAT.Dec()
			c.VAT = &v
		}
		el.PriceComponents = append(el.PriceComponents, c)
	}
	if r := e.Restrictions; r != nil {
		dec := func(n *Num) *Dec {
			if n == nil {
				return nil
			}
			d := n.Dec()
			return &d
		}
		sec := func(n *int64) *Dec {
			if n == nil {
				return nil
			}
			d := D(decimal.NewFromInt(*n))
			return &d
		}
		el.Restrictions = &Restrictions{
			StartTime: r.StartTime, EndTime: r.EndTime, StartDate: r.StartDate, EndDate: r.EndDate,
			MinKWh: dec(r.MinKWh), MaxKWh: dec(r.MaxKWh), MinCurrent: dec(r.MinCurrent), MaxCurrent: dec(r.MaxCurrent),
			MinPower: dec(r.MinPower), MaxPower: dec(r.MaxPower), MinDuration: sec(r.MinDuration), MaxDuration: sec(r.MaxDuration),
			DayOfWeek: r.DayOfWeek, Reservation: r.Reservation,
		}
	}
	return el
}

// parseOCPITime parses an OCPI DateTime: RFC 3339 in UTC, where a missing
// zone designator means UTC and fractional seconds may appear.
func parseOCPITime(field, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%w: %s %q is not an OCPI DateTime", ErrInvalid, field, s)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// OCPIEnvelope is what an OCPI tariff file does not say and a contract
// needs: the contract's name and revision, the exchange rate into msat,
// the charge point's time zone and the hub fee.
type OCPIEnvelope struct {
	// ID names the contract; empty takes the first tariff's
	// country_code*party_id*id.
	ID string
	// Version is the contract revision; 0 means 1.
	Version uint32
	// RateMsatPerUnit is msat per unit of the tariffs' currency.
	RateMsatPerUnit Dec
	// TimeZone is the IANA zone of the charge point's Location.
	TimeZone string
	// Fee is the hub's fee, if any.
	Fee *Fee
}

// IsOCPI reports whether doc looks like an OCPI tariff file rather than a
// contract document: a JSON array, or an object without "kind". It only
// sniffs; ParseOCPI validates.
func IsOCPI(doc []byte) bool {
	doc = bytes.TrimSpace(doc)
	if len(doc) > 0 && doc[0] == '[' {
		return true
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(doc, &top) != nil {
		return false
	}
	_, kind := top["kind"]
	return !kind
}

// WrapOCPI turns an OCPI tariff file, taken as is, into a contract
// document. The file holds one Tariff object, a JSON array of them (the
// first in force prices a session), or an OCPI response whose data is
// either. Unknown fields are refused; errors wrap ErrInvalid or
// ErrTooLarge. Parse the result, or use ParseOCPI, to validate it fully.
func WrapOCPI(doc []byte, env OCPIEnvelope) ([]byte, error) {
	if len(doc) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(doc), MaxSize)
	}
	tariffs, err := decodeOCPI(doc)
	if err != nil {
		return nil, err
	}
	if len(tariffs) == 0 {
		return nil, fmt.Errorf("%w: the OCPI file holds no tariff", ErrInvalid)
	}
	c := Contract{Kind: KindEVCharging, Version: env.Version, ID: env.ID, Currency: tariffs[0].Currency,
		RateMsatPerUnit: &env.RateMsatPerUnit, Fee: env.Fee,
		EVCharging: &EVCharging{TimeZone: env.TimeZone, Tariffs: tariffs}}
	if c.Version == 0 {
		c.Version = 1
	}
	if c.ID == "" {
		c.ID = tariffs[0].Name()
	}
	return json.Marshal(&c)
}

// ParseOCPI wraps an OCPI tariff file with env and parses the result.
func ParseOCPI(doc []byte, env OCPIEnvelope) (*Contract, error) {
	b, err := WrapOCPI(doc, env)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// decodeOCPI reads the tariffs of an OCPI file strictly.
func decodeOCPI(doc []byte) ([]OCPITariff, error) {
	doc = bytes.TrimSpace(doc)
	strict := func(b []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			if errors.Is(err, ErrInvalid) {
				return err
			}
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return fmt.Errorf("%w: trailing data after the OCPI document", ErrInvalid)
		}
		return nil
	}
	if len(doc) > 0 && doc[0] == '{' {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(doc, &top); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if data, ok := top["data"]; ok {
			// An OCPI response: the tariffs are its data.
			var resp struct {
				Data          json.RawMessage `json:"data"`
				StatusCode    json.Number     `json:"status_code"`
				StatusMessage string          `json:"status_message,omitempty"`
				Timestamp     string          `json:"timestamp"`
			}
			if err := strict(doc, &resp); err != nil {
				return nil, err
			}
			if resp.StatusCode.String() != "1000" {
				return nil, fmt.Errorf("%w: OCPI response status_code %s is not 1000 (success)", ErrInvalid, resp.StatusCode)
			}
			doc = bytes.TrimSpace(data)
		}
	}
	if len(doc) > 0 && doc[0] == '[' {
		var ts []OCPITariff
		if err := strict(doc, &ts); err != nil {
			return nil, err
		}
		return ts, nil
	}
	var t OCPITariff
	if err := strict(doc, &t); err != nil {
		return nil, err
	}
	return []OCPITariff{t}, nil
}

// PreauthorizeMsat returns the hold an EV session starting at `at` should
// ask for: the preauthorize_amount (OCPI 2.3.0) of the tariff that would
// price it, converted at the contract rate and rounded half up. ok is false
// when that tariff states none. Errors wrap ErrInvalid (not an EV
// contract), ErrNoPrice (no tariff in force) or ErrOverflow.
func (c *Contract) PreauthorizeMsat(at time.Time, tariffType string) (amt msat.Amount, ok bool, err error) {
	if c == nil || !c.parsed || c.Kind != KindEVCharging {
		return 0, false, fmt.Errorf("%w: not a parsed ev_charging contract", ErrInvalid)
	}
	tr, err := c.EVCharging.tariffFor(Usage{Start: at, TariffType: tariffType})
	if err != nil {
		return 0, false, err
	}
	if tr.preauth == nil {
		return 0, false, nil
	}
	m, err := toMsat(tr.preauth.Mul(c.rate()))
	return m, err == nil, err
}
