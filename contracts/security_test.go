package contracts

import (
	"strings"
	"testing"
	"time"
)

func TestCheckSecurity(t *testing.T) {
	toll := MustExample(t, "toll") // device: more than 4 events in 60 s
	now := at(t, "2026-06-10T12:00:00Z")
	ago := func(secs ...int) []time.Time {
		out := make([]time.Time, len(secs))
		for i, s := range secs {
			out[i] = now.Add(-time.Duration(s) * time.Second)
		}
		return out
	}
	tests := []struct {
		name      string
		c         *Contract
		w         Window
		freeze    bool
		target    string
		subject   string
		rule      int
		reasonHas string
	}{
		{"FiveEventsInAMinute", toll, Window{Device: "tag-1", Now: now, DeviceEvents: ago(50, 40, 30, 20, 10, 70)},
			true, TargetDevice, "tag-1", 0, "5 events in 1m0s, limit 4"},
		{"FourEventsAllowed", toll, Window{Device: "tag-1", Now: now, DeviceEvents: ago(50, 40, 30, 20, 70)}, false, "", "", 0, ""},
		// The window is (now − 60 s, now]: an event exactly 60 s ago is out.
		{"WindowStartExclusive", toll, Window{Device: "tag-1", Now: now, DeviceEvents: ago(60, 40, 30, 20, 10)}, false, "", "", 0, ""},
		{"ProviderEventsDoNotCountForDevice", toll, Window{Device: "tag-1", Provider: "g", Now: now, ProviderEvents: ago(1, 2, 3, 4, 5, 6)},
			false, "", "", 0, ""},
		{"ReadingOutsidePhysicalBounds", MustExample(t, "energy"), Window{Provider: "meter-a", Now: now, Readings: readings("3", "26")},
			true, TargetProvider, "meter-a", 0, "reading 1 is 26, outside physical bounds [0, 25]"},
		{"ReadingsInBounds", MustExample(t, "energy"), Window{Provider: "meter-a", Now: now, Readings: readings("0", "25")}, false, "", "", 0, ""},
		// Both rules of the EV example break; the first in document order is reported.
		{"FirstRuleWins", MustExample(t, "ev_charging"), Window{Provider: "cp", Now: now, ProviderEvents: make121(now), Readings: readings("500")},
			true, TargetProvider, "cp", 0, "121 events"},
		{"SecondRule", MustExample(t, "ev_charging"), Window{Provider: "cp", Now: now, Readings: readings("-1")},
			true, TargetProvider, "cp", 1, "outside physical bounds [0, 400]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := CheckSecurity(tt.c, tt.w)
			if ok != tt.freeze {
				t.Fatalf("freeze = %v (%+v), want %v", ok, f, tt.freeze)
			}
			if !ok {
				return
			}
			if f.Target != tt.target || f.Subject != tt.subject || f.Rule != tt.rule || !strings.Contains(f.Reason, tt.reasonHas) {
				t.Fatalf("freeze %+v", f)
			}
		})
	}
}

func make121(now time.Time) []time.Time {
	out := make([]time.Time, 121)
	for i := range out {
		out[i] = now.Add(-time.Duration(i) * 100 * time.Millisecond)
	}
	return out
}
