package contracts

import (
	"fmt"
	"slices"
	"time"

	"github.com/shopspring/decimal"
)

// Dimension is an OCPI 2.2.1 TariffDimensionType: what a price component
// prices.
type Dimension string

// The OCPI tariff dimensions. ENERGY is priced per kWh (step in Wh), TIME
// per hour of charging and PARKING_TIME per hour plugged in but not
// charging (steps in seconds), FLAT once per session.
const (
	DimEnergy      Dimension = "ENERGY"
	DimFlat        Dimension = "FLAT"
	DimTime        Dimension = "TIME"
	DimParkingTime Dimension = "PARKING_TIME"
)

// Bounds on an EV session, so that pricing cost stays proportional to a
// sane document rather than to what a caller sends.
const (
	maxSessionLength = 31 * 24 * time.Hour
	maxPeriods       = 10000
)

// EVCharging is an EV charging tariff body in one of two forms. The
// native form gives one OCPI 2.2.1 style tariff in decimal strings:
// elements evaluated in order, restrictions in the tariff's own time zone,
// optional min/max price. The OCPI form lists OCPI 2.2.1 or 2.3.0 Tariff
// objects exactly as their publisher wrote them (Tariffs); the first one in
// force at the start of a session prices it. The currency is the
// envelope's, and every listed tariff must be in it.
type EVCharging struct {
	// TimeZone is the IANA zone of the charge point (OCPI takes it from
	// the Location); all restrictions are evaluated in it.
	TimeZone string `json:"time_zone"`
	// TaxIncluded is OCPI 2.3.0's tax_included for the native form:
	// TaxYes, TaxNo (the default, as in OCPI 2.2.1) or TaxNA.
	TaxIncluded string          `json:"tax_included,omitempty"`
	Elements    []TariffElement `json:"elements,omitempty"`
	// MinPrice and MaxPrice bound the session total.
	MinPrice *PriceBound `json:"min_price,omitempty"`
	MaxPrice *PriceBound `json:"max_price,omitempty"`
	// Tariffs, given instead of Elements, are OCPI Tariff objects as
	// published, in order of preference.
	Tariffs []OCPITariff `json:"tariffs,omitempty"`

	loc     *time.Location
	tariffs []*evTariff
}

// OCPI 2.3.0 TaxIncluded values.
const (
	TaxYes = "YES" // prices include taxes
	TaxNo  = "NO"  // taxes are added on top of the prices
	TaxNA  = "N/A" // no taxes apply
)

// OCPI ReservationRestrictionType values.
const (
	ReservationActive  = "RESERVATION"
	ReservationExpires = "RESERVATION_EXPIRES"
)

// evTariff is one tariff as the engine prices it, from either form.
type evTariff struct {
	id          string // OCPI tariff id; "" for the native form
	typ         string // OCPI TariffType; "" is valid for all sessions
	from, until time.Time
	elements    []TariffElement
	min, max    *priceLimit
	taxIncluded string
	preauth     *decimal.Decimal
	loc         *time.Location
	current     bool // some restriction names min_current or max_current
}

// priceLimit is a min or max price: before taxes, and optionally after.
type priceLimit struct {
	before decimal.Decimal
	after  *decimal.Decimal
}

// PriceBound is an OCPI Price: an amount excluding VAT, and optionally
// including it. Both bounds apply (OCPI's min/max price note).
type PriceBound struct {
	ExclVAT Dec  `json:"excl_vat"`
	InclVAT *Dec `json:"incl_vat,omitempty"`
}

// TariffElement groups price components that share restrictions.
type TariffElement struct {
	PriceComponents []PriceComponent `json:"price_components"`
	Restrictions    *Restrictions    `json:"restrictions,omitempty"`
}

// PriceComponent prices one dimension: Price excl. VAT per kWh, per hour
// or per session; VAT in percent; StepSize in Wh or seconds (1 for FLAT).
type PriceComponent struct {
	Type     Dimension `json:"type"`
	Price    Dec       `json:"price"`
	VAT      *Dec      `json:"vat,omitempty"`
	StepSize Dec       `json:"step_size"`

	step int64
}

// Restrictions are OCPI TariffRestrictions, all of which must hold for the
// element to apply to a stretch of the session. Times of day and dates are
// local to the tariff's zone; start bounds are inclusive, end bounds
// exclusive. Current is the sum over all phases, in A; power in kW. An
// element with Reservation set prices only the reservation before a
// session (FLAT and TIME only), an element without it only the session.
type Restrictions struct {
	StartTime   string   `json:"start_time,omitempty"`
	EndTime     string   `json:"end_time,omitempty"`
	StartDate   string   `json:"start_date,omitempty"`
	EndDate     string   `json:"end_date,omitempty"`
	MinKWh      *Dec     `json:"min_kwh,omitempty"`
	MaxKWh      *Dec     `json:"max_kwh,omitempty"`
	MinCurrent  *Dec     `json:"min_current,omitempty"`
	MaxCurrent  *Dec     `json:"max_current,omitempty"`
	MinPower    *Dec     `json:"min_power,omitempty"`
	MaxPower    *Dec     `json:"max_power,omitempty"`
	MinDuration *Dec     `json:"min_duration,omitempty"`
	MaxDuration *Dec     `json:"max_duration,omitempty"`
	DayOfWeek   []string `json:"day_of_week,omitempty"`
	// Reservation is ReservationActive or ReservationExpires.
	Reservation string `json:"reservation,omitempty"`

	clock              clockWindow
	startDate, endDate int   // yyyymmdd, 0 when absent
	days               uint8 // bit per time.Weekday, 0 for any day
	minDur, maxDur     int64 // seconds, -1 when absent
}

func (t *EVCharging) validate(currency string) error {
	var err error
	if t.loc, err = loadZone("ev_charging.time_zone", t.TimeZone); err != nil {
		return err
	}
	t.tariffs = nil
	switch {
	case len(t.Elements) > 0 && len(t.Tariffs) > 0:
		return fmt.Errorf("%w: ev_charging takes elements or tariffs, not both", ErrInvalid)
	case len(t.Tariffs) > 0:
		if t.MinPrice != nil || t.MaxPrice != nil || t.TaxIncluded != "" {
			return fmt.Errorf("%w: ev_charging with tariffs takes prices and taxes from each tariff", ErrInvalid)
		}
		for i := range t.Tariffs {
			tr, err := t.Tariffs[i].engine(fmt.Sprintf("ev_charging.tariffs[%d]", i), currency, t.loc)
			if err != nil {
				return err
			}
			t.tariffs = append(t.tariffs, tr)
		}
		return nil
	case len(t.Elements) == 0:
		return fmt.Errorf("%w: ev_charging needs at least one element", ErrInvalid)
	}
	tr := &evTariff{elements: t.Elements, loc: t.loc}
	if tr.taxIncluded, err = taxIncluded("ev_charging.tax_included", t.TaxIncluded); err != nil {
		return err
	}
	if tr.current, err = validateElements("ev_charging", tr.elements); err != nil {
		return err
	}
	if t.MinPrice != nil {
		tr.min = &priceLimit{before: t.MinPrice.ExclVAT.Decimal}
		if t.MinPrice.InclVAT != nil {
			tr.min.after = &t.MinPrice.InclVAT.Decimal
		}
	}
	if t.MaxPrice != nil {
		tr.max = &priceLimit{before: t.MaxPrice.ExclVAT.Decimal}
		if t.MaxPrice.InclVAT != nil {
			tr.max.after = &t.MaxPrice.InclVAT.Decimal
		}
	}
	if err := validateLimits("ev_charging", tr.min, tr.max); err != nil {
		return err
	}
	t.tariffs = []*evTariff{tr}
	return nil
}

// taxIncluded checks an OCPI TaxIncluded value; absent means TaxNo.
func taxIncluded(field, v string) (string, error) {
	switch v {
	case "":
		return TaxNo, nil
	case TaxYes, TaxNo, TaxNA:
		return v, nil
	}
	return "", fmt.Errorf("%w: %s %q is not YES, NO or N/A", ErrInvalid, field, v)
}

// validateElements checks tariff elements and reports whether any of them
// restricts current.
func validateElements(field string, els []TariffElement) (current bool, err error) {
	if len(els) == 0 {
		return false, fmt.Errorf("%w: %s needs at least one element", ErrInvalid, field)
	}
	for i := range els {
		el := &els[i]
		f := fmt.Sprintf("%s.elements[%d]", field, i)
		if len(el.PriceComponents) == 0 {
			return false, fmt.Errorf("%w: %s has no price_components", ErrInvalid, f)
		}
		for j := range el.PriceComponents {
			if err := el.PriceComponents[j].validate(fmt.Sprintf("%s.price_components[%d]", f, j)); err != nil {
				return false, err
			}
		}
		if r := el.Restrictions; r != nil {
			if err := r.validate(f + ".restrictions"); err != nil {
				return false, err
			}
			current = current || r.MinCurrent != nil || r.MaxCurrent != nil
			if r.Reservation != "" {
				// OCPI: a reservation has only FLAT and TIME.
				for j, pc := range el.PriceComponents {
					if pc.Type != DimFlat && pc.Type != DimTime {
						return false, fmt.Errorf("%w: %s.price_components[%d]: a reservation element prices only FLAT and TIME", ErrInvalid, f, j)
					}
				}
			}
		}
	}
	return current, nil
}

// validateLimits checks a tariff's min and max price.
func validateLimits(field string, lo, hi *priceLimit) error {
	for _, b := range []struct {
		name string
		p    *priceLimit
	}{{"min_price", lo}, {"max_price", hi}} {
		if b.p == nil {
			continue
		}
		if b.p.before.IsNegative() {
			return fmt.Errorf("%w: %s.%s must not be negative", ErrInvalid, field, b.name)
		}
		if b.p.after != nil && b.p.after.LessThan(b.p.before) {
			return fmt.Errorf("%w: %s.%s after taxes is below before taxes", ErrInvalid, field, b.name)
		}
	}
	if lo != nil && hi != nil {
		if lo.before.GreaterThan(hi.before) || (lo.after != nil && hi.after != nil && lo.after.GreaterThan(*hi.after)) {
			return fmt.Errorf("%w: %s.min_price is above max_price", ErrInvalid, field)
		}
	}
	return nil
}

// tariffFor returns the tariff that prices u: the first, in document
// order, whose type suits the session and whose validity window holds the
// session's start (the reservation's start when there is one), since a
// driver accepts the tariff in force when they begin.
func (t *EVCharging) tariffFor(u Usage) (*evTariff, error) {
	at := u.Start
	if u.Reservation != nil {
		at = u.Reservation.Start
	}
	want := u.TariffType
	if want == "" {
		want = TariffRegular
	}
	for _, tr := range t.tariffs {
		if tr.typ != "" && tr.typ != want {
			continue
		}
		if (!tr.from.IsZero() && at.Before(tr.from)) || (!tr.until.IsZero() && !at.Before(tr.until)) {
			continue
		}
		return tr, nil
	}
	return nil, fmt.Errorf("%w: no %s tariff in force at %s", ErrNoPrice, want, at.UTC().Format(time.RFC3339))
}

func (p *PriceComponent) validate(field string) error {
	switch p.Type {
	case DimEnergy, DimFlat, DimTime, DimParkingTime:
	default:
		return fmt.Errorf("%w: %s.type %q is not ENERGY, FLAT, TIME or PARKING_TIME", ErrInvalid, field, p.Type)
	}
	if err := nonNeg(field+".price", p.Price); err != nil {
		return err
	}
	if p.VAT != nil {
		if err := nonNeg(field+".vat", *p.VAT); err != nil {
			return err
		}
		if p.VAT.GreaterThan(decimal.NewFromInt(100)) {
			return fmt.Errorf("%w: %s.vat is over 100 percent", ErrInvalid, field)
		}
	}
	var err error
	if p.Type == DimFlat {
		// OCPI: FLAT has no unit for step_size; any whole number is
		// accepted and none is used.
		_, err = whole(field+".step_size", p.StepSize, 0, 1_000_000_000)
		p.step = 1
		return err
	}
	p.step, err = whole(field+".step_size", p.StepSize, 1, 1_000_000_000)
	return err
}

func (r *Restrictions) validate(field string) error {
	var err error
	if r.clock, err = newClockWindow(field, r.StartTime, r.EndTime); err != nil {
		return err
	}
	if r.StartDate != "" {
		if r.startDate, err = parseDate(field+".start_date", r.StartDate); err != nil {
			return err
		}
	}
	if r.EndDate != "" {
		if r.endDate, err = parseDate(field+".end_date", r.EndDate); err != nil {
			return err
		}
	}
	if r.days, err = parseDays(field+".day_of_week", r.DayOfWeek); err != nil {
		return err
	}
	for _, b := range []struct {
		name string
		d    *Dec
	}{{"min_kwh", r.MinKWh}, {"max_kwh", r.MaxKWh}, {"min_current", r.MinCurrent}, {"max_current", r.MaxCurrent},
		{"min_power", r.MinPower}, {"max_power", r.MaxPower}} {
		if b.d != nil {
			if err := nonNeg(field+"."+b.name, *b.d); err != nil {
				return err
			}
		}
	}
	switch r.Reservation {
	case "", ReservationActive, ReservationExpires:
	default:
		return fmt.Errorf("%w: %s.reservation %q is not %s or %s", ErrInvalid, field, r.Reservation, ReservationActive, ReservationExpires)
	}
	r.minDur, r.maxDur = -1, -1
	if r.MinDuration != nil {
		if r.minDur, err = whole(field+".min_duration", *r.MinDuration, 0, int64(maxSessionLength/time.Second)); err != nil {
			return err
		}
	}
	if r.MaxDuration != nil {
		if r.maxDur, err = whole(field+".max_duration", *r.MaxDuration, 0, int64(maxSessionLength/time.Second)); err != nil {
			return err
		}
	}
	return nil
}

// moment is what restrictions are evaluated against: the start of a piece
// of the session.
type moment struct {
	local    time.Time       // piece start in the tariff's zone
	elapsed  time.Duration   // since session start
	kwh      decimal.Decimal // energy delivered before the piece
	powerKW  decimal.Decimal
	currentA decimal.Decimal
	charging bool
}

func (r *Restrictions) match(m moment) bool {
	if r == nil {
		return true
	}
	if !r.clock.contains(clockOf(m.local)) {
		return false
	}
	day := dateKey(m.local)
	if (r.startDate != 0 && day < r.startDate) || (r.endDate != 0 && day >= r.endDate) {
		return false
	}
	if r.days != 0 && r.days&(1<<m.local.Weekday()) == 0 {
		return false
	}
	if (r.MinKWh != nil && m.kwh.LessThan(r.MinKWh.Decimal)) || (r.MaxKWh != nil && !m.kwh.LessThan(r.MaxKWh.Decimal)) {
		return false
	}
	if (r.MinPower != nil && m.powerKW.LessThan(r.MinPower.Decimal)) || (r.MaxPower != nil && !m.powerKW.LessThan(r.MaxPower.Decimal)) {
		return false
	}
	if (r.MinCurrent != nil && m.currentA.LessThan(r.MinCurrent.Decimal)) || (r.MaxCurrent != nil && !m.currentA.LessThan(r.MaxCurrent.Decimal)) {
		return false
	}
	sec := int64(m.elapsed / time.Second)
	if (r.minDur >= 0 && sec < r.minDur) || (r.maxDur >= 0 && sec >= r.maxDur) {
		return false
	}
	return true
}

// find returns the first element, in document order, that has a component
// of dimension dim and whose restrictions all hold at m: OCPI looks up each
// dimension separately. resv selects session elements ("") or the
// reservation elements of that ReservationRestrictionType.
func (t *evTariff) find(dim Dimension, m moment, resv string) (int, *PriceComponent) {
	for i := range t.elements {
		el := &t.elements[i]
		if r := el.Restrictions; (r == nil && resv != "") || (r != nil && r.Reservation != resv) {
			continue
		}
		for j := range el.PriceComponents {
			if el.PriceComponents[j].Type == dim && el.Restrictions.match(m) {
				return i, &el.PriceComponents[j]
			}
		}
	}
	return -1, nil
}

// piece is a stretch of the session within which no restriction can change
// except through energy: the caller's periods cut at every local time of
// day and every session duration that some restriction names, and at local
// midnight (dates and weekdays change there).
type piece struct {
	start, end time.Time
	wh         decimal.Decimal
	powerKW    decimal.Decimal
	currentA   decimal.Decimal
	charging   bool
}

func (t *evTariff) pieces(u Usage) ([]piece, error) {
	n := len(u.Periods)
	switch {
	case n == 0 || n > maxPeriods:
		return nil, fmt.Errorf("%w: an EV session needs 1 to %d periods, got %d", ErrBadUsage, maxPeriods, n)
	case !u.End.After(u.Start) || u.End.Sub(u.Start) > maxSessionLength:
		return nil, fmt.Errorf("%w: session end must follow its start by at most %s", ErrBadUsage, maxSessionLength)
	case !u.Periods[0].Start.Equal(u.Start):
		return nil, fmt.Errorf("%w: first period must begin at the session start", ErrBadUsage)
	}

	// Where restrictions can switch: clock times (and midnight) on every
	// local day, and fixed offsets from the session start.
	clocks := []int{0}
	var offsets []time.Duration
	for i := range t.elements {
		r := t.elements[i].Restrictions
		if r == nil {
			continue
		}
		for _, c := range []int{r.clock.start, r.clock.end} {
			if c > 0 {
				clocks = append(clocks, c)
			}
		}
		for _, d := range []int64{r.minDur, r.maxDur} {
			if d > 0 {
				offsets = append(offsets, time.Duration(d)*time.Second)
			}
		}
	}

	var out []piece
	for i, p := range u.Periods {
		end := u.End
		if i+1 < n {
			end = u.Periods[i+1].Start
		}
		if !end.After(p.Start) {
			return nil, fmt.Errorf("%w: period %d is empty or out of order", ErrBadUsage, i)
		}
		if p.State != StateCharging && p.State != StateParking {
			return nil, fmt.Errorf("%w: period %d state %q is not %q or %q", ErrBadUsage, i, p.State, StateCharging, StateParking)
		}
		if p.EnergyKWh.IsNegative() || p.PowerKW.IsNegative() || p.CurrentA.IsNegative() {
			return nil, fmt.Errorf("%w: period %d has negative energy, power or current", ErrBadUsage, i)
		}
		if t.current && p.State == StateCharging && p.CurrentA.Sign() == 0 {
			return nil, fmt.Errorf("%w: the tariff restricts current and charging period %d gives none", ErrBadUsage, i)
		}

		cuts := []time.Time{p.Start, end}
		first := p.Start.In(t.loc)
		for d := 0; ; d++ {
			if !time.Date(first.Year(), first.Month(), first.Day()+d, 0, 0, 0, 0, t.loc).Before(end) && d > 0 {
				break
			}
			for _, c := range clocks {
				at := time.Date(first.Year(), first.Month(), first.Day()+d, c/3600, c%3600/60, 0, 0, t.loc)
				if at.After(p.Start) && at.Before(end) {
					cuts = append(cuts, at)
				}
			}
		}
		for _, off := range offsets {
			if at := u.Start.Add(off); at.After(p.Start) && at.Before(end) {
				cuts = append(cuts, at)
			}
		}
		slices.SortFunc(cuts, func(a, b time.Time) int { return a.Compare(b) })
		cuts = slices.CompactFunc(cuts, func(a, b time.Time) bool { return a.Equal(b) })

		// Spread the period's energy over its pieces in proportion to
		// time, to the µWh; the last piece takes the remainder so the
		// period's energy is kept exactly.
		wh := p.EnergyKWh.Shift(3)
		total := decimal.NewFromInt(int64(end.Sub(p.Start)))
		left := wh
		for k := 0; k+1 < len(cuts); k++ {
			share := left
			if k+2 < len(cuts) {
				share = wh.Mul(decimal.NewFromInt(int64(cuts[k+1].Sub(cuts[k])))).DivRound(total, 6)
				left = left.Sub(share)
			}
			out = append(out, piece{start: cuts[k], end: cuts[k+1], wh: share, powerKW: p.PowerKW.Decimal,
				currentA: p.CurrentA.Decimal, charging: p.State == StateCharging})
		}
	}
	return out, nil
}

// Line components of a reservation; the session's use the Dimension names.
const (
	compReservationFlat Dimension = "RESERVATION_FLAT"
	compReservationTime Dimension = "RESERVATION_TIME"
)

// use is one dimension billed over one piece by one element.
type use struct {
	dim  Dimension
	elem int
	pc   *PriceComponent
	qty  decimal.Decimal // Wh, seconds, or 1 for FLAT
}

// items applies the tariff to a session as OCPI 2.2.1 prescribes: per
// piece and per dimension the first matching element; FLAT once, from the
// session start; then step_size rounding of the totals (OCPI 2.2.1 CDR
// module, as OCPI 2.3.0 spells it out): ENERGY once per session, and TIME
// and PARKING_TIME once together, which rounds only the time-based
// dimension billed last in the session (charging followed by parking rounds
// the parking alone); each with the step_size of the last element used for
// it, the rounded-up remainder billed at that element's price. A
// reservation before the session is priced by the reservation elements,
// its time rounded on its own.
func (t *evTariff) items(u Usage) ([]item, error) {
	var uses []use
	if r := u.Reservation; r != nil {
		ru, err := t.reservationUses(u)
		if err != nil {
			return nil, err
		}
		uses = append(uses, ru...)
	}
	if r := u.Reservation; r == nil || !r.Expired {
		su, err := t.sessionUses(u)
		if err != nil {
			return nil, err
		}
		uses = append(uses, su...)
	}

	// One line per (dimension, element), in order of first use.
	type key struct {
		dim  Dimension
		elem int
	}
	index := map[key]int{}
	var sums []use
	for _, us := range uses {
		k := key{us.dim, us.elem}
		if j, ok := index[k]; ok {
			sums[j].qty = sums[j].qty.Add(us.qty)
			continue
		}
		index[k] = len(sums)
		sums = append(sums, us)
	}
	items := make([]item, 0, len(sums))
	for _, s := range sums {
		it := item{component: string(s.dim), element: s.elem, unitPrice: s.pc.Price.Decimal, vat: s.pc.VAT, den: 1,
			taxIncluded: t.taxIncluded == TaxYes}
		if t.taxIncluded == TaxNA {
			it.vat = nil
		}
		switch s.dim {
		case DimFlat:
			it.quantity, it.unit, it.num = decimal.NewFromInt(1), "session", s.pc.Price.Decimal
		case compReservationFlat:
			it.quantity, it.unit, it.num = decimal.NewFromInt(1), "reservation", s.pc.Price.Decimal
		case DimEnergy:
			it.quantity, it.unit = s.qty.Shift(-3), "kWh"
			it.num = s.pc.Price.Mul(it.quantity)
		default:
			it.quantity, it.unit = s.qty.DivRound(decimal.NewFromInt(3600), 9), "h"
			it.num, it.den = s.pc.Price.Mul(s.qty), 3600
		}
		items = append(items, it)
	}
	return items, nil
}

// sessionUses prices the charging session itself.
func (t *evTariff) sessionUses(u Usage) ([]use, error) {
	ps, err := t.pieces(u)
	if err != nil {
		return nil, err
	}
	var uses []use
	kwh := decimal.Zero
	for i, p := range ps {
		m := moment{local: p.start.In(t.loc), elapsed: p.start.Sub(u.Start), kwh: kwh, powerKW: p.powerKW,
			currentA: p.currentA, charging: p.charging}
		if i == 0 {
			if e, pc := t.find(DimFlat, m, ""); pc != nil {
				uses = append(uses, use{DimFlat, e, pc, decimal.NewFromInt(1)})
			}
		}
		if p.wh.Sign() > 0 {
			if e, pc := t.find(DimEnergy, m, ""); pc != nil {
				uses = append(uses, use{DimEnergy, e, pc, p.wh})
			}
		}
		dim := DimParkingTime
		if p.charging {
			dim = DimTime
		}
		if e, pc := t.find(dim, m, ""); pc != nil {
			uses = append(uses, use{dim, e, pc, decimal.New(int64(p.end.Sub(p.start)), -9)})
		}
		kwh = kwh.Add(p.wh.Shift(-3))
	}

	roundUp(uses, func(d Dimension) bool { return d == DimEnergy })
	for i := len(uses) - 1; i >= 0; i-- {
		if d := uses[i].dim; d == DimTime || d == DimParkingTime {
			roundUp(uses, func(x Dimension) bool { return x == d })
			break
		}
	}
	return uses, nil
}

// reservationUses prices the reservation before a session, or one that
// expired without a session (OCPI ReservationRestrictionType): FLAT once
// and TIME over the reservation from the RESERVATION elements; for an
// expired reservation also the RESERVATION_EXPIRES FLAT (an expiry fee),
// and its TIME in place of the RESERVATION one where it has one.
func (t *evTariff) reservationUses(u Usage) ([]use, error) {
	r := u.Reservation
	switch {
	case !r.End.After(r.Start) || r.End.Sub(r.Start) > maxSessionLength:
		return nil, fmt.Errorf("%w: reservation end must follow its start by at most %s", ErrBadUsage, maxSessionLength)
	case r.Expired && len(u.Periods) > 0:
		return nil, fmt.Errorf("%w: an expired reservation has no charging periods", ErrBadUsage)
	case !r.Expired && !r.End.Equal(u.Start):
		return nil, fmt.Errorf("%w: a reservation ends when its session starts", ErrBadUsage)
	}
	ps, err := t.pieces(Usage{Start: r.Start, End: r.End, Periods: []ChargingPeriod{{Start: r.Start, State: StateParking}}})
	if err != nil {
		return nil, err
	}
	var uses []use
	for i, p := range ps {
		m := moment{local: p.start.In(t.loc), elapsed: p.start.Sub(r.Start)}
		if i == 0 {
			if e, pc := t.find(DimFlat, m, ReservationActive); pc != nil {
				uses = append(uses, use{compReservationFlat, e, pc, decimal.NewFromInt(1)})
			}
			if e, pc := t.find(DimFlat, m, ReservationExpires); r.Expired && pc != nil {
				uses = append(uses, use{compReservationFlat, e, pc, decimal.NewFromInt(1)})
			}
		}
		e, pc := -1, (*PriceComponent)(nil)
		if r.Expired {
			e, pc = t.find(DimTime, m, ReservationExpires)
		}
		if pc == nil {
			e, pc = t.find(DimTime, m, ReservationActive)
		}
		if pc != nil {
			uses = append(uses, use{compReservationTime, e, pc, decimal.New(int64(p.end.Sub(p.start)), -9)})
		}
	}
	roundUp(uses, func(d Dimension) bool { return d == compReservationTime })
	return uses, nil
}

// roundUp rounds the total quantity of the selected dimension up to a
// multiple of the step_size of the last use of it, adding the difference
// to that last use.
func roundUp(uses []use, sel func(Dimension) bool) {
	last := -1
	total := decimal.Zero
	for i, us := range uses {
		if sel(us.dim) {
			last = i
			total = total.Add(us.qty)
		}
	}
	if last < 0 {
		return
	}
	step := decimal.NewFromInt(uses[last].pc.step)
	q, r := total.QuoRem(step, 0)
	if r.Sign() > 0 {
		q = q.Add(decimal.NewFromInt(1))
	}
	uses[last].qty = uses[last].qty.Add(q.Mul(step).Sub(total))
}

// bound applies min_price and max_price to the session (msat). subtotal
// is the sum of the lines at the tariff's prices: before taxes, or after
// them when the tariff includes taxes; tax is the lines' tax. Both sides
// of a bound apply (OCPI's note on min_price and max_price): first the
// total before taxes is clamped to the before-tax bounds, the total after
// taxes scaling with it; then the total after taxes is clamped to the
// after-tax bounds, which changes only the tax. The payer is charged the
// before-tax total, or the after-tax total for a tax-included tariff; the
// returned tax is after − before. A tariff without VAT rates has an unknown
// tax, counted as zero; one with no taxes (N/A) ignores after-tax bounds.
func (t *evTariff) bound(subtotal, tax, rate decimal.Decimal) (charged, taxOut decimal.Decimal, adj string) {
	before, after := subtotal, subtotal.Add(tax)
	if t.taxIncluded == TaxYes {
		before = subtotal.Sub(tax)
		after = subtotal
	}
	msat := func(d decimal.Decimal) decimal.Decimal { return d.Mul(rate).Round(0) }
	b := before
	if t.min != nil && b.LessThan(msat(t.min.before)) {
		b, adj = msat(t.min.before), "MIN_PRICE"
	}
	if t.max != nil && b.GreaterThan(msat(t.max.before)) {
		b, adj = msat(t.max.before), "MAX_PRICE"
	}
	a := after
	if !b.Equal(before) {
		a = b
		if before.Sign() > 0 {
			a = after.Mul(b).DivRound(before, 0)
		}
	}
	if t.taxIncluded != TaxNA {
		if t.min != nil && t.min.after != nil && a.LessThan(msat(*t.min.after)) {
			a, adj = msat(*t.min.after), "MIN_PRICE"
		}
		if t.max != nil && t.max.after != nil && a.GreaterThan(msat(*t.max.after)) {
			a, adj = msat(*t.max.after), "MAX_PRICE"
		}
	}
	if a.LessThan(b) {
		a = b // a bound can lower the tax to zero, never below
	}
	if t.taxIncluded == TaxYes {
		return a, a.Sub(b), adj
	}
	return b, a.Sub(b), adj
}
