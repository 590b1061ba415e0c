package contracts

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode"
)

// MaxSize bounds a contract document in bytes. Tariffs are small; the bound
// keeps a hostile document from costing the hub memory or CPU.
const MaxSize = 64 << 10

// Kind names what a contract prices; it selects the body field.
type Kind string

// The contract kinds. Each has a body field of the same JSON name.
const (
	KindEVCharging         Kind = "ev_charging"
	KindToll               Kind = "toll"
	KindBandwidth          Kind = "bandwidth"
	KindEnergy             Kind = "energy"
	KindConditionalRelease Kind = "conditional_release"
)

// maxMsat is all the bitcoin there will ever be, in msat: no single fee or
// price needs more.
const maxMsat = 21_000_000 * 100_000_000 * 1000

// CurrencyMsat is the currency of contracts priced directly in
// millisatoshi; they carry no exchange rate.
const CurrencyMsat = "msat"

// Contract is a parsed, validated tariff document. Treat it as read-only
// after Parse: Hash is computed once, from the document as parsed.
type Contract struct {
	// Kind selects which body below is present; exactly that one is.
	Kind Kind `json:"kind"`
	// Version is the publisher's revision number, starting at 1. Two
	// versions of one ID are two contracts with two hashes.
	Version uint32 `json:"version"`
	// ID is a human-readable name, such as "acme-fast-charge".
	ID string `json:"id"`
	// Currency is "msat" or an ISO 4217 code such as "EUR".
	Currency string `json:"currency"`
	// RateMsatPerUnit converts one unit of a fiat Currency to msat. It is
	// part of the document, and so of its hash, because a receipt must pin
	// the rate that was applied as firmly as the price.
	RateMsatPerUnit *Dec `json:"rate_msat_per_unit,omitempty"`
	// Fee is the hub's cut of every priced event, if any.
	Fee *Fee `json:"fee,omitempty"`
	// Security lists the rules whose breach freezes a device or provider.
	Security []SecurityRule `json:"security,omitempty"`
	// Splits divide the provider's part of every charge among several
	// payees (see Split and SplitShares).
	Splits []Split `json:"splits,omitempty"`

	EVCharging         *EVCharging `json:"ev_charging,omitempty"`
	Toll               *Toll       `json:"toll,omitempty"`
	Bandwidth          *Bandwidth  `json:"bandwidth,omitempty"`
	Energy             *Energy     `json:"energy,omitempty"`
	ConditionalRelease *Release    `json:"conditional_release,omitempty"`

	hash   [32]byte
	parsed bool // validated, with zones and derived fields resolved
}

// Fee is the hub's fee split: basis points of each event's total and/or a
// fixed msat amount per priced event. Both are paid to the hub out of the
// total; the provider gets the rest.
type Fee struct {
	// BPS is the fee in basis points (1/10000) of the total, 0..10000.
	BPS *Dec `json:"bps,omitempty"`
	// PerEventMsat is a fixed fee per priced event, in msat.
	PerEventMsat *Dec `json:"per_event_msat,omitempty"`

	bps, perEvent int64
}

// Parse decodes and validates a contract document. It rejects unknown
// fields, trailing data, JSON numbers where a decimal string belongs and
// documents over MaxSize; errors wrap ErrInvalid or ErrTooLarge.
func Parse(b []byte) (*Contract, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Contract
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after document", ErrInvalid)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.hash = sha256.Sum256(c.Canonical())
	c.parsed = true
	return &c, nil
}

// Canonical returns the deterministic encoding of the contract: JSON with
// object keys sorted, decimals normalized, absent optional fields omitted
// and no insignificant whitespace. Two documents that differ only in
// layout, key order or decimal spelling ("0.250" and "0.25") have the same
// canonical form, and so the same hash.
func (c *Contract) Canonical() []byte {
	// Marshal the typed struct (which normalizes decimals and drops absent
	// fields), then re-marshal through a generic value, whose maps
	// encoding/json writes with sorted keys.
	raw, err := json.Marshal(c)
	if err != nil {
		// Every field is a string, an integer, a Dec or a container of
		// those, none of which can fail to encode.
		panic("contracts: canonical encoding: " + err.Error())
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		panic("contracts: canonical encoding: " + err.Error())
	}
	out, err := json.Marshal(v)
	if err != nil {
		panic("contracts: canonical encoding: " + err.Error())
	}
	return out
}

// Hash returns the SHA-256 of the canonical form: the contract's identity.
func (c *Contract) Hash() [32]byte {
	if c.hash == ([32]byte{}) {
		return sha256.Sum256(c.Canonical())
	}
	return c.hash
}

// validate checks the envelope, exactly one body of the right kind, the
// body itself and the security rules.
func (c *Contract) validate() error {
	if c.Version < 1 {
		return fmt.Errorf("%w: version must be at least 1", ErrInvalid)
	}
	if err := validID(c.ID); err != nil {
		return err
	}
	if err := c.validateCurrency(); err != nil {
		return err
	}
	if c.Fee != nil {
		if err := c.Fee.validate(); err != nil {
			return err
		}
	}
	for i := range c.Security {
		if err := c.Security[i].validate(fmt.Sprintf("security[%d]", i)); err != nil {
			return err
		}
	}
	if err := validateSplits(c.Splits); err != nil {
		return err
	}

	bodies := 0
	for _, present := range []bool{c.EVCharging != nil, c.Toll != nil, c.Bandwidth != nil,
		c.Energy != nil, c.ConditionalRelease != nil} {
		if present {
			bodies++
		}
	}
	if bodies != 1 {
		return fmt.Errorf("%w: want exactly one body, found %d", ErrInvalid, bodies)
	}
	var err error
	switch {
	case c.Kind == KindEVCharging && c.EVCharging != nil:
		err = c.EVCharging.validate(c.Currency)
	case c.Kind == KindToll && c.Toll != nil:
		err = c.Toll.validate()
	case c.Kind == KindBandwidth && c.Bandwidth != nil:
		err = c.Bandwidth.validate()
	case c.Kind == KindEnergy && c.Energy != nil:
		err = c.Energy.validate()
	case c.Kind == KindConditionalRelease && c.ConditionalRelease != nil:
		err = c.ConditionalRelease.validate()
	default:
		err = fmt.Errorf("%w: kind %q does not match the body given", ErrInvalid, c.Kind)
	}
	return err
}

func validID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: id must be 1 to 128 bytes", ErrInvalid)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("%w: id has a non-printable character", ErrInvalid)
		}
	}
	return nil
}

func (c *Contract) validateCurrency() error {
	if c.Currency == CurrencyMsat {
		if c.RateMsatPerUnit != nil {
			return fmt.Errorf("%w: an msat contract takes no rate_msat_per_unit", ErrInvalid)
		}
		return nil
	}
	if len(c.Currency) != 3 || !isUpper(c.Currency) {
		return fmt.Errorf("%w: currency must be %q or an ISO 4217 code, got %q", ErrInvalid, CurrencyMsat, c.Currency)
	}
	if c.RateMsatPerUnit == nil {
		return fmt.Errorf("%w: currency %s needs rate_msat_per_unit", ErrInvalid, c.Currency)
	}
	return positive("rate_msat_per_unit", *c.RateMsatPerUnit)
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func (f *Fee) validate() error {
	if f.BPS == nil && f.PerEventMsat == nil {
		return fmt.Errorf("%w: fee needs bps and/or per_event_msat", ErrInvalid)
	}
	var err error
	if f.BPS != nil {
		if f.bps, err = whole("fee.bps", *f.BPS, 0, 10000); err != nil {
			return err
		}
	}
	if f.PerEventMsat != nil {
		if f.perEvent, err = whole("fee.per_event_msat", *f.PerEventMsat, 0, maxMsat); err != nil {
			return err
		}
	}
	return nil
}
