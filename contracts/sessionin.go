package contracts

import (
	"fmt"
	"time"

	"github.com/shopspring/decimal"
)

// An EV session reaches the pricing engine in one of two shapes: the
// sampled meter values a charger reports over OCPP, or the charging
// periods of an OCPI CDR or Session with their dimension volumes. Both
// become the Usage that Price takes, so a session priced either way costs
// the same.

// MeterValue is one sampled reading of a charger's meter, as OCPP
// MeterValues carry it: the cumulative energy register
// (Energy.Active.Import.Register) in Wh, the power and current (summed
// over phases) at that moment, and whether the EV draws energy from this
// reading to the next (OCPP ChargingState Charging, as opposed to
// SuspendedEV or EVConnected, which count as parking).
type MeterValue struct {
	Time     time.Time
	EnergyWh Dec
	PowerKW  Dec
	CurrentA Dec
	Charging bool
}

// UsageFromMeterValues returns u with the session taken from meter
// values: it starts at the first reading and ends at the last, and each
// pair of neighbouring readings is one charging period holding the
// register's increase. Errors wrap ErrBadUsage.
func UsageFromMeterValues(u Usage, mvs []MeterValue) (Usage, error) {
	if len(mvs) < 2 || len(mvs) > maxPeriods {
		return u, fmt.Errorf("%w: a session needs 2 to %d meter values, got %d", ErrBadUsage, maxPeriods, len(mvs))
	}
	u.Start, u.End, u.Periods = mvs[0].Time, mvs[len(mvs)-1].Time, make([]ChargingPeriod, 0, len(mvs)-1)
	for i := 0; i+1 < len(mvs); i++ {
		a, b := mvs[i], mvs[i+1]
		if !b.Time.After(a.Time) {
			return u, fmt.Errorf("%w: meter value %d is not after the one before", ErrBadUsage, i+1)
		}
		wh := b.EnergyWh.Sub(a.EnergyWh.Decimal)
		if wh.IsNegative() {
			return u, fmt.Errorf("%w: meter value %d: the energy register went back", ErrBadUsage, i+1)
		}
		st := StateParking
		if a.Charging {
			st = StateCharging
		}
		u.Periods = append(u.Periods, ChargingPeriod{Start: a.Time, EnergyKWh: D(wh.Shift(-3)), PowerKW: a.PowerKW, CurrentA: a.CurrentA, State: st})
	}
	return u, nil
}

// CDRPeriod is an OCPI 2.2.1 ChargingPeriod of a CDR or Session: it
// starts at StartDateTime and lasts until the next one starts, the last
// until the session's end.
type CDRPeriod struct {
	StartDateTime string         `json:"start_date_time"`
	Dimensions    []CDRDimension `json:"dimensions"`
	TariffID      string         `json:"tariff_id,omitempty"`
}

// CDRDimension is an OCPI CdrDimension: a CdrDimensionType and its volume
// (kWh, hours, A or kW).
type CDRDimension struct {
	Type   string `json:"type"`
	Volume Num    `json:"volume"`
}

// The OCPI CdrDimensionType values.
var cdrDimensions = []string{"CURRENT", "ENERGY", "ENERGY_EXPORT", "ENERGY_IMPORT", "MAX_CURRENT", "MIN_CURRENT",
	"MAX_POWER", "MIN_POWER", "PARKING_TIME", "POWER", "RESERVATION_TIME", "STATE_OF_CHARGE", "TIME"}

// UsageFromCDRPeriods returns u with the session taken from OCPI charging
// periods; u.End must hold the session's (the CDR's end_date_time).
// Periods with only RESERVATION_TIME come first and make the reservation;
// when no other period follows, the reservation expired. In every other
// period ENERGY is the energy delivered; TIME means charging and
// PARKING_TIME parking, and a period with both is charging for TIME hours,
// then parking; a period with neither is charging when it delivered energy.
// Power is MAX_POWER, else MIN_POWER, else POWER, else ENERGY / TIME;
// current is MAX_CURRENT, else MIN_CURRENT, else CURRENT. A CPO starts a
// new period wherever a restriction can switch (OCPI 2.2.1 CDR module),
// so one value per period is what the restrictions see. Errors wrap
// ErrBadUsage.
func UsageFromCDRPeriods(u Usage, periods []CDRPeriod) (Usage, error) {
	if len(periods) == 0 || len(periods) > maxPeriods {
		return u, fmt.Errorf("%w: a session needs 1 to %d charging periods, got %d", ErrBadUsage, maxPeriods, len(periods))
	}
	u.Periods, u.Reservation = nil, nil
	var resStart time.Time
	for i, p := range periods {
		start, err := parseOCPITime("", p.StartDateTime)
		if err != nil {
			return u, fmt.Errorf("%w: charging_periods[%d].start_date_time %q is not an OCPI DateTime", ErrBadUsage, i, p.StartDateTime)
		}
		end := u.End
		if i+1 < len(periods) {
			if end, err = parseOCPITime("", periods[i+1].StartDateTime); err != nil {
				return u, fmt.Errorf("%w: charging_periods[%d].start_date_time %q is not an OCPI DateTime", ErrBadUsage, i+1, periods[i+1].StartDateTime)
			}
		}
		if !end.After(start) {
			return u, fmt.Errorf("%w: charging_periods[%d] is empty or out of order", ErrBadUsage, i)
		}
		dims := map[string]decimal.Decimal{}
		for j, d := range p.Dimensions {
			if !contains(cdrDimensions, d.Type) {
				return u, fmt.Errorf("%w: charging_periods[%d].dimensions[%d].type %q is not an OCPI CdrDimensionType", ErrBadUsage, i, j, d.Type)
			}
			if _, dup := dims[d.Type]; dup {
				return u, fmt.Errorf("%w: charging_periods[%d] gives %s twice", ErrBadUsage, i, d.Type)
			}
			dims[d.Type] = d.Volume.Decimal
		}
		energy, timeH, parkH := dims["ENERGY"], dims["TIME"], dims["PARKING_TIME"]
		if energy.IsNegative() || timeH.IsNegative() || parkH.IsNegative() {
			return u, fmt.Errorf("%w: charging_periods[%d] has a negative volume", ErrBadUsage, i)
		}
		if _, res := dims["RESERVATION_TIME"]; res && energy.IsZero() && timeH.IsZero() && parkH.IsZero() {
			if len(u.Periods) > 0 {
				return u, fmt.Errorf("%w: charging_periods[%d]: a reservation period after the session started", ErrBadUsage, i)
			}
			if resStart.IsZero() {
				resStart = start
			}
			continue
		}
		power, ok := first(dims, "MAX_POWER", "MIN_POWER", "POWER")
		if !ok && timeH.Sign() > 0 {
			power = energy.DivRound(timeH, 6)
		}
		current, _ := first(dims, "MAX_CURRENT", "MIN_CURRENT", "CURRENT")
		cp := ChargingPeriod{Start: start, EnergyKWh: D(energy), PowerKW: D(power.Abs()), CurrentA: D(current.Abs()), State: StateParking}
		if timeH.Sign() > 0 || (parkH.IsZero() && energy.Sign() > 0) {
			cp.State = StateCharging
		}
		u.Periods = append(u.Periods, cp)
		if timeH.Sign() > 0 && parkH.Sign() > 0 {
			// Charging for TIME hours, then parking to the period's end.
			at := start.Add(time.Duration(timeH.Mul(decimal.NewFromInt(3600)).Round(0).IntPart()) * time.Second)
			if at.After(start) && at.Before(end) {
				u.Periods = append(u.Periods, ChargingPeriod{Start: at, State: StateParking})
			}
		}
	}
	switch {
	case !resStart.IsZero() && len(u.Periods) == 0:
		u.Reservation = &Reservation{Start: resStart, End: u.End, Expired: true}
		u.Start = time.Time{}
	case !resStart.IsZero():
		u.Start = u.Periods[0].Start
		u.Reservation = &Reservation{Start: resStart, End: u.Start}
	default:
		u.Start = u.Periods[0].Start
	}
	return u, nil
}

// first returns the first of the named dimensions present.
func first(dims map[string]decimal.Decimal, names ...string) (decimal.Decimal, bool) {
	for _, n := range names {
		if v, ok := dims[n]; ok {
			return v, true
		}
	}
	return decimal.Zero, false
}
