package loadtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/metering"
)

// The four use cases, as -mix names them.
const (
	KindEV     = "ev"
	KindToll   = "toll"
	KindBW     = "bw"
	KindEnergy = "energy"
)

// Kinds lists the use cases in a fixed order.
var Kinds = []string{KindEV, KindToll, KindBW, KindEnergy}

// ErrBadMix means a -mix value could not be parsed.
var ErrBadMix = errors.New("loadtest: bad mix")

// ParseMix parses "ev=1,toll=2,bw=1,energy=0" into weights by kind. Kinds
// left out weigh zero; at least one weight must be positive.
func ParseMix(s string) (map[string]int, error) {
	m := map[string]int{}
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not kind=weight", ErrBadMix, part)
		}
		known := false
		for _, kk := range Kinds {
			known = known || kk == k
		}
		if !known {
			return nil, fmt.Errorf("%w: unknown kind %q (ev, toll, bw, energy)", ErrBadMix, k)
		}
		w, err := strconv.Atoi(v)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("%w: weight %q of %s", ErrBadMix, v, k)
		}
		m[k] = w
		total += w
	}
	if total == 0 {
		return nil, fmt.Errorf("%w: no kind has a positive weight", ErrBadMix)
	}
	return m, nil
}

// assignKinds gives each of n providers a kind, in proportion to the mix
// weights (largest remainder), interleaved so small fleets get every kind
// with a positive weight while providers last.
func assignKinds(n int, mix map[string]int) []string {
	total := 0
	for _, k := range Kinds {
		total += mix[k]
	}
	out := make([]string, 0, n)
	given := map[string]int{}
	for i := range n {
		// Pick the kind furthest below its share of the first i+1.
		best, bestGap := "", -1.0
		for _, k := range Kinds {
			if mix[k] == 0 {
				continue
			}
			gap := float64(i+1)*float64(mix[k])/float64(total) - float64(given[k])
			if gap > bestGap {
				best, bestGap = k, gap
			}
		}
		given[best]++
		out = append(out, best)
	}
	return out
}

// contractDoc is each kind's tariff for the run: small prices in msat,
// no security rules (a load test must not freeze its own fleet), the hub fee
// of 1%.
func contractDoc(kind, runID string) []byte {
	id := "loadtest-" + kind + "-" + runID
	switch kind {
	case KindEV:
		return []byte(`{"kind":"ev_charging","version":1,"id":"` + id + `","currency":"msat","fee":{"bps":"100"},` +
			`"ev_charging":{"time_zone":"UTC","elements":[{"price_components":[` +
			`{"type":"ENERGY","price":"1000","step_size":"1"},{"type":"TIME","price":"600","step_size":"60"}]}]}}`)
	case KindToll:
		return []byte(`{"kind":"toll","version":1,"id":"` + id + `","currency":"msat","fee":{"bps":"100"},` +
			`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000","truck":"4000","motorcycle":"250"}}}`)
	case KindBW:
		return []byte(`{"kind":"bandwidth","version":1,"id":"` + id + `","currency":"msat","fee":{"bps":"100"},` +
			`"bandwidth":{"time_zone":"UTC","window":"month","tiers":[{"up_to_mb":"1000","price_per_mb":"20"},{"price_per_mb":"5"}]}}`)
	case KindEnergy:
		return []byte(`{"kind":"energy","version":1,"id":"` + id + `","currency":"msat","fee":{"bps":"100"},` +
			`"energy":{"time_zone":"UTC","interval_minutes":"15","price_per_kwh":"2000"}}`)
	}
	panic("loadtest: unknown kind " + kind)
}

// rngFor returns the generator of one stream of the schedule: the same
// seed, stream and index always give the same sequence, whatever the
// goroutines' interleaving.
func rngFor(seed int64, stream string, index int) *rand.Rand {
	h := uint64(0xcbf29ce484222325) // FNV-1a of the stream name
	for i := 0; i < len(stream); i++ {
		h = (h ^ uint64(stream[i])) * 0x100000001b3
	}
	return rand.New(rand.NewPCG(uint64(seed), h^uint64(index)*0x9e3779b97f4a7c15))
}

// payStep is one payment of a device's schedule.
type payStep struct {
	payee  int // provider index
	amount msat.Amount
}

// paySchedule draws a device's payments: a provider chosen uniformly and an
// amount of 1 to 20 sat in whole msat.
type paySchedule struct {
	rng       *rand.Rand
	providers int
}

func newPaySchedule(seed int64, device, providers int) *paySchedule {
	return &paySchedule{rng: rngFor(seed, "pay", device), providers: providers}
}

func (s *paySchedule) next() payStep {
	return payStep{payee: s.rng.IntN(s.providers), amount: msat.Amount(1000 + s.rng.IntN(19_001))}
}

// eventSchedule draws a provider's usage events for its payers.
type eventSchedule struct {
	rng      *rand.Rand
	kind     string
	provider string
	contract string
	payers   []string
	runID    string
	prefix   string
	n        int
}

func newEventSchedule(seed int64, index int, kind, provider, contract, runID string, payers []string) *eventSchedule {
	return &eventSchedule{
		rng: rngFor(seed, "events", index), kind: kind, provider: provider, contract: contract,
		payers: payers, runID: runID, prefix: fmt.Sprintf("%s-p%d-", runID, index),
	}
}

// batchPrefix returns the id prefix of batch b; receipts name the batch of
// each event they cover through it.
func (s *eventSchedule) batchPrefix(b int) string { return s.prefix + strconv.Itoa(b) + "-" }

// batch draws the next n events, batch number b, timed at now.
func (s *eventSchedule) batch(b, n int, now time.Time) []metering.Event {
	evs := make([]metering.Event, n)
	pre := s.batchPrefix(b)
	for i := range evs {
		payer := s.payers[s.rng.IntN(len(s.payers))]
		evs[i] = metering.Event{ID: pre + strconv.Itoa(i), Subject: payer, Time: eventTime(s.kind, now).Format(time.RFC3339Nano)}
		evs[i].Data = s.data(payer, b, i, now)
	}
	s.n += n
	return evs
}

// data is one event's usage for the provider's kind.
func (s *eventSchedule) data(payer string, b, i int, now time.Time) metering.Data {
	d := metering.Data{Contract: s.contract}
	switch s.kind {
	case KindEV:
		// A finished session of 10 to 60 minutes that ended a minute
		// ago, charging at 11 kW.
		mins := 10 + s.rng.IntN(51)
		end := now.UTC().Add(-time.Minute).Truncate(time.Second)
		start := end.Add(-time.Duration(mins) * time.Minute)
		kwh := strconv.FormatFloat(float64(mins)*11/60, 'f', 3, 64)
		d.Session = fmt.Sprintf("%s%d-%d", s.prefix, b, i)
		d.Start, d.End = start.Format(time.RFC3339), end.Format(time.RFC3339)
		d.Periods = []metering.Period{{Start: d.Start, EnergyKWh: kwh, PowerKW: "11", State: "charging"}}
	case KindToll:
		classes := [...]string{"car", "car", "car", "truck", "motorcycle"}
		d.Quantity, d.Unit, d.VehicleClass = "1", "passage", classes[s.rng.IntN(len(classes))]
	case KindBW:
		d.Quantity, d.Unit = strconv.Itoa(1+s.rng.IntN(100)), "MB"
	case KindEnergy:
		d.Quantity, d.Unit = fmt.Sprintf("0.%03d", 1+s.rng.IntN(999)), "kWh"
		d.SellerMeter, d.BuyerMeter = s.provider, payer
	}
	return d
}

// eventTime is the time an event of kind is stamped with: energy trades
// name the start of their 15-minute interval.
func eventTime(kind string, now time.Time) time.Time {
	if kind == KindEnergy {
		return now.UTC().Truncate(15 * time.Minute)
	}
	return now.UTC()
}
