// Package metering holds the usage events providers publish: their
// CloudEvents 1.0 JSON form, the canonical encoding they are signed over,
// signing and verification, plausibility checks, and the conversion to the
// usage record contracts price. It is pure: no bus, store or RPC client.
// The NATS intake lives in hub/natsintake.
package metering

import (
	"errors"
	"strings"
)

// Fixed attribute values of a usage event.
const (
	SpecVersion = "1.0"
	EventType   = "m2mhub.usage.v1"
	ContentType = "application/json"
	// SigTag is the BIP-340 tag of the signed digest.
	SigTag = "m2mhub/usage/v1"
)

// Bounds on a batch and its events. They keep one NATS message cheap to
// parse and verify, and stop a provider from making the hub hold or log
// arbitrarily large values.
const (
	MaxBatchBytes  = 1 << 20 // one NATS message
	MaxBatchEvents = 1000
	MaxIDLen       = 64  // event ids
	MaxNameLen     = 128 // device ids, session, unit, meters, class
	MaxValueLen    = 256 // any other string (times, decimals, attribute values)
	MaxAttributes  = 32
	MaxPeriods     = 512
	MaxReadings    = 1024
	// MaxSignedLen bounds one signed meter reading (data.signed_readings):
	// the size package metering/ocmf accepts for an OCMF message.
	MaxSignedLen = 8 << 10
)

// Errors. Each names a reason a usage event is refused; Reason maps them to
// the dead-letter reason codes.
var (
	ErrMalformed      = errors.New("metering: malformed event")
	ErrSpecVersion    = errors.New("metering: unsupported specversion")
	ErrType           = errors.New("metering: unsupported event type")
	ErrBadID          = errors.New("metering: bad event id")
	ErrBadTime        = errors.New("metering: bad time")
	ErrFuture         = errors.New("metering: event time too far in the future")
	ErrTooOld         = errors.New("metering: event too old")
	ErrBadQuantity    = errors.New("metering: bad quantity")
	ErrBadContract    = errors.New("metering: bad contract hash")
	ErrBadSignature   = errors.New("metering: bad signature")
	ErrSourceMismatch = errors.New("metering: event source is not the publishing provider")
	ErrUnknownSource  = errors.New("metering: unknown provider")
	ErrSourceInactive = errors.New("metering: provider not active")
	ErrBadMsgID       = errors.New("metering: Nats-Msg-Id is not the message's own")
)

// Dead-letter reason codes (header M2M-Reason). Codes the Charger reports
// (an unknown contract, a revoked payer) travel as it names them.
const (
	ReasonMalformed      = "malformed"
	ReasonSpecVersion    = "bad-specversion"
	ReasonType           = "bad-type"
	ReasonID             = "bad-id"
	ReasonTime           = "bad-time"
	ReasonFuture         = "future"
	ReasonTooOld         = "too-old"
	ReasonQuantity       = "bad-quantity"
	ReasonContract       = "bad-contract"
	ReasonSignature      = "bad-signature"
	ReasonSourceMismatch = "source-mismatch"
	ReasonUnknownSource  = "unknown-provider"
	ReasonSourceInactive = "provider-inactive"
	ReasonMsgID          = "bad-msg-id"
	ReasonOther          = "rejected"
)

// Reason returns the dead-letter reason code of an error from this package.
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		code string
	}{
		{ErrMalformed, ReasonMalformed}, {ErrSpecVersion, ReasonSpecVersion}, {ErrType, ReasonType},
		{ErrBadID, ReasonID}, {ErrBadTime, ReasonTime}, {ErrFuture, ReasonFuture},
		{ErrTooOld, ReasonTooOld}, {ErrBadQuantity, ReasonQuantity}, {ErrBadContract, ReasonContract},
		{ErrBadSignature, ReasonSignature}, {ErrSourceMismatch, ReasonSourceMismatch},
		{ErrUnknownSource, ReasonUnknownSource}, {ErrSourceInactive, ReasonSourceInactive},
		{ErrBadMsgID, ReasonMsgID},
	} {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return ReasonOther
}

// Event is one usage event in CloudEvents 1.0 structured form. Every value
// is a string on the wire. Optional fields are omitted when empty; a parsed
// event never carries a present-but-empty optional field (ParseBatch refuses
// one), so the canonical form built from the struct is byte for byte the
// one built from the JSON the provider signed.
type Event struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`  // the provider's device id
	Type            string `json:"type"`    // EventType
	Subject         string `json:"subject"` // the payer's device id
	Time            string `json:"time"`    // RFC 3339
	DataContentType string `json:"datacontenttype,omitempty"`
	Data            Data   `json:"data"`
	// Sig is the provider's BIP-340 signature in hex (128 characters).
	Sig string `json:"m2mhubsig,omitempty"`
}

// Data is the usage an event reports. Fields mirror contracts.Usage; the
// cumulative bandwidth volume is absent on purpose: the hub tracks it.
type Data struct {
	Contract     string    `json:"contract"` // 64 hex: the contract hash
	Session      string    `json:"session,omitempty"`
	Quantity     string    `json:"quantity,omitempty"` // decimal
	Unit         string    `json:"unit,omitempty"`
	Start        string    `json:"start,omitempty"` // RFC 3339
	End          string    `json:"end,omitempty"`   // RFC 3339
	VehicleClass string    `json:"vehicle_class,omitempty"`
	SellerMeter  string    `json:"seller_meter,omitempty"`
	BuyerMeter   string    `json:"buyer_meter,omitempty"`
	Periods      []Period  `json:"periods,omitempty"`
	Readings     []Reading `json:"readings,omitempty"`
	// SignedReadings are a charging session's signed meter readings as
	// the meter signed them (OCMF messages, in order), at most MaxReadings
	// of MaxSignedLen each. The event id must bind them (ocmf.EventID) and
	// the attribute meter_public_key names the meter's key; the hub checks
	// both and puts them in the session's CDR as its signed_data.
	SignedReadings []string          `json:"signed_readings,omitempty"`
	Attributes     map[string]string `json:"attributes,omitempty"`
	// TariffType is the OCPI TariffType an EV session asks for (a
	// charging preference); empty means REGULAR.
	TariffType string `json:"tariff_type,omitempty"`
	// Reservation is the reservation before an EV session, or one that
	// expired without a session.
	Reservation *Reservation `json:"reservation,omitempty"`
}

// Reservation is a charge point reservation: Start and End in RFC 3339,
// Expired "true" when it expired without a session.
type Reservation struct {
	Start   string `json:"start"`
	End     string `json:"end"`
	Expired string `json:"expired,omitempty"`
}

// Period is one stretch of an EV charging session with constant state.
type Period struct {
	Start     string `json:"start"`
	EnergyKWh string `json:"energy_kwh,omitempty"`
	PowerKW   string `json:"power_kw,omitempty"`
	// CurrentA is the current summed over phases, for OCPI current
	// restrictions.
	CurrentA string `json:"current_a,omitempty"`
	State    string `json:"state"`
}

// Reading is one condition measurement (a temperature, say).
type Reading struct {
	Time  string `json:"time,omitempty"`
	Value string `json:"value"`
}

// Outcome is what charging did with one event. The Charger returns one per
// event, in order; the intake dead-letters the rejected ones.
type Outcome struct {
	// Charged is true when the event was priced and durably recorded now.
	Charged bool
	// Duplicate is true when the event was recorded before (a redelivery
	// or a retry past the JetStream dedup window): nothing changed.
	Duplicate bool
	// Rejected is a reason code, empty unless the event was refused
	// (unknown-contract, unknown-device, device-revoked…).
	Rejected string
	// Detail explains a rejection for the provider's operator.
	Detail string
}

// NATS subjects, streams and names that the hub and providers share.
const (
	UsageStream    = "M2M_USAGE"
	DLQStream      = "M2M_DLQ"
	ReceiptsStream = "M2M_RECEIPTS"
	// UsageSubjects, DLQSubjects and ReceiptsSubjects are the streams'
	// subject filters.
	UsageSubjects    = "usage.*"
	DLQSubjects      = "dlq.usage.*"
	ReceiptsSubjects = "receipts.*"
	// HeaderReason and HeaderDetail carry a dead letter's reason.
	HeaderReason = "M2M-Reason"
	HeaderDetail = "M2M-Detail"
)

// UsageSubject is where provider id publishes its usage events.
func UsageSubject(id string) string { return "usage." + id }

// DLQSubject is where the hub dead-letters provider id's rejected events.
func DLQSubject(id string) string { return "dlq.usage." + id }

// ReceiptsSubject is where the hub publishes receipts and enforcement
// messages for provider id.
func ReceiptsSubject(id string) string { return "receipts." + id }

// ReceiptsConsumer is the durable consumer name provider id may create on
// the receipts stream (its NATS permissions name it).
func ReceiptsConsumer(id string) string { return "rcpt-" + id }

// InboxPrefix is the inbox prefix provider id's NATS connection must use
// (nats.CustomInboxPrefix): its permissions allow replies only there.
func InboxPrefix(id string) string { return "_INBOX_" + id }

// ValidSubjectToken reports whether id can be one NATS subject token and
// consumer name: non-empty, bounded, printable ASCII without '.', '*',
// '>' or spaces. Device ids ("dev-" + hex) always are.
func ValidSubjectToken(id string) bool {
	if id == "" || len(id) > MaxNameLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(".*>/\\", c) >= 0 {
			return false
		}
	}
	return true
}
