// Package ocmf parses and verifies OCMF signed meter values, the Open
// Charge Metering Format of S.A.F.E. e.V. that calibration-law (Eichrecht)
// meters in German public chargers sign their readings in, and that OCPP
// 2.0.1 carries in SignedMeterValueType.signedMeterData.
//
// A message is "OCMF|{payload}|{signature}". The payload JSON is signed
// byte for byte as it stands between the pipes; the signature section
// names the algorithm (SA), the encoding of the signature data (SE) and
// the data itself (SD, a DER ECDSA signature). Verify checks it against the
// meter's public key with crypto/ecdsa for secp256r1 (P-256) and secp384r1
// (P-384), and with btcec for secp256k1. OCMF's secp192k1, secp192r1,
// brainpool256r1 and brainpool384r1 are in neither Go's standard library
// nor a package this project can take: a message signed with one of them
// fails with ErrUnsupported, which is not a verdict on the reading, and the
// hub must refuse to bill it.
//
// The package is pure: no I/O, and besides the standard library it imports
// only btcec, shopspring/decimal and contracts.
package ocmf

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/m2mhub/m2mhub/contracts"
)

// MaxSize bounds an OCMF message. OCPP 2.0.1 limits signedMeterData to
// 2500 characters (base64); the bound leaves room and keeps a hostile
// message cheap.
const MaxSize = 8 << 10

var (
	// ErrMalformed reports a message that is not OCMF as the format
	// defines it; the wrapped message says what is wrong.
	ErrMalformed = errors.New("ocmf: malformed message")
	// ErrBadSignature reports a signature that does not verify: the
	// reading was altered, forged or signed by another meter.
	ErrBadSignature = errors.New("ocmf: signature does not verify")
	// ErrUnsupported reports a signature algorithm or key curve this
	// package cannot check (secp192k1, secp192r1, brainpool).
	ErrUnsupported = errors.New("ocmf: unsupported signature algorithm")
)

// The signature algorithms of OCMF (table 22 of the specification).
const (
	AlgSecp256r1      = "ECDSA-secp256r1-SHA256" // the default
	AlgSecp384r1      = "ECDSA-secp384r1-SHA256"
	AlgSecp256k1      = "ECDSA-secp256k1-SHA256"
	AlgSecp192k1      = "ECDSA-secp192k1-SHA256"
	AlgSecp192r1      = "ECDSA-secp192r1-SHA256"
	AlgBrainpool256r1 = "ECDSA-brainpool256r1-SHA256"
	AlgBrainpool384r1 = "ECDSA-brainpool384r1-SHA256"
)

// Message is a parsed OCMF message. Payload is what the meter signed,
// exactly; everything else is read from it.
type Message struct {
	// Raw is the whole message as received.
	Raw string
	// Payload is the signed JSON text between the pipes.
	Payload []byte
	Data    Payload
	Sig     Signature

	sig []byte // decoded DER signature
}

// Payload holds the fields of the OCMF payload section the hub uses;
// other fields stay in Message.Payload, which is what was signed.
type Payload struct {
	FormatVersion        string    `json:"FV,omitempty"`
	GatewayID            string    `json:"GI,omitempty"`
	GatewaySerial        string    `json:"GS,omitempty"`
	GatewayVersion       string    `json:"GV,omitempty"`
	Pagination           string    `json:"PG"`
	MeterVendor          string    `json:"MV,omitempty"`
	MeterModel           string    `json:"MM,omitempty"`
	MeterSerial          string    `json:"MS,omitempty"`
	MeterFirmware        string    `json:"MF,omitempty"`
	IdentificationStatus bool      `json:"IS"`
	IdentificationLevel  string    `json:"IL,omitempty"`
	IdentificationFlags  []string  `json:"IF,omitempty"`
	IdentificationType   string    `json:"IT,omitempty"`
	IdentificationData   string    `json:"ID,omitempty"`
	TariffText           string    `json:"TT,omitempty"`
	ChargePointIDType    string    `json:"CT,omitempty"`
	ChargePointID        string    `json:"CI,omitempty"`
	Readings             []Reading `json:"RD"`
}

// Reading is one OCMF reading (an RD entry).
type Reading struct {
	// Time is TM parsed; TimeStatus its synchronisation flag: U
	// (unknown), I (informative), S (synchronised) or R (relative).
	Time       time.Time `json:"-"`
	TimeStatus string    `json:"-"`
	TM         string    `json:"TM"`
	// Transaction (TX) places the reading in the transaction: B begin,
	// C charging, X exception, E end, L limit, R remote, A abort, P power
	// loss, S stop, T time.
	Transaction string `json:"TX,omitempty"`
	// Value (RV) is the reading in Unit (RU), parsed exactly.
	Value json.Number `json:"RV"`
	// ID (RI) is the OBIS code, "1-b:1.8.0" for the import register.
	ID   string `json:"RI,omitempty"`
	Unit string `json:"RU"`
	// CurrentType (RT) is AC or DC; ErrorFlags (EF) "" when the meter
	// saw no error, "E" energy or "t" time errors; Status (ST) "G" good.
	CurrentType string `json:"RT,omitempty"`
	ErrorFlags  string `json:"EF,omitempty"`
	Status      string `json:"ST"`
}

// Signature is the OCMF signature section.
type Signature struct {
	Algorithm string `json:"SA,omitempty"`
	Encoding  string `json:"SE,omitempty"`
	MIME      string `json:"SM,omitempty"`
	Data      string `json:"SD"`
}

var timeStatus = []string{"U", "I", "S", "R"}

// Parse splits and decodes an OCMF message. It checks the form, not the
// signature: call Verify before trusting a reading. Errors wrap
// ErrMalformed, or ErrUnsupported for an algorithm this package does not
// know at all.
func Parse(s string) (*Message, error) {
	if len(s) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(s), MaxSize)
	}
	rest, ok := strings.CutPrefix(s, "OCMF|")
	last := strings.LastIndexByte(rest, '|')
	if !ok || last < 0 {
		return nil, fmt.Errorf("%w: want OCMF|{payload}|{signature}", ErrMalformed)
	}
	m := &Message{Raw: s, Payload: []byte(rest[:last])}
	if err := strict(m.Payload, &m.Data); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := strict([]byte(rest[last+1:]), &m.Sig); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	if m.Data.Pagination == "" || len(m.Data.Readings) == 0 {
		return nil, fmt.Errorf("%w: payload needs PG and at least one reading in RD", ErrMalformed)
	}
	for i := range m.Data.Readings {
		if err := m.Data.Readings[i].parse(); err != nil {
			return nil, fmt.Errorf("%w: RD[%d]: %v", ErrMalformed, i, err)
		}
	}
	if err := m.decodeSig(); err != nil {
		return nil, err
	}
	return m, nil
}

// strict decodes one JSON object and nothing after it. Unknown fields are
// allowed: OCMF has optional fields (LC, CF, …) the hub does not read, and
// they stay in the signed payload.
func strict(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() || dec.InputOffset() != int64(len(b)) {
		return errors.New("trailing data")
	}
	return nil
}

func (r *Reading) parse() error {
	ts, st, ok := strings.Cut(r.TM, " ")
	if !ok || !contains(timeStatus, st) {
		return fmt.Errorf("TM %q is not \"time status\"", r.TM)
	}
	t, err := time.Parse("2006-01-02T15:04:05,000-0700", ts)
	if err != nil {
		return fmt.Errorf("TM %q: %v", r.TM, err)
	}
	r.Time, r.TimeStatus = t, st
	if _, err := decimal.NewFromString(r.Value.String()); err != nil || r.Value == "" {
		return fmt.Errorf("RV %q is not a number", r.Value)
	}
	if r.Unit == "" || r.Status == "" {
		return errors.New("RU and ST are required")
	}
	return nil
}

func (m *Message) decodeSig() error {
	switch m.Sig.Algorithm {
	case "":
		m.Sig.Algorithm = AlgSecp256r1
	case AlgSecp256r1, AlgSecp384r1, AlgSecp256k1, AlgSecp192k1, AlgSecp192r1, AlgBrainpool256r1, AlgBrainpool384r1:
	default:
		return fmt.Errorf("%w: SA %q", ErrUnsupported, m.Sig.Algorithm)
	}
	if m.Sig.MIME != "" && m.Sig.MIME != "application/x-der" {
		return fmt.Errorf("%w: SM %q is not application/x-der", ErrMalformed, m.Sig.MIME)
	}
	var err error
	switch m.Sig.Encoding {
	case "", "hex":
		m.sig, err = hex.DecodeString(m.Sig.Data)
	case "base64":
		m.sig, err = base64.StdEncoding.DecodeString(m.Sig.Data)
	default:
		return fmt.Errorf("%w: SE %q is not hex or base64", ErrMalformed, m.Sig.Encoding)
	}
	if err != nil || len(m.sig) == 0 {
		return fmt.Errorf("%w: SD is not %s signature data", ErrMalformed, m.Sig.Encoding)
	}
	return nil
}

// Hash is the SHA-256 of the whole message as received: what a receipt
// binds to name this reading.
func (m *Message) Hash() [32]byte { return sha256.Sum256([]byte(m.Raw)) }

// EnergyWh returns the import register reading (OBIS 1-b:1.8.0, or an
// unnamed one) of r in Wh. Errors wrap ErrMalformed.
func (r Reading) EnergyWh() (decimal.Decimal, error) {
	if r.ID != "" && !strings.HasSuffix(r.ID, ":1.8.0") {
		return decimal.Zero, fmt.Errorf("%w: RI %q is not the import register 1.8.0", ErrMalformed, r.ID)
	}
	v, err := decimal.NewFromString(r.Value.String())
	if err != nil {
		return decimal.Zero, fmt.Errorf("%w: RV %q", ErrMalformed, r.Value)
	}
	switch r.Unit {
	case "kWh":
		return v.Shift(3), nil
	case "Wh":
		return v, nil
	}
	return decimal.Zero, fmt.Errorf("%w: RU %q is not kWh or Wh", ErrMalformed, r.Unit)
}

// MeterValues turns the readings of verified messages, in order, into the
// meter values contracts.UsageFromMeterValues prices: the EV counts as
// charging after a B (begin) or C (charging) reading and as parked after
// any other. A reading with error flags, a status other than G (good) or
// an unsynchronised clock is refused, since the law lets only good,
// synchronised readings be billed. Errors wrap ErrMalformed.
func MeterValues(msgs []*Message) ([]contracts.MeterValue, error) {
	var out []contracts.MeterValue
	for i, m := range msgs {
		for j, r := range m.Data.Readings {
			if r.ErrorFlags != "" || r.Status != "G" || (r.TimeStatus != "S" && r.TimeStatus != "R") {
				return nil, fmt.Errorf("%w: message %d RD[%d] is not billable (EF %q, ST %q, time %s)", ErrMalformed, i, j, r.ErrorFlags, r.Status, r.TimeStatus)
			}
			wh, err := r.EnergyWh()
			if err != nil {
				return nil, fmt.Errorf("message %d RD[%d]: %w", i, j, err)
			}
			out = append(out, contracts.MeterValue{Time: r.Time, EnergyWh: contracts.D(wh), Charging: r.Transaction == "B" || r.Transaction == "C"})
		}
	}
	return out, nil
}

// EventID is the usage event id that binds the billed readings: "ocmf-"
// and the unpadded base64url SHA-256 over the readings' hashes in order.
// A provider that bills a session from signed readings gives its usage
// event this id; the hub's receipt commits to the event ids it paid for
// (its EventsRoot), so the receipt, and its on-chain proof, show which
// calibrated readings were paid for: anyone holding the OCMF messages can
// recompute the id with BindsReadings.
func EventID(msgs []*Message) string {
	h := sha256.New()
	for _, m := range msgs {
		mh := m.Hash()
		h.Write(mh[:])
	}
	return "ocmf-" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// BindsReadings reports whether id is the EventID of the raw OCMF
// messages, in order.
func BindsReadings(id string, raw []string) bool {
	h := sha256.New()
	for _, r := range raw {
		mh := sha256.Sum256([]byte(r))
		h.Write(mh[:])
	}
	return id == "ocmf-"+base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// SignedData returns the OCPI SignedData of a session's verified readings,
// in order, for its CDR: encoding OCMF, the meter's public key as given
// (base64 DER, as OCPI wants it), and per reading the nature (Start, End,
// Intermediate), the signed payload as plain data and the whole OCMF
// message in base64 as signed data.
func SignedData(msgs []*Message, publicKeyBase64 string) *contracts.SignedData {
	sd := &contracts.SignedData{EncodingMethod: "OCMF", PublicKey: publicKeyBase64}
	for i, m := range msgs {
		nature := "Intermediate"
		switch {
		case i == 0:
			nature = "Start"
		case i == len(msgs)-1:
			nature = "End"
		}
		sd.SignedValues = append(sd.SignedValues, contracts.SignedValue{Nature: nature, PlainData: string(m.Payload),
			SignedData: base64.StdEncoding.EncodeToString([]byte(m.Raw))})
	}
	return sd
}
