package metering

import (
	"fmt"
	"strconv"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
)

// Limits bound how far an event's time may stray from the hub's clock.
type Limits struct {
	// MaxFuture is how far ahead of now an event may be (clock skew).
	MaxFuture time.Duration
	// MaxAge is how old an event may be: late events are priced by their
	// own time, but not forever.
	MaxAge time.Duration
}

// Default limits, used where a Limits field is zero.
const (
	DefaultMaxFuture = 5 * time.Minute
	DefaultMaxAge    = 30 * 24 * time.Hour
)

// Validate checks that e is a plausible usage event at now: the fixed
// CloudEvents attributes, a bounded id, parseable times (event time within
// [now-MaxAge, now+MaxFuture]), non-negative decimals and a 64-hex contract
// hash. It does not check the signature (Verify) or that the contract and
// devices exist (the charger's job). Zero limits take the defaults. It
// returns the usage record parsed on the way (as ToUsage would), so an
// event's data is parsed once.
func Validate(e *Event, now time.Time, lim Limits) (contracts.Usage, error) {
	if lim.MaxFuture <= 0 {
		lim.MaxFuture = DefaultMaxFuture
	}
	if lim.MaxAge <= 0 {
		lim.MaxAge = DefaultMaxAge
	}
	switch {
	case e.SpecVersion != SpecVersion:
		return contracts.Usage{}, fmt.Errorf("%w: %q", ErrSpecVersion, e.SpecVersion)
	case e.Type != EventType:
		return contracts.Usage{}, fmt.Errorf("%w: %q", ErrType, e.Type)
	case e.DataContentType != "" && e.DataContentType != ContentType:
		return contracts.Usage{}, fmt.Errorf("%w: datacontenttype %q", ErrMalformed, e.DataContentType)
	case e.ID == "" || len(e.ID) > MaxIDLen:
		return contracts.Usage{}, fmt.Errorf("%w: id must be 1..%d bytes", ErrBadID, MaxIDLen)
	case !ValidSubjectToken(e.Source) || e.Subject == "" || len(e.Subject) > MaxNameLen:
		return contracts.Usage{}, fmt.Errorf("%w: source and subject must be device ids", ErrMalformed)
	}
	t, err := parseTime("time", e.Time)
	if err != nil {
		return contracts.Usage{}, err
	}
	if t.After(now.Add(lim.MaxFuture)) {
		return contracts.Usage{}, fmt.Errorf("%w: %s is more than %s ahead", ErrFuture, e.Time, lim.MaxFuture)
	}
	if t.Before(now.Add(-lim.MaxAge)) {
		return contracts.Usage{}, fmt.Errorf("%w: %s is more than %s old", ErrTooOld, e.Time, lim.MaxAge)
	}
	if !isHex64(e.Data.Contract) {
		return contracts.Usage{}, fmt.Errorf("%w: %q is not 64 lowercase hex digits", ErrBadContract, e.Data.Contract)
	}
	return toUsage(e)
}

// ToUsage converts e into the usage record contracts price: the subject is
// the paying device, the source the provider, and the event's own time
// prices it. CumulativeMB stays zero: the hub tracks bandwidth volume
// itself, never from a provider. Errors wrap ErrBadTime or ErrBadQuantity.
func ToUsage(e *Event) (contracts.Usage, error) { return toUsage(e) }

func toUsage(e *Event) (contracts.Usage, error) {
	u := contracts.Usage{
		Device: e.Subject, Provider: e.Source, Contract: e.Data.Contract, Session: e.Data.Session,
		Unit: e.Data.Unit, VehicleClass: e.Data.VehicleClass,
		SellerMeter: e.Data.SellerMeter, BuyerMeter: e.Data.BuyerMeter, TariffType: e.Data.TariffType,
	}
	var err error
	if u.EventTime, err = parseTime("time", e.Time); err != nil {
		return u, err
	}
	if u.Start, err = optTime("data.start", e.Data.Start); err != nil {
		return u, err
	}
	if u.End, err = optTime("data.end", e.Data.End); err != nil {
		return u, err
	}
	if e.Data.Quantity != "" {
		if u.Quantity, err = nonNegDec("data.quantity", e.Data.Quantity); err != nil {
			return u, err
		}
	}
	for i, p := range e.Data.Periods {
		cp := contracts.ChargingPeriod{State: p.State}
		if cp.Start, err = parseTime(fmt.Sprintf("data.periods[%d].start", i), p.Start); err != nil {
			return u, err
		}
		if p.EnergyKWh != "" {
			if cp.EnergyKWh, err = nonNegDec("energy_kwh", p.EnergyKWh); err != nil {
				return u, err
			}
		}
		if p.PowerKW != "" {
			if cp.PowerKW, err = nonNegDec("power_kw", p.PowerKW); err != nil {
				return u, err
			}
		}
		if p.CurrentA != "" {
			if cp.CurrentA, err = nonNegDec("current_a", p.CurrentA); err != nil {
				return u, err
			}
		}
		u.Periods = append(u.Periods, cp)
	}
	if r := e.Data.Reservation; r != nil {
		if r.Expired != "" && r.Expired != "true" {
			return u, fmt.Errorf("%w: data.reservation.expired must be \"true\" or absent", ErrMalformed)
		}
		u.Reservation = &contracts.Reservation{Expired: r.Expired == "true"}
		if u.Reservation.Start, err = parseTime("data.reservation.start", r.Start); err != nil {
			return u, err
		}
		if u.Reservation.End, err = parseTime("data.reservation.end", r.End); err != nil {
			return u, err
		}
	}
	for i, r := range e.Data.Readings {
		var cr contracts.Reading
		if cr.Time, err = optTime(fmt.Sprintf("data.readings[%d].time", i), r.Time); err != nil {
			return u, err
		}
		// A reading may be negative (a temperature): only its syntax matters.
		if err := cr.Value.UnmarshalJSON([]byte(strconv.Quote(r.Value))); err != nil {
			return u, fmt.Errorf("%w: data.readings[%d].value: %v", ErrBadQuantity, i, err)
		}
		u.Readings = append(u.Readings, cr)
	}
	return u, nil
}

func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %v", ErrBadTime, field, err)
	}
	return t, nil
}

func optTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return parseTime(field, s)
}

func nonNegDec(field, s string) (contracts.Dec, error) {
	var d contracts.Dec
	if err := d.UnmarshalJSON([]byte(strconv.Quote(s))); err != nil {
		return d, fmt.Errorf("%w: %s: %v", ErrBadQuantity, field, err)
	}
	if d.IsNegative() {
		return d, fmt.Errorf("%w: %s is negative", ErrBadQuantity, field)
	}
	return d, nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
