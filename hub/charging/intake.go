package charging

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/metering"
)

// RejectMalformed is the reason for an event whose data the hub cannot
// turn into a usage record (the intake validated it, so this is rare).
const RejectMalformed = "malformed"

// Charge implements the NATS intake's Charger: it converts verified events
// into usage records and charges them with ChargeUsage. A nil error means
// every outcome is durable and the intake may acknowledge the batch.
func (c *Service) Charge(ctx context.Context, evs []metering.Event) ([]metering.Outcome, error) {
	out := make([]metering.Outcome, len(evs))
	batch := make([]Usage, 0, len(evs))
	idx := make([]int, 0, len(evs))
	for i := range evs {
		ev, err := toUsageEvent(&evs[i])
		if err != nil {
			out[i] = metering.Outcome{Rejected: RejectMalformed, Detail: err.Error()}
			continue
		}
		batch = append(batch, ev)
		idx = append(idx, i)
	}
	res, err := c.ChargeUsage(ctx, batch)
	if err != nil {
		return nil, err
	}
	for j, r := range res {
		out[idx[j]] = r.Outcome
	}
	return out, nil
}

// toUsageEvent is the hub's view of a verified event.
func toUsageEvent(e *metering.Event) (Usage, error) {
	u, err := metering.ToUsage(e)
	if err != nil {
		return Usage{}, err
	}
	var h hub.Hash
	if n, err := hex.Decode(h[:], []byte(e.Data.Contract)); err != nil || n != len(h) {
		return Usage{}, fmt.Errorf("%w: contract %q", hub.ErrInvalid, e.Data.Contract)
	}
	ev := Usage{ID: e.ID, Provider: e.Source, Payer: e.Subject, Contract: h, Time: u.EventTime, Usage: u,
		Digest: metering.Digest(e), Attributes: e.Data.Attributes}
	if a, ok := e.Data.Attributes[contracts.HoldAttribute]; ok {
		var id [16]byte
		// The length first: hex.Decode writes past a short destination.
		if len(a) != 2*len(id) {
			return Usage{}, fmt.Errorf("%w: attribute %s %q is not a 32-hex hold id", hub.ErrInvalid, contracts.HoldAttribute, a)
		}
		if _, err := hex.Decode(id[:], []byte(a)); err != nil {
			return Usage{}, fmt.Errorf("%w: attribute %s %q is not a 32-hex hold id", hub.ErrInvalid, contracts.HoldAttribute, a)
		}
		ev.Hold = &id
	}
	return ev, nil
}
