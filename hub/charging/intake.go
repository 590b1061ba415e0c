package charging

import (
	"encoding/hex"
	"fmt"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/metering/ocmf"
)

// RejectMalformed is the reason for an event whose data the hub cannot
// turn into a usage record; the intake dead-letters it before charging
// (UsageOf refuses it with metering.ErrMalformed, whose reason is this one).
const RejectMalformed = metering.ReasonMalformed

// UsageOf is the hub's view of a verified event: e as metering.Validate
// accepted it, with u the usage record Validate parsed from it. It is the
// one conversion from the wire's event to what ChargeUsage charges, made
// at the edge (hub/natsintake) so the event's data is parsed once. Errors
// wrap metering.ErrMalformed: a contract that is not 64 hex digits, a
// hold attribute that is not 32, or signed readings that the event id
// does not bind or that do not verify under the meter_public_key
// attribute.
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
	if len(e.Data.SignedReadings) > 0 {
		sd, meter, err := signedData(e)
		if err != nil {
			return Usage{}, err
		}
		ev.SignedData, ev.MeterID = sd, meter
	}
	return ev, nil
}

// signedData checks an event's signed meter readings: its id must be
// their ocmf.EventID, and each must verify under the meter's key (the
// meter_public_key attribute). The hub never learns the key from
// elsewhere: the check proves the readings are the ones the provider
// billed, signed by the key it names, which is what the CDR then states
// for the driver to check against the meter's calibration label.
func signedData(e *metering.Event) (*contracts.SignedData, string, error) {
	if !ocmf.BindsReadings(e.ID, e.Data.SignedReadings) {
		return nil, "", fmt.Errorf("%w: event id %q does not bind data.signed_readings (ocmf.EventID)", metering.ErrMalformed, e.ID)
	}
	pub, err := ocmf.ParsePublicKey([]byte(e.Data.Attributes[contracts.CDRAttrMeterPublicKey]))
	if err != nil {
		return nil, "", fmt.Errorf("%w: attribute %s: %v", metering.ErrMalformed, contracts.CDRAttrMeterPublicKey, err)
	}
	msgs := make([]*ocmf.Message, len(e.Data.SignedReadings))
	for i, raw := range e.Data.SignedReadings {
		m, err := ocmf.Parse(raw)
		if err == nil {
			err = m.Verify(pub)
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: data.signed_readings[%d]: %v", metering.ErrMalformed, i, err)
		}
		msgs[i] = m
	}
	return ocmf.SignedData(msgs, pub.Base64()), msgs[0].Data.MeterSerial, nil
}
