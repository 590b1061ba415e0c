package contracts

import (
	"fmt"
	"time"
)

// Security rule kinds.
const (
	// RuleMaxEventRate freezes the target if more than Limit of its events
	// fall within the last WindowSeconds.
	RuleMaxEventRate = "max_event_rate"
	// RuleReadingBounds freezes the target if a reading lies outside
	// [Min, Max]: a physically impossible value means a broken or lying
	// sensor.
	RuleReadingBounds = "reading_bounds"
)

// Freeze targets.
const (
	TargetDevice   = "device"
	TargetProvider = "provider"
)

// SecurityRule is one rule of a contract's security section.
type SecurityRule struct {
	Rule   string `json:"rule"`
	Target string `json:"target"`
	// Limit and WindowSeconds configure RuleMaxEventRate.
	Limit         *Dec `json:"limit,omitempty"`
	WindowSeconds *Dec `json:"window_seconds,omitempty"`
	// Min and Max configure RuleReadingBounds; either may be absent.
	Min *Dec `json:"min,omitempty"`
	Max *Dec `json:"max,omitempty"`

	limit  int64
	window time.Duration
}

// Window is what the hub observed recently, for security rules to judge.
type Window struct {
	Device   string
	Provider string
	// Now is the end of the observation window.
	Now time.Time
	// DeviceEvents and ProviderEvents are the times of recent events
	// charged to the device and published by the provider.
	DeviceEvents   []time.Time
	ProviderEvents []time.Time
	// Readings are the values reported with the current event.
	Readings []Reading
}

// Freeze tells the caller to freeze Subject (a device or a provider) and
// to write Reason into the audit log.
type Freeze struct {
	Target  string
	Subject string
	// Rule is the index of the rule in the contract's security section.
	Rule   int
	Reason string
}

func (r *SecurityRule) validate(field string) error {
	if r.Target != TargetDevice && r.Target != TargetProvider {
		return fmt.Errorf("%w: %s.target must be %q or %q", ErrInvalid, field, TargetDevice, TargetProvider)
	}
	var err error
	switch r.Rule {
	case RuleMaxEventRate:
		if r.Limit == nil || r.WindowSeconds == nil || r.Min != nil || r.Max != nil {
			return fmt.Errorf("%w: %s: %s takes limit and window_seconds only", ErrInvalid, field, r.Rule)
		}
		if r.limit, err = whole(field+".limit", *r.Limit, 0, 1_000_000_000); err != nil {
			return err
		}
		var sec int64
		if sec, err = whole(field+".window_seconds", *r.WindowSeconds, 1, 86400); err != nil {
			return err
		}
		r.window = time.Duration(sec) * time.Second
	case RuleReadingBounds:
		if r.Limit != nil || r.WindowSeconds != nil || (r.Min == nil && r.Max == nil) {
			return fmt.Errorf("%w: %s: %s takes min and/or max only", ErrInvalid, field, r.Rule)
		}
		if r.Min != nil && r.Max != nil && r.Min.GreaterThan(r.Max.Decimal) {
			return fmt.Errorf("%w: %s.min is above max", ErrInvalid, field)
		}
	default:
		return fmt.Errorf("%w: %s.rule %q is not %s or %s", ErrInvalid, field, r.Rule, RuleMaxEventRate, RuleReadingBounds)
	}
	return nil
}

// CheckSecurity applies c's security rules, in order, to w. It reports the
// first rule broken; the caller freezes the subject and audits the reason.
// It is pure: the same window always gives the same answer. c must come
// from Parse, which resolves the rules' limits.
func CheckSecurity(c *Contract, w Window) (Freeze, bool) {
	if c == nil || !c.parsed {
		return Freeze{}, false
	}
	for i := range c.Security {
		r := &c.Security[i]
		subject, events := w.Device, w.DeviceEvents
		if r.Target == TargetProvider {
			subject, events = w.Provider, w.ProviderEvents
		}
		f := Freeze{Target: r.Target, Subject: subject, Rule: i}
		switch r.Rule {
		case RuleMaxEventRate:
			// Events in (Now − window, Now].
			n := int64(0)
			from := w.Now.Add(-r.window)
			for _, t := range events {
				if t.After(from) && !t.After(w.Now) {
					n++
				}
			}
			if n > r.limit {
				f.Reason = fmt.Sprintf("%s %s: %d events in %s, limit %d", r.Target, subject, n, r.window, r.limit)
				return f, true
			}
		case RuleReadingBounds:
			for j, rd := range w.Readings {
				if (r.Min != nil && rd.Value.LessThan(r.Min.Decimal)) || (r.Max != nil && rd.Value.GreaterThan(r.Max.Decimal)) {
					f.Reason = fmt.Sprintf("%s %s: reading %d is %s, outside physical bounds [%s, %s]",
						r.Target, subject, j, rd.Value, bound(r.Min), bound(r.Max))
					return f, true
				}
			}
		}
	}
	return Freeze{}, false
}

func bound(d *Dec) string {
	if d == nil {
		return "-"
	}
	return d.String()
}
