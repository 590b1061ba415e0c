package contracts

import (
	"fmt"
	"sort"
	"time"

	"github.com/shopspring/decimal"
)

// Toll is a toll table: a price per passage by vehicle class and local time
// band. Bands are tried in order; the first whose time and day match and
// that prices the vehicle class applies, else Default.
type Toll struct {
	TimeZone string     `json:"time_zone"`
	Bands    []TollBand `json:"bands,omitempty"`
	// Default prices, per vehicle class, passages outside every band.
	Default map[string]Dec `json:"default,omitempty"`

	loc *time.Location
}

// TollBand prices passages in a local time-of-day window, optionally only
// on some days of the week.
type TollBand struct {
	Name      string   `json:"name,omitempty"`
	StartTime string   `json:"start_time,omitempty"`
	EndTime   string   `json:"end_time,omitempty"`
	DayOfWeek []string `json:"day_of_week,omitempty"`
	// Prices per passage, by vehicle class.
	Prices map[string]Dec `json:"prices"`

	clock clockWindow
	days  uint8
}

func (t *Toll) validate() error {
	var err error
	if t.loc, err = loadZone("toll.time_zone", t.TimeZone); err != nil {
		return err
	}
	if len(t.Bands) == 0 && len(t.Default) == 0 {
		return fmt.Errorf("%w: toll needs bands or default prices", ErrInvalid)
	}
	for i := range t.Bands {
		b := &t.Bands[i]
		field := fmt.Sprintf("toll.bands[%d]", i)
		if b.clock, err = newClockWindow(field, b.StartTime, b.EndTime); err != nil {
			return err
		}
		if b.days, err = parseDays(field+".day_of_week", b.DayOfWeek); err != nil {
			return err
		}
		if len(b.Prices) == 0 {
			return fmt.Errorf("%w: %s has no prices", ErrInvalid, field)
		}
		if err := validClassPrices(field+".prices", b.Prices); err != nil {
			return err
		}
	}
	return validClassPrices("toll.default", t.Default)
}

func validClassPrices(field string, prices map[string]Dec) error {
	classes := make([]string, 0, len(prices))
	for class := range prices {
		classes = append(classes, class)
	}
	sort.Strings(classes) // so the first error reported does not vary
	for _, class := range classes {
		if class == "" || len(class) > 64 {
			return fmt.Errorf("%w: %s: vehicle class must be 1 to 64 bytes", ErrInvalid, field)
		}
		if err := nonNeg(field+"."+class, prices[class]); err != nil {
			return err
		}
	}
	return nil
}

func (t *Toll) items(u Usage) ([]item, error) {
	if u.VehicleClass == "" || u.EventTime.IsZero() {
		return nil, fmt.Errorf("%w: a passage needs vehicle_class and event_time", ErrBadUsage)
	}
	if u.Unit != "" && u.Unit != "passage" {
		return nil, fmt.Errorf("%w: toll unit is passage, got %q", ErrBadUsage, u.Unit)
	}
	if !u.Quantity.IsInteger() || u.Quantity.LessThan(decimal.NewFromInt(1)) || u.Quantity.GreaterThan(decimal.NewFromInt(1_000_000)) {
		return nil, fmt.Errorf("%w: passages must be a whole number from 1 to 1000000", ErrBadUsage)
	}
	local := u.EventTime.In(t.loc)
	elem, price, ok := -1, Dec{}, false
	for i := range t.Bands {
		b := &t.Bands[i]
		if !b.clock.contains(clockOf(local)) || (b.days != 0 && b.days&(1<<local.Weekday()) == 0) {
			continue
		}
		if price, ok = b.Prices[u.VehicleClass]; ok {
			elem = i
			break
		}
	}
	if !ok {
		if price, ok = t.Default[u.VehicleClass]; !ok {
			return nil, fmt.Errorf("%w: no toll for vehicle class %q at %s", ErrNoPrice, u.VehicleClass, local.Format(time.RFC3339))
		}
	}
	return []item{{
		component: "PASSAGE", element: elem, quantity: u.Quantity.Decimal, unit: "passage",
		unitPrice: price.Decimal, num: price.Mul(u.Quantity.Decimal), den: 1,
	}}, nil
}

// Bandwidth windows: the hub resets the cumulative volume at the start of
// each, in the contract's time zone.
const (
	WindowDay   = "day"
	WindowWeek  = "week"
	WindowMonth = "month"
)

// Bandwidth prices data per MB with volume tiers over a billing window:
// the price of each MB depends on how many MB the device already used in
// the window.
type Bandwidth struct {
	TimeZone string `json:"time_zone"`
	// Window is WindowDay, WindowWeek (from Monday) or WindowMonth.
	Window string `json:"window"`
	// Tiers in ascending order of UpToMB; only the last may leave it out,
	// and is then unbounded. If the last tier is bounded, it is a cap.
	Tiers []Tier `json:"tiers"`

	loc *time.Location
}

// Tier is a volume tier: PricePerMB for cumulative volume up to UpToMB.
type Tier struct {
	UpToMB     *Dec `json:"up_to_mb,omitempty"`
	PricePerMB Dec  `json:"price_per_mb"`
}

func (b *Bandwidth) validate() error {
	var err error
	if b.loc, err = loadZone("bandwidth.time_zone", b.TimeZone); err != nil {
		return err
	}
	switch b.Window {
	case WindowDay, WindowWeek, WindowMonth:
	default:
		return fmt.Errorf("%w: bandwidth.window must be day, week or month", ErrInvalid)
	}
	if len(b.Tiers) == 0 {
		return fmt.Errorf("%w: bandwidth needs at least one tier", ErrInvalid)
	}
	prev := decimal.Zero
	for i, t := range b.Tiers {
		field := fmt.Sprintf("bandwidth.tiers[%d]", i)
		if err := nonNeg(field+".price_per_mb", t.PricePerMB); err != nil {
			return err
		}
		if t.UpToMB == nil {
			if i != len(b.Tiers)-1 {
				return fmt.Errorf("%w: %s: only the last tier may be unbounded", ErrInvalid, field)
			}
			continue
		}
		if !t.UpToMB.GreaterThan(prev) {
			return fmt.Errorf("%w: %s.up_to_mb must exceed the previous tier's", ErrInvalid, field)
		}
		prev = t.UpToMB.Decimal
	}
	return nil
}

// WindowStart returns the start of the billing window containing t, in the
// contract's time zone; the hub keys its cumulative volume by it.
func (b *Bandwidth) WindowStart(t time.Time) time.Time {
	l := t.In(b.loc)
	switch b.Window {
	case WindowMonth:
		return time.Date(l.Year(), l.Month(), 1, 0, 0, 0, 0, b.loc)
	case WindowWeek:
		back := (int(l.Weekday()) + 6) % 7 // days since Monday
		return time.Date(l.Year(), l.Month(), l.Day()-back, 0, 0, 0, 0, b.loc)
	default:
		return time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, b.loc)
	}
}

// items prices the increment [CumulativeMB, CumulativeMB+Quantity) across
// the tiers it spans, one line per tier touched.
func (b *Bandwidth) items(u Usage) ([]item, error) {
	if u.Unit != "" && u.Unit != "MB" {
		return nil, fmt.Errorf("%w: bandwidth unit is MB, got %q", ErrBadUsage, u.Unit)
	}
	if u.Quantity.IsNegative() || u.CumulativeMB.IsNegative() {
		return nil, fmt.Errorf("%w: volumes must not be negative", ErrBadUsage)
	}
	from, to := u.CumulativeMB.Decimal, u.CumulativeMB.Add(u.Quantity.Decimal)
	var items []item
	lower := decimal.Zero
	for i, t := range b.Tiers {
		upper := to
		if t.UpToMB != nil {
			upper = decimal.Min(to, t.UpToMB.Decimal)
		}
		if span := upper.Sub(decimal.Max(from, lower)); span.Sign() > 0 {
			items = append(items, item{
				component: "TIER", element: i, quantity: span, unit: "MB",
				unitPrice: t.PricePerMB.Decimal, num: t.PricePerMB.Mul(span), den: 1,
			})
		}
		if t.UpToMB == nil {
			return items, nil
		}
		lower = t.UpToMB.Decimal
	}
	if to.GreaterThan(lower) {
		return nil, fmt.Errorf("%w: %s MB would pass the last tier's %s MB", ErrOverLimit, canonDecimal(to), canonDecimal(lower))
	}
	return items, nil
}

// Energy prices peer-to-peer energy per kWh and fixed interval (15 minutes
// in the examples). The buyer meter pays, the seller meter earns; a
// prosumer is both on different trades and settlement nets the two.
type Energy struct {
	TimeZone string `json:"time_zone"`
	// IntervalMinutes divides the hour: 1, 2, 3, 4, 5, 6, 10, 12, 15, 20,
	// 30 or 60. Usage must start on an interval boundary (local time).
	IntervalMinutes Dec `json:"interval_minutes"`
	// PricePerKWh applies to intervals outside every band.
	PricePerKWh Dec `json:"price_per_kwh"`
	// Bands override the price by local time of day; the first match wins.
	Bands []EnergyBand `json:"bands,omitempty"`

	interval int64
	loc      *time.Location
}

// EnergyBand is a time-of-day price for energy intervals starting in it.
type EnergyBand struct {
	StartTime   string   `json:"start_time,omitempty"`
	EndTime     string   `json:"end_time,omitempty"`
	DayOfWeek   []string `json:"day_of_week,omitempty"`
	PricePerKWh Dec      `json:"price_per_kwh"`

	clock clockWindow
	days  uint8
}

func (e *Energy) validate() error {
	var err error
	if e.loc, err = loadZone("energy.time_zone", e.TimeZone); err != nil {
		return err
	}
	if e.interval, err = whole("energy.interval_minutes", e.IntervalMinutes, 1, 60); err != nil {
		return err
	}
	if 60%e.interval != 0 {
		return fmt.Errorf("%w: energy.interval_minutes must divide the hour", ErrInvalid)
	}
	if err := nonNeg("energy.price_per_kwh", e.PricePerKWh); err != nil {
		return err
	}
	for i := range e.Bands {
		b := &e.Bands[i]
		field := fmt.Sprintf("energy.bands[%d]", i)
		if b.clock, err = newClockWindow(field, b.StartTime, b.EndTime); err != nil {
			return err
		}
		if b.days, err = parseDays(field+".day_of_week", b.DayOfWeek); err != nil {
			return err
		}
		if err := nonNeg(field+".price_per_kwh", b.PricePerKWh); err != nil {
			return err
		}
	}
	return nil
}

// items prices one interval's delivered energy from seller to buyer.
func (e *Energy) items(u Usage) ([]item, error) {
	if u.SellerMeter == "" || u.BuyerMeter == "" || u.SellerMeter == u.BuyerMeter {
		return nil, fmt.Errorf("%w: an energy trade needs distinct seller_meter and buyer_meter", ErrBadUsage)
	}
	if u.Unit != "" && u.Unit != "kWh" {
		return nil, fmt.Errorf("%w: energy unit is kWh, got %q", ErrBadUsage, u.Unit)
	}
	if u.Quantity.IsNegative() {
		return nil, fmt.Errorf("%w: energy must not be negative", ErrBadUsage)
	}
	local := u.EventTime.In(e.loc)
	if u.EventTime.IsZero() || int64(local.Minute())%e.interval != 0 || local.Second() != 0 || local.Nanosecond() != 0 {
		return nil, fmt.Errorf("%w: event_time must start a %d-minute interval", ErrBadUsage, e.interval)
	}
	elem, price := -1, e.PricePerKWh
	for i := range e.Bands {
		b := &e.Bands[i]
		if b.clock.contains(clockOf(local)) && (b.days == 0 || b.days&(1<<local.Weekday()) != 0) {
			elem, price = i, b.PricePerKWh
			break
		}
	}
	return []item{{
		component: "INTERVAL", element: elem, quantity: u.Quantity.Decimal, unit: "kWh",
		unitPrice: price.Decimal, num: price.Mul(u.Quantity.Decimal), den: 1,
	}}, nil
}
