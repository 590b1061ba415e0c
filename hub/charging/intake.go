package charging

import (
	"encoding/hex"
	"fmt"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/metering"
)

// RejectMalformed is the reason for an event whose data the hub cannot
// turn into a usage record; the intake dead-letters it before charging
// (UsageOf refuses it with metering.ErrMalformed, whose reason is this one).
const RejectMalformed = metering.ReasonMalformed

// UsageOf is the hub's view of a verified event: e as metering.Validate
// accepted it, with u the usage record Validate parsed from it. It is the
// one conversion from the wire's event to what ChargeUsage charges, made
// at the edge (hub/natsintake) so the event's data is parsed once. Errors
// wrap metering.ErrMalformed: a contract that is not 64 hex digits, or a
// hold attribute that is not 32.
func UsageOf(e *metering.Event, u contracts.Usage) (Usage, error) {
	var h hub.Hash
	if n, err := hex.Decode(h[:], []byte(e.Data.Contract)); err != nil || n != len(h) {
		return Usage{}, fmt.Errorf("%w: contract %q", metering.ErrMalformed, e.Data.Contract)
	}
	ev := Usage{ID: e.ID, Provider: e.Source, Payer: e.Subject, Contract: h, Time: u.EventTime, Usage: u,
		Digest: metering.Digest(e), Attributes: e.Data.Attributes}
	if a, ok := e.Data.Attributes[contracts.HoldAttribute]; ok {
		var id [16]byte
		// The length first: hex.Decode writes past a short destination.
		if len(a) != 2*len(id) {
			return Usage{}, fmt.Errorf("%w: attribute %s %q is not a 32-hex hold id", metering.ErrMalformed, contracts.HoldAttribute, a)
		}
		if _, err := hex.Decode(id[:], []byte(a)); err != nil {
			return Usage{}, fmt.Errorf("%w: attribute %s %q is not a 32-hex hold id", metering.ErrMalformed, contracts.HoldAttribute, a)
		}
		ev.Hold = &id
	}
	return ev, nil
}
