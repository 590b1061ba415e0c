package contracts

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/shopspring/decimal"
)

// CDR is an OCPI 2.2.1 Charge Detail Record for one priced EV session,
// with one addition: the M2MHub section gives every cost in msat, exactly
// as the payer's channel paid it, and the rate that converts them.
type CDR struct {
	CountryCode          string        `json:"country_code"`
	PartyID              string        `json:"party_id"`
	ID                   string        `json:"id"`
	StartDateTime        string        `json:"start_date_time"`
	EndDateTime          string        `json:"end_date_time"`
	SessionID            string        `json:"session_id,omitempty"`
	CdrToken             CDRToken      `json:"cdr_token"`
	AuthMethod           string        `json:"auth_method"`
	CdrLocation          CDRLocation   `json:"cdr_location"`
	MeterID              string        `json:"meter_id,omitempty"`
	Currency             string        `json:"currency"`
	Tariffs              []OCPITariff  `json:"tariffs,omitempty"`
	ChargingPeriods      []CDRPeriod   `json:"charging_periods"`
	SignedData           *SignedData   `json:"signed_data,omitempty"`
	TotalCost            CDRPrice      `json:"total_cost"`
	TotalFixedCost       *CDRPrice     `json:"total_fixed_cost,omitempty"`
	TotalEnergy          Num           `json:"total_energy"`
	TotalEnergyCost      *CDRPrice     `json:"total_energy_cost,omitempty"`
	TotalTime            Num           `json:"total_time"`
	TotalTimeCost        *CDRPrice     `json:"total_time_cost,omitempty"`
	TotalParkingTime     *Num          `json:"total_parking_time,omitempty"`
	TotalParkingCost     *CDRPrice     `json:"total_parking_cost,omitempty"`
	TotalReservationCost *CDRPrice     `json:"total_reservation_cost,omitempty"`
	LastUpdated          string        `json:"last_updated"`
	M2MHub               CDRSettlement `json:"m2mhub"`
}

// CDRToken is an OCPI CdrToken: the token the session was authorised with.
type CDRToken struct {
	CountryCode string `json:"country_code"`
	PartyID     string `json:"party_id"`
	UID         string `json:"uid"`
	Type        string `json:"type"`
	ContractID  string `json:"contract_id"`
}

// CDRLocation is an OCPI CdrLocation: the charge point as it was at the
// session's start.
type CDRLocation struct {
	ID                 string      `json:"id"`
	Name               string      `json:"name,omitempty"`
	Address            string      `json:"address"`
	City               string      `json:"city"`
	PostalCode         string      `json:"postal_code,omitempty"`
	State              string      `json:"state,omitempty"`
	Country            string      `json:"country"`
	Coordinates        GeoLocation `json:"coordinates"`
	EvseUID            string      `json:"evse_uid"`
	EvseID             string      `json:"evse_id"`
	ConnectorID        string      `json:"connector_id"`
	ConnectorStandard  string      `json:"connector_standard"`
	ConnectorFormat    string      `json:"connector_format"`
	ConnectorPowerType string      `json:"connector_power_type"`
}

// GeoLocation is an OCPI GeoLocation; OCPI writes the degrees as strings.
type GeoLocation struct {
	Latitude  string `json:"latitude"`
	Longitude string `json:"longitude"`
}

// SignedData is an OCPI SignedData: the meter's signed readings.
type SignedData struct {
	EncodingMethod        string        `json:"encoding_method"`
	EncodingMethodVersion *int          `json:"encoding_method_version,omitempty"`
	PublicKey             string        `json:"public_key,omitempty"`
	SignedValues          []SignedValue `json:"signed_values"`
	URL                   string        `json:"url,omitempty"`
}

// SignedValue is an OCPI SignedValue: one signed reading (nature Start,
// Intermediate or End), its plain data and the signed blob in base64.
type SignedValue struct {
	Nature     string `json:"nature"`
	PlainData  string `json:"plain_data"`
	SignedData string `json:"signed_data"`
}

// CDRPrice is an OCPI Price in the CDR's currency.
type CDRPrice struct {
	ExclVAT Num  `json:"excl_vat"`
	InclVAT *Num `json:"incl_vat,omitempty"`
}

// CDRSettlement states a CDR's costs as the hub charged them: msat
// figures are exact, and each currency figure above is its msat figure
// divided by RateMsatPerUnit, rounded half up to CurrencyDecimals places.
// TotalMsat is what the payer's channel paid for the session.
type CDRSettlement struct {
	Contract         string      `json:"contract"`
	RateMsatPerUnit  Dec         `json:"rate_msat_per_unit"`
	CurrencyDecimals int         `json:"currency_decimals"`
	TotalMsat        msat.Amount `json:"total_msat"`
	VATMsat          msat.Amount `json:"vat_msat"`
	TaxIncluded      bool        `json:"tax_included,omitempty"`
	Adjustment       string      `json:"adjustment,omitempty"`
	FixedMsat        msat.Amount `json:"fixed_msat"`
	EnergyMsat       msat.Amount `json:"energy_msat"`
	TimeMsat         msat.Amount `json:"time_msat"`
	ParkingMsat      msat.Amount `json:"parking_msat"`
	ReservationMsat  msat.Amount `json:"reservation_msat"`
	FeeMsat          msat.Amount `json:"fee_msat"`
	ProviderMsat     msat.Amount `json:"provider_msat"`
}

// CDRSession is what a CDR says of a session beyond its price: who issues
// it, and the token and location as they were when the session started.
type CDRSession struct {
	CountryCode, PartyID, ID string
	SessionID                string
	Token                    CDRToken
	// AuthMethod is AUTH_REQUEST, COMMAND or WHITELIST.
	AuthMethod  string
	Location    CDRLocation
	MeterID     string
	SignedData  *SignedData
	LastUpdated time.Time
}

// HoldAttribute is the usage event attribute (32 hex) naming the hold an
// EV session's last event is paid against: the hub records the charge
// against the hold, the payer's payment captures it, the rest of the hold
// is released, and the hub issues the session's CDR.
const HoldAttribute = "hold"

// The usage event attributes the hub takes a held EV session's CDR token
// and location from; each has a default when absent.
const (
	CDRAttrCountryCode = "country_code" // default: the OCPI tariff's
	CDRAttrPartyID     = "party_id"     // default: the OCPI tariff's
	CDRAttrTokenUID    = "token_uid"    // default: the payer device id
	CDRAttrTokenType   = "token_type"   // default: APP_USER
	CDRAttrLocationID  = "location_id"  // default: the provider id
	CDRAttrEvseUID     = "evse_uid"     // default: "1"
	CDRAttrEvseID      = "evse_id"
	CDRAttrConnectorID = "connector_id" // default: "1"
	// CDRAttrMeterPublicKey is the meter's public key (base64 DER) that
	// the event's signed readings verify under; the CDR's signed_data
	// gives it.
	CDRAttrMeterPublicKey = "meter_public_key"
)

// cdrDecimals is how many decimals a CDR's currency figures carry.
const cdrDecimals = 6

// NewCDR builds the CDR of session u, which c priced as b. Its charging
// periods are u's, with their dimension volumes, so that
// UsageFromCDRPeriods prices the CDR back to b; its costs are b's. Errors
// wrap ErrInvalid (not an EV contract in a fiat currency, a breakdown of
// another contract, a CDRSession missing a required field) or ErrBadUsage.
func NewCDR(c *Contract, u Usage, b Breakdown, s CDRSession) (*CDR, error) {
	if c == nil || !c.parsed || c.Kind != KindEVCharging || c.Currency == CurrencyMsat {
		return nil, fmt.Errorf("%w: a CDR needs a parsed ev_charging contract in a fiat currency", ErrInvalid)
	}
	h := c.Hash()
	if b.Contract != hex.EncodeToString(h[:]) {
		return nil, fmt.Errorf("%w: the breakdown is of contract %s", ErrInvalid, b.Contract)
	}
	switch {
	case len(s.CountryCode) != 2 || len(s.PartyID) != 3 || s.ID == "" || len(s.ID) > 39:
		return nil, fmt.Errorf("%w: a CDR needs country_code, party_id and an id of 1 to 39 characters", ErrInvalid)
	case s.Token.UID == "" || s.Token.Type == "" || s.Token.ContractID == "":
		return nil, fmt.Errorf("%w: a CDR needs the token's uid, type and contract_id", ErrInvalid)
	case !contains([]string{"AUTH_REQUEST", "COMMAND", "WHITELIST"}, s.AuthMethod):
		return nil, fmt.Errorf("%w: auth_method %q is not AUTH_REQUEST, COMMAND or WHITELIST", ErrInvalid, s.AuthMethod)
	case s.Location.ID == "" || s.Location.EvseUID == "" || s.Location.ConnectorID == "":
		return nil, fmt.Errorf("%w: a CDR needs the location id, evse_uid and connector_id", ErrInvalid)
	}
	rate := c.rate()
	cur := func(m msat.Amount) Num {
		return N(decimal.NewFromUint64(uint64(m)).DivRound(rate, cdrDecimals))
	}
	price := func(excl, vat msat.Amount, incl bool) *CDRPrice {
		p := &CDRPrice{ExclVAT: cur(excl)}
		if incl {
			v := cur(excl + vat)
			p.InclVAT = &v
		}
		return p
	}
	hasVAT := b.VATMsat > 0
	for _, l := range b.Lines {
		hasVAT = hasVAT || l.VATPercent != nil
	}

	out := &CDR{
		CountryCode: s.CountryCode, PartyID: s.PartyID, ID: s.ID, SessionID: s.SessionID,
		CdrToken: s.Token, AuthMethod: s.AuthMethod, CdrLocation: s.Location, MeterID: s.MeterID,
		Currency: c.Currency, SignedData: s.SignedData, LastUpdated: s.LastUpdated.UTC().Format(time.RFC3339),
		M2MHub: CDRSettlement{Contract: b.Contract, RateMsatPerUnit: D(rate), CurrencyDecimals: cdrDecimals,
			TotalMsat: b.TotalMsat, VATMsat: b.VATMsat, TaxIncluded: b.TaxIncluded, Adjustment: b.Adjustment,
			FeeMsat: b.FeeMsat, ProviderMsat: b.ProviderMsat},
	}
	for _, t := range c.EVCharging.Tariffs {
		if t.Name() == b.Tariff {
			out.Tariffs = []OCPITariff{t}
		}
	}

	// Costs per dimension, before taxes (for a tax-included tariff the
	// lines hold the taxes, which come off here).
	type dim struct{ msat, vat msat.Amount }
	var fixed, energy, tm, parking, resv dim
	for _, l := range b.Lines {
		d := &fixed
		switch Dimension(l.Component) {
		case DimEnergy:
			d = &energy
		case DimTime:
			d = &tm
		case DimParkingTime:
			d = &parking
		case compReservationFlat, compReservationTime:
			d = &resv
		}
		m := l.Msat
		if b.TaxIncluded {
			m -= l.VATMsat
		}
		d.msat += m
		d.vat += l.VATMsat
	}
	out.M2MHub.FixedMsat, out.M2MHub.EnergyMsat, out.M2MHub.TimeMsat = fixed.msat, energy.msat, tm.msat
	out.M2MHub.ParkingMsat, out.M2MHub.ReservationMsat = parking.msat, resv.msat
	excl := b.TotalMsat
	if b.TaxIncluded {
		excl -= b.VATMsat
	}
	out.TotalCost = *price(excl, b.VATMsat, hasVAT)
	for _, x := range []struct {
		d   dim
		dst **CDRPrice
	}{{fixed, &out.TotalFixedCost}, {energy, &out.TotalEnergyCost}, {tm, &out.TotalTimeCost},
		{parking, &out.TotalParkingCost}, {resv, &out.TotalReservationCost}} {
		if x.d.msat > 0 || x.d.vat > 0 {
			*x.dst = price(x.d.msat, x.d.vat, hasVAT)
		}
	}

	// Charging periods and totals, from the session as metered.
	hours := func(d time.Duration) Num {
		return N(decimal.NewFromInt(int64(d/time.Millisecond)).DivRound(decimal.NewFromInt(3_600_000), 9))
	}
	tariffID := ""
	if len(out.Tariffs) == 1 {
		tariffID = out.Tariffs[0].ID
	}
	start, end := u.Start, u.End
	if r := u.Reservation; r != nil {
		start = r.Start
		if r.Expired {
			end = r.End
		}
		out.ChargingPeriods = append(out.ChargingPeriods, CDRPeriod{StartDateTime: r.Start.UTC().Format(time.RFC3339Nano), TariffID: tariffID,
			Dimensions: []CDRDimension{{Type: "RESERVATION_TIME", Volume: hours(r.End.Sub(r.Start))}}})
	}
	kwh, parkTime := decimal.Zero, time.Duration(0)
	for i, p := range u.Periods {
		pend := u.End
		if i+1 < len(u.Periods) {
			pend = u.Periods[i+1].Start
		}
		kind := "TIME"
		if p.State != StateCharging {
			kind = "PARKING_TIME"
			parkTime += pend.Sub(p.Start)
		}
		kwh = kwh.Add(p.EnergyKWh.Decimal)
		out.ChargingPeriods = append(out.ChargingPeriods, CDRPeriod{StartDateTime: p.Start.UTC().Format(time.RFC3339Nano), TariffID: tariffID,
			Dimensions: []CDRDimension{{Type: "ENERGY", Volume: N(p.EnergyKWh.Decimal)}, {Type: kind, Volume: hours(pend.Sub(p.Start))},
				{Type: "MAX_POWER", Volume: N(p.PowerKW.Decimal)}, {Type: "MAX_CURRENT", Volume: N(p.CurrentA.Decimal)}}})
	}
	if len(out.ChargingPeriods) == 0 {
		return nil, fmt.Errorf("%w: a CDR needs a session or a reservation", ErrBadUsage)
	}
	out.StartDateTime, out.EndDateTime = start.UTC().Format(time.RFC3339Nano), end.UTC().Format(time.RFC3339Nano)
	out.TotalEnergy = N(kwh)
	if len(u.Periods) > 0 {
		out.TotalTime = hours(u.End.Sub(u.Start))
	}
	if parkTime > 0 {
		p := hours(parkTime)
		out.TotalParkingTime = &p
	}
	return out, nil
}
