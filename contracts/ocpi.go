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

// EVCharging is an OCPI 2.2.1 Tariff body: elements evaluated in order,
// restrictions in the tariff's own time zone, optional min/max price. The
// currency is the envelope's.
type EVCharging struct {
	// TimeZone is the IANA zone of the charge point (OCPI takes it from
	// the Location); all restrictions are evaluated in it.
	TimeZone string          `json:"time_zone"`
	Elements []TariffElement `json:"elements"`
	// MinPrice and MaxPrice bound the session total.
	MinPrice *PriceBound `json:"min_price,omitempty"`
	MaxPrice *PriceBound `json:"max_price,omitempty"`

	loc *time.Location
}

// PriceBound is an OCPI Price: an amount excluding VAT, and optionally
// including it. The hub charges the excl-VAT amount.
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
// exclusive. OCPI's current (A) and reservation restrictions are not
// supported: the hub knows power, not current, and has no reservations.
type Restrictions struct {
	StartTime   string   `json:"start_time,omitempty"`
	EndTime     string   `json:"end_time,omitempty"`
	StartDate   string   `json:"start_date,omitempty"`
	EndDate     string   `json:"end_date,omitempty"`
	MinKWh      *Dec     `json:"min_kwh,omitempty"`
	MaxKWh      *Dec     `json:"max_kwh,omitempty"`
	MinPower    *Dec     `json:"min_power,omitempty"`
	MaxPower    *Dec     `json:"max_power,omitempty"`
	MinDuration *Dec     `json:"min_duration,omitempty"`
	MaxDuration *Dec     `json:"max_duration,omitempty"`
	DayOfWeek   []string `json:"day_of_week,omitempty"`

	clock              clockWindow
	startDate, endDate int   // yyyymmdd, 0 when absent
	days               uint8 // bit per time.Weekday, 0 for any day
	minDur, maxDur     int64 // seconds, -1 when absent
}

func (t *EVCharging) validate() error {
	var err error
	if t.loc, err = loadZone("ev_charging.time_zone", t.TimeZone); err != nil {
		return err
	}
	if len(t.Elements) == 0 {
		return fmt.Errorf("%w: ev_charging needs at least one element", ErrInvalid)
	}
	for i := range t.Elements {
		el := &t.Elements[i]
		field := fmt.Sprintf("ev_charging.elements[%d]", i)
		if len(el.PriceComponents) == 0 {
			return fmt.Errorf("%w: %s has no price_components", ErrInvalid, field)
		}
		for j := range el.PriceComponents {
			if err := el.PriceComponents[j].validate(fmt.Sprintf("%s.price_components[%d]", field, j)); err != nil {
				return err
			}
		}
		if el.Restrictions != nil {
			if err := el.Restrictions.validate(field + ".restrictions"); err != nil {
				return err
			}
		}
	}
	for _, b := range []struct {
		name string
		p    *PriceBound
	}{{"min_price", t.MinPrice}, {"max_price", t.MaxPrice}} {
		if b.p == nil {
			continue
		}
		if err := nonNeg("ev_charging."+b.name+".excl_vat", b.p.ExclVAT); err != nil {
			return err
		}
		if b.p.InclVAT != nil && b.p.InclVAT.LessThan(b.p.ExclVAT.Decimal) {
			return fmt.Errorf("%w: ev_charging.%s.incl_vat is below excl_vat", ErrInvalid, b.name)
		}
	}
	if t.MinPrice != nil && t.MaxPrice != nil && t.MinPrice.ExclVAT.GreaterThan(t.MaxPrice.ExclVAT.Decimal) {
		return fmt.Errorf("%w: ev_charging.min_price is above max_price", ErrInvalid)
	}
	return nil
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
	}{{"min_kwh", r.MinKWh}, {"max_kwh", r.MaxKWh}, {"min_power", r.MinPower}, {"max_power", r.MaxPower}} {
		if b.d != nil {
			if err := nonNeg(field+"."+b.name, *b.d); err != nil {
				return err
			}
		}
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
	sec := int64(m.elapsed / time.Second)
	if (r.minDur >= 0 && sec < r.minDur) || (r.maxDur >= 0 && sec >= r.maxDur) {
		return false
	}
	return true
}

// find returns the first element, in document order, that has a component
// of dimension dim and whose restrictions all hold at m: OCPI looks up each
// dimension separately.
func (t *EVCharging) find(dim Dimension, m moment) (int, *PriceComponent) {
	for i := range t.Elements {
		el := &t.Elements[i]
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
	charging   bool
}

func (t *EVCharging) pieces(u Usage) ([]piece, error) {
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
	for i := range t.Elements {
		r := t.Elements[i].Restrictions
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
		if p.EnergyKWh.IsNegative() || p.PowerKW.IsNegative() {
			return nil, fmt.Errorf("%w: period %d has negative energy or power", ErrBadUsage, i)
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
			out = append(out, piece{start: cuts[k], end: cuts[k+1], wh: share, powerKW: p.PowerKW.Decimal, charging: p.State == StateCharging})
		}
	}
	return out, nil
}

// use is one dimension billed over one piece by one element.
type use struct {
	dim  Dimension
	elem int
	pc   *PriceComponent
	qty  decimal.Decimal // Wh, seconds, or 1 for FLAT
}

// items applies the tariff to a session as OCPI 2.2.1 prescribes: per
// piece and per dimension the first matching element; FLAT once, from the
// session start; then step_size rounding of the totals: ENERGY always, and
// of TIME and PARKING_TIME only the dimension billed last in the session,
// each with the step_size of the last element used for it, the rounded-up
// remainder billed at that element's price.
func (t *EVCharging) items(u Usage) ([]item, error) {
	ps, err := t.pieces(u)
	if err != nil {
		return nil, err
	}
	var uses []use
	kwh := decimal.Zero
	for i, p := range ps {
		m := moment{local: p.start.In(t.loc), elapsed: p.start.Sub(u.Start), kwh: kwh, powerKW: p.powerKW, charging: p.charging}
		if i == 0 {
			if e, pc := t.find(DimFlat, m); pc != nil {
				uses = append(uses, use{DimFlat, e, pc, decimal.NewFromInt(1)})
			}
		}
		if p.wh.Sign() > 0 {
			if e, pc := t.find(DimEnergy, m); pc != nil {
				uses = append(uses, use{DimEnergy, e, pc, p.wh})
			}
		}
		dim := DimParkingTime
		if p.charging {
			dim = DimTime
		}
		if e, pc := t.find(dim, m); pc != nil {
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
		it := item{component: string(s.dim), element: s.elem, unitPrice: s.pc.Price.Decimal, vat: s.pc.VAT, den: 1}
		switch s.dim {
		case DimFlat:
			it.quantity, it.unit, it.num = decimal.NewFromInt(1), "session", s.pc.Price.Decimal
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

// bound applies min_price and max_price to the session subtotal (msat,
// excl. VAT). When a bound replaces the subtotal, VAT becomes the bound's
// incl − excl difference if the tariff gives incl_vat, else the line VAT
// scaled by total/subtotal, rounded half up.
func (t *EVCharging) bound(subtotal, vat, rate decimal.Decimal) (decimal.Decimal, decimal.Decimal, string) {
	apply := func(b *PriceBound, adj string) (decimal.Decimal, decimal.Decimal, string) {
		total := b.ExclVAT.Mul(rate).Round(0)
		switch {
		case b.InclVAT != nil:
			vat = b.InclVAT.Mul(rate).Round(0).Sub(total)
		case subtotal.Sign() > 0:
			vat = vat.Mul(total).DivRound(subtotal, 0)
		default:
			vat = decimal.Zero
		}
		return total, vat, adj
	}
	if b := t.MinPrice; b != nil && subtotal.LessThan(b.ExclVAT.Mul(rate).Round(0)) {
		return apply(b, "MIN_PRICE")
	}
	if b := t.MaxPrice; b != nil && subtotal.GreaterThan(b.ExclVAT.Mul(rate).Round(0)) {
		return apply(b, "MAX_PRICE")
	}
	return subtotal, vat, ""
}
