package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/msat"
)

// ErrBadCharge is returned by DecodeCharge for bytes that are
// not a charge record.
var ErrBadCharge = errors.New("hub: malformed charge record")

// The compact charge record both stores keep (bbolt values, Redis hash
// fields): status code | channel (txid, big-endian index) | amount | fee |
// contract | event time | charged (unix ns, MinInt64 for the zero time) |
// then provider, payer, event id and quantity, each a uvarint length and the
// bytes, then the 32-byte event digest when it is not zero (or the withheld
// amount follows), then the withheld amount (8 bytes) when it is not zero
// (or shares or a paid time follow), then, when the charge has shares or
// a paid time, their count (zero only when a paid time follows) and each
// share's payee (a uvarint length and the bytes) and amount (8 bytes),
// then the paid time (unix ns, 8 bytes) when it is not zero. Records written
// before quantities were kept end after the event id and decode with an
// empty one; records written before digests were kept end after the
// quantity and decode with a zero one. Status and channel come first at fixed
// offsets so a store (or a Redis script) can rewrite them in place without
// decoding the rest.
const (
	ChargeRecordStatus   = 0
	ChargeRecordChannel  = 1
	chargeRecordAmount   = ChargeRecordChannel + 36
	chargeRecordFee      = chargeRecordAmount + 8
	chargeRecordContract = chargeRecordFee + 8
	chargeRecordEvent    = chargeRecordContract + 32
	chargeRecordCharged  = chargeRecordEvent + 8
	// ChargeFixedLen is the length of the fixed part.
	ChargeFixedLen = chargeRecordCharged + 8
)

// EncodeCharge returns c's compact record. c.Status must be a known
// status (ChargeStatus.Code); stores validate charges before encoding them.
func EncodeCharge(c hub.Charge) []byte {
	code, _ := c.Status.Code()
	b := make([]byte, ChargeFixedLen,
		ChargeFixedLen+4*binary.MaxVarintLen16+len(c.Provider)+len(c.Payer)+len(c.EventID)+len(c.Quantity)+len(c.Digest))
	b[ChargeRecordStatus] = code
	copy(b[ChargeRecordChannel:], c.Channel.Hash[:])
	binary.BigEndian.PutUint32(b[ChargeRecordChannel+32:], c.Channel.Index)
	binary.BigEndian.PutUint64(b[chargeRecordAmount:], uint64(c.Amount))
	binary.BigEndian.PutUint64(b[chargeRecordFee:], uint64(c.Fee))
	copy(b[chargeRecordContract:], c.Contract[:])
	binary.BigEndian.PutUint64(b[chargeRecordEvent:], uint64(UnixNano(c.EventTime)))
	binary.BigEndian.PutUint64(b[chargeRecordCharged:], uint64(UnixNano(c.Charged)))
	for _, s := range []string{c.Provider, c.Payer, c.EventID, c.Quantity} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	paid := !c.Paid.IsZero()
	shares := len(c.Shares) > 0 || paid
	if c.Digest != (hub.Hash{}) || c.Withheld != 0 || shares {
		b = append(b, c.Digest[:]...)
	}
	if c.Withheld != 0 || shares {
		b = binary.BigEndian.AppendUint64(b, uint64(c.Withheld))
	}
	if shares {
		b = binary.AppendUvarint(b, uint64(len(c.Shares)))
		for _, sh := range c.Shares {
			b = binary.AppendUvarint(b, uint64(len(sh.Payee)))
			b = append(b, sh.Payee...)
			b = binary.BigEndian.AppendUint64(b, uint64(sh.Msat))
		}
	}
	if paid {
		b = binary.BigEndian.AppendUint64(b, uint64(UnixNano(c.Paid)))
	}
	return b
}

// DecodeCharge parses a record made by EncodeCharge. The
// returned charge does not alias b. Errors wrap ErrBadCharge.
func DecodeCharge(b []byte) (hub.Charge, error) {
	var c hub.Charge
	if len(b) < ChargeFixedLen {
		return c, ErrBadCharge
	}
	st, ok := hub.ChargeStatusOf(b[ChargeRecordStatus])
	if !ok {
		return c, fmt.Errorf("%w: status %q", ErrBadCharge, b[ChargeRecordStatus])
	}
	c.Status = st
	copy(c.Channel.Hash[:], b[ChargeRecordChannel:])
	c.Channel.Index = binary.BigEndian.Uint32(b[ChargeRecordChannel+32:])
	c.Amount = msat.Amount(binary.BigEndian.Uint64(b[chargeRecordAmount:]))
	c.Fee = msat.Amount(binary.BigEndian.Uint64(b[chargeRecordFee:]))
	copy(c.Contract[:], b[chargeRecordContract:])
	c.EventTime = FromUnixNano(int64(binary.BigEndian.Uint64(b[chargeRecordEvent:])))
	c.Charged = FromUnixNano(int64(binary.BigEndian.Uint64(b[chargeRecordCharged:])))
	rest := b[ChargeFixedLen:]
	for i, dst := range []*string{&c.Provider, &c.Payer, &c.EventID, &c.Quantity} {
		if i == 3 && len(rest) == 0 {
			break // written before quantities were kept
		}
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return c, ErrBadCharge
		}
		// string() copies, so the charge outlives a store transaction.
		*dst = string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
	}
	switch len(rest) {
	case 0: // no digest: written before digests were kept
	case len(c.Digest):
		copy(c.Digest[:], rest)
	case len(c.Digest) + 8:
		copy(c.Digest[:], rest)
		c.Withheld = msat.Amount(binary.BigEndian.Uint64(rest[len(c.Digest):]))
		if c.Withheld == 0 {
			return c, ErrBadCharge // encoded only when set
		}
	default:
		if len(rest) < len(c.Digest)+8 {
			return c, ErrBadCharge
		}
		copy(c.Digest[:], rest)
		c.Withheld = msat.Amount(binary.BigEndian.Uint64(rest[len(c.Digest):]))
		var err error
		if c.Shares, c.Paid, err = decodeShares(rest[len(c.Digest)+8:]); err != nil {
			return c, err
		}
	}
	return c, nil
}

// decodeShares parses the end of a charge record after its withheld
// amount: a share count, then each share, then the paid time when one
// was kept, and nothing after. The count is zero only when a paid time
// follows, and a paid time is never the zero time: a record has one
// encoding.
func decodeShares(b []byte) ([]hub.Share, time.Time, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > hub.MaxShares {
		return nil, time.Time{}, ErrBadCharge
	}
	b = b[k:]
	var out []hub.Share
	if n > 0 {
		out = make([]hub.Share, n)
	}
	for i := range out {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) || uint64(len(b)-k)-l < 8 {
			return nil, time.Time{}, ErrBadCharge
		}
		out[i].Payee = string(b[k : k+int(l)])
		b = b[k+int(l):]
		out[i].Msat = msat.Amount(binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	var paid time.Time
	switch len(b) {
	case 0:
		if n == 0 {
			return nil, time.Time{}, ErrBadCharge
		}
	case 8:
		if paid = FromUnixNano(int64(binary.BigEndian.Uint64(b))); paid.IsZero() {
			return nil, time.Time{}, ErrBadCharge
		}
	default:
		return nil, time.Time{}, ErrBadCharge
	}
	return out, paid, nil
}

// UnixNano is t in Unix nanoseconds, with the zero time kept distinct
// (MinInt64): its UnixNano is undefined. Stores use it for every time they
// encode.
func UnixNano(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

// FromUnixNano is the inverse of UnixNano, in UTC.
func FromUnixNano(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
