package contracts

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Bounds on a decimal string: enough for any price or volume, small enough
// that no product of two of them strains big-number arithmetic.
const (
	maxIntDigits  = 30
	maxFracDigits = 18
)

// Dec is a decimal number carried in JSON as a string ("0.25"), never as a
// JSON number, so no decoder on any side turns a price into a float.
// Accepted syntax is an optional minus, digits, and an optional fraction:
// no exponent, no plus sign, at most 30 integer and 18 fraction digits.
// It encodes in normalized form (no trailing fraction zeros, no leading
// zeros, "0" for zero), which is what makes the canonical form canonical.
type Dec struct {
	decimal.Decimal
}

// D returns the Dec holding d.
func D(d decimal.Decimal) Dec { return Dec{d} }

// MustDec parses s as a decimal and panics if it is malformed; it is meant
// for constants in tests and examples.
func MustDec(s string) Dec {
	d, err := parseDec(s)
	if err != nil {
		panic(err)
	}
	return d
}

// parseDec parses the strict decimal syntax described on Dec.
func parseDec(s string) (Dec, error) {
	digits := strings.TrimPrefix(s, "-")
	intPart, frac, hasDot := strings.Cut(digits, ".")
	if intPart == "" || len(intPart) > maxIntDigits || (hasDot && (frac == "" || len(frac) > maxFracDigits)) ||
		!allDigits(intPart) || !allDigits(frac) {
		return Dec{}, fmt.Errorf("%w: malformed decimal %q", ErrInvalid, s)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return Dec{}, fmt.Errorf("%w: malformed decimal %q", ErrInvalid, s)
	}
	return Dec{d}, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String returns the normalized decimal text. It does not depend on
// shopspring/decimal's package-level formatting switches, which other code
// in the process may set.
func (d Dec) String() string { return canonDecimal(d.Decimal) }

func canonDecimal(d decimal.Decimal) string {
	n := d.Normalize()
	if n.Exponent() >= 0 {
		return n.BigInt().String()
	}
	return n.StringFixed(-n.Exponent())
}

// MarshalJSON encodes d as a JSON string in normalized form.
func (d Dec) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(d.String())), nil
}

// UnmarshalJSON accepts only a JSON string in the syntax described on Dec.
func (d *Dec) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) == 0 || b[0] != '"' {
		return fmt.Errorf("%w: decimal must be a JSON string, got %.20s", ErrInvalid, b)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := parseDec(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// nonNeg checks that d is zero or positive.
func nonNeg(field string, d Dec) error {
	if d.IsNegative() {
		return fmt.Errorf("%w: %s must not be negative", ErrInvalid, field)
	}
	return nil
}

// positive checks that d is above zero.
func positive(field string, d Dec) error {
	if d.Sign() <= 0 {
		return fmt.Errorf("%w: %s must be positive", ErrInvalid, field)
	}
	return nil
}

// whole checks that d is an integer in [lo, hi] and returns it.
func whole(field string, d Dec, lo, hi int64) (int64, error) {
	if !d.IsInteger() || d.LessThan(decimal.NewFromInt(lo)) || d.GreaterThan(decimal.NewFromInt(hi)) {
		return 0, fmt.Errorf("%w: %s must be a whole number in [%d, %d]", ErrInvalid, field, lo, hi)
	}
	return d.IntPart(), nil
}

// parseClock parses an OCPI time of day "HH:MM" (24h, leading zeros) into
// seconds after local midnight.
func parseClock(field, s string) (int, error) {
	if len(s) != 5 || s[2] != ':' || !allDigits(s[:2]) || !allDigits(s[3:]) {
		return 0, fmt.Errorf("%w: %s %q is not HH:MM", ErrInvalid, field, s)
	}
	h, _ := strconv.Atoi(s[:2])
	m, _ := strconv.Atoi(s[3:])
	if h > 23 || m > 59 {
		return 0, fmt.Errorf("%w: %s %q is not HH:MM", ErrInvalid, field, s)
	}
	return h*3600 + m*60, nil
}

// parseDate parses an OCPI date "YYYY-MM-DD" into yyyymmdd, which compares
// like the date.
func parseDate(field, s string) (int, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || t.Year() < 1000 {
		return 0, fmt.Errorf("%w: %s %q is not YYYY-MM-DD", ErrInvalid, field, s)
	}
	return dateKey(t), nil
}

func dateKey(t time.Time) int {
	return t.Year()*10000 + int(t.Month())*100 + t.Day()
}

// parseDays turns OCPI day names into a bit set indexed by time.Weekday.
func parseDays(field string, names []string) (uint8, error) {
	var set uint8
	for _, n := range names {
		found := false
		for wd := time.Sunday; wd <= time.Saturday; wd++ {
			if n == strings.ToUpper(wd.String()) {
				set |= 1 << wd
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("%w: %s: unknown day %q", ErrInvalid, field, n)
		}
	}
	return set, nil
}

// clockOf returns seconds after local midnight of t, which must already be
// in the tariff's location.
func clockOf(t time.Time) int {
	return t.Hour()*3600 + t.Minute()*60 + t.Second()
}

// clockWindow is a time-of-day window [start, end) in seconds after
// midnight; -1 means the bound is absent. end < start wraps past midnight;
// start == end covers the whole day.
type clockWindow struct{ start, end int }

func newClockWindow(field, start, end string) (clockWindow, error) {
	w := clockWindow{-1, -1}
	var err error
	if start != "" {
		if w.start, err = parseClock(field+".start_time", start); err != nil {
			return w, err
		}
	}
	if end != "" {
		if w.end, err = parseClock(field+".end_time", end); err != nil {
			return w, err
		}
	}
	return w, nil
}

func (w clockWindow) contains(sec int) bool {
	switch {
	case w.start < 0 && w.end < 0:
		return true
	case w.end < 0:
		return sec >= w.start
	case w.start < 0:
		return sec < w.end
	case w.start < w.end:
		return sec >= w.start && sec < w.end
	case w.start > w.end:
		return sec >= w.start || sec < w.end
	default:
		return true
	}
}

// loadZone resolves a tariff time zone; an empty name or "Local" would
// make prices depend on the machine, so both are refused.
func loadZone(field, name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("%w: %s must name an IANA time zone", ErrInvalid, field)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, field, err)
	}
	return loc, nil
}

// Num is a decimal carried as a JSON number, as OCPI writes prices and
// volumes ("price": 0.25). The number's text is parsed exactly, through
// json.Number, never through float64. An exponent is accepted ("2.5e-1");
// the value must still fit Dec's bounds of 30 integer and 18 fraction
// digits. It encodes as a JSON number in Dec's normalized form, so two
// spellings of one value ("0.250", "25e-2") have one canonical form.
type Num struct {
	decimal.Decimal
}

// N returns the Num holding d.
func N(d decimal.Decimal) Num { return Num{d} }

// MustNum parses s as a JSON number and panics if it is malformed; it is
// meant for constants in tests and examples.
func MustNum(s string) Num {
	var n Num
	if err := n.UnmarshalJSON([]byte(s)); err != nil {
		panic(err)
	}
	return n
}

// String returns the normalized decimal text.
func (n Num) String() string { return canonDecimal(n.Decimal) }

// Dec returns n as a Dec.
func (n Num) Dec() Dec { return Dec(n) }

// MarshalJSON encodes n as a JSON number in normalized form.
func (n Num) MarshalJSON() ([]byte, error) { return []byte(n.String()), nil }

// UnmarshalJSON accepts only a JSON number (not a string) within Dec's
// bounds.
func (n *Num) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return fmt.Errorf("%w: number must be a JSON number, got %.20s", ErrInvalid, b)
	}
	var jn json.Number
	if err := json.Unmarshal(b, &jn); err != nil {
		return fmt.Errorf("%w: malformed number %.40s", ErrInvalid, b)
	}
	s := jn.String()
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	e := 0
	if hasExp {
		v, err := strconv.Atoi(exp)
		// Bound the exponent before decimal sees it: "1e999999999"
		// would otherwise cost memory when printed.
		if err != nil || v < -(maxIntDigits+maxFracDigits) || v > maxIntDigits+maxFracDigits {
			return fmt.Errorf("%w: number %.40s is out of range", ErrInvalid, s)
		}
		e = v
	}
	if len(mant) > 2*(maxIntDigits+maxFracDigits) {
		return fmt.Errorf("%w: number %.40s has too many digits", ErrInvalid, s)
	}
	d, err := decimal.NewFromString(mant)
	if err != nil {
		return fmt.Errorf("%w: malformed number %.40s", ErrInvalid, s)
	}
	d = d.Shift(int32(e))
	// Check the bounds on the normalized value, the same as Dec's.
	if _, err := parseDec(canonDecimal(d)); err != nil {
		return fmt.Errorf("%w: number %.40s is out of range", ErrInvalid, s)
	}
	n.Decimal = d
	return nil
}
