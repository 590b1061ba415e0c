package loadtest

import (
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/metering"
)

func TestParseMix(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		m, err := ParseMix("ev=1, toll=2,bw=0,energy=3")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m, map[string]int{KindEV: 1, KindToll: 2, KindBW: 0, KindEnergy: 3}) {
			t.Fatalf("mix %v", m)
		}
	})
	for _, bad := range []string{"", "ev", "ev=x", "ev=-1", "coffee=1", "ev=0,toll=0"} {
		t.Run("ErrBadMix_"+bad, func(t *testing.T) {
			if _, err := ParseMix(bad); !errors.Is(err, ErrBadMix) {
				t.Fatalf("ParseMix(%q) = %v", bad, err)
			}
		})
	}
}

func TestAssignKinds(t *testing.T) {
	got := assignKinds(8, map[string]int{KindEV: 1, KindToll: 1, KindBW: 1, KindEnergy: 1})
	count := map[string]int{}
	for _, k := range got {
		count[k]++
	}
	if len(got) != 8 || count[KindEV] != 2 || count[KindToll] != 2 || count[KindBW] != 2 || count[KindEnergy] != 2 {
		t.Fatalf("kinds %v", got)
	}
	// Every kind with weight shows up among the first four.
	first := map[string]bool{}
	for _, k := range got[:4] {
		first[k] = true
	}
	if len(first) != 4 {
		t.Fatalf("first four %v", got[:4])
	}
	got = assignKinds(6, map[string]int{KindToll: 2, KindBW: 1})
	count = map[string]int{}
	for _, k := range got {
		count[k]++
	}
	if count[KindToll] != 4 || count[KindBW] != 2 {
		t.Fatalf("weighted kinds %v", got)
	}
}

// TestScheduleDeterministic: the same seed gives the same payments and the
// same event contents; another seed gives others.
func TestScheduleDeterministic(t *testing.T) {
	pays := func(seed int64) []payStep {
		s := newPaySchedule(seed, 3, 7)
		out := make([]payStep, 50)
		for i := range out {
			out[i] = s.next()
			if out[i].payee < 0 || out[i].payee >= 7 || out[i].amount < 1000 || out[i].amount > 20_000 {
				t.Fatalf("step %+v out of range", out[i])
			}
		}
		return out
	}
	if !reflect.DeepEqual(pays(42), pays(42)) {
		t.Fatal("same seed, different payments")
	}
	if reflect.DeepEqual(pays(42), pays(43)) {
		t.Fatal("different seeds, same payments")
	}
	now := time.Date(2026, 6, 10, 12, 3, 4, 5, time.UTC)
	events := func(seed int64) []metering.Event {
		var out []metering.Event
		for _, k := range Kinds {
			s := newEventSchedule(seed, 1, k, "prov", "c", "run", []string{"a", "b", "c"})
			out = append(out, s.batch(0, 20, now)...)
			out = append(out, s.batch(1, 20, now)...)
		}
		return out
	}
	if !reflect.DeepEqual(events(7), events(7)) {
		t.Fatal("same seed, different events")
	}
	if reflect.DeepEqual(events(7), events(8)) {
		t.Fatal("different seeds, same events")
	}
}

// TestContractsPriceEvents: each kind's contract parses, and every event the
// schedule draws for it validates as the hub's intake checks it and prices
// to a positive amount, so a run is charged, never dead-lettered.
func TestContractsPriceEvents(t *testing.T) {
	now := time.Now()
	for _, kind := range Kinds {
		t.Run("OK_"+kind, func(t *testing.T) {
			k, err := contracts.Parse(contractDoc(kind, "test"))
			if err != nil {
				t.Fatal(err)
			}
			if len(k.Security) != 0 {
				t.Fatal("a load-test contract must not freeze the fleet")
			}
			h := k.Hash()
			s := newEventSchedule(1, 0, kind, "dev-provider", hex.EncodeToString(h[:]), "run", []string{"dev-a", "dev-b"})
			for _, e := range s.batch(0, 200, now) {
				e.Source, e.SpecVersion, e.Type = "dev-provider", metering.SpecVersion, metering.EventType
				u, err := metering.Validate(&e, now, metering.Limits{})
				if err != nil {
					t.Fatalf("event %s: %v", e.ID, err)
				}
				b, err := contracts.Price(k, u)
				if err != nil {
					t.Fatalf("event %s: %v", e.ID, err)
				}
				if b.TotalMsat == 0 || b.TotalMsat > 100_000 {
					t.Fatalf("event %s priced %d msat", e.ID, b.TotalMsat)
				}
			}
		})
	}
}
