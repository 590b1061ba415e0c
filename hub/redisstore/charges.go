package redisstore

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/lnwire"
	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// Charge keys, under the prefix: chg (hash: provider || 0 || event id ->
// charge document, see encodeCharge), chgo (sorted set of the ids of the
// charges now owed, scored by a per-store sequence so they list in
// recording order), chgp:<provider> and chgy:<payer>
// (sorted sets, every score 0, of time key || provider || 0 || event id,
// so a lexicographic range is a time window exact to the nanosecond and
// needs no double).

var (
	//go:embed charges.lua
	chargesSource string
	//go:embed chargestatus.lua
	chargeStatusSource string
)

var _ hub.ChargeStore = (*Store)(nil)

func (s *Store) chargesKey() string           { return s.prefix + "chg" }
func (s *Store) owedKey() string              { return s.prefix + "chgo" }
func (s *Store) providerKey(p string) string  { return s.prefix + "chgp:" + p }
func (s *Store) payerKey(payer string) string { return s.prefix + "chgy:" + payer }

// Charge document layout: status | channel (txid, big-endian index) |
// amount | fee | contract | event time | charged (unix ns, MinInt64 for the
// zero time) | then provider, payer, event id and quantity, each a uvarint
// length and the bytes (documents written before quantity was kept end
// after the event id and read back with an empty one). The status and channel come first at fixed offsets so the
// scripts can rewrite them without decoding the rest.
const (
	cgStatus    = 0
	cgChannel   = 1
	cgAmount    = cgChannel + 36
	cgFee       = cgAmount + 8
	cgContract  = cgFee + 8
	cgEventTime = cgContract + 32
	cgCharged   = cgEventTime + 8
	cgFixedLen  = cgCharged + 8
)

var errBadCharge = errors.New("redisstore: malformed charge document")

// unixNano keeps the zero time distinct: its UnixNano is not defined.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// timeKey is t as 8 bytes that sort in time order (sign bit flipped).
func timeKey(t time.Time) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(unixNano(t))^1<<63)
	return b[:]
}

func encodeCharge(c hub.Charge, code byte) []byte {
	b := make([]byte, cgFixedLen, cgFixedLen+4*binary.MaxVarintLen16+len(c.Provider)+len(c.Payer)+len(c.EventID)+len(c.Quantity))
	b[cgStatus] = code
	copy(b[cgChannel:], c.Channel.Hash[:])
	binary.BigEndian.PutUint32(b[cgChannel+32:], c.Channel.Index)
	binary.BigEndian.PutUint64(b[cgAmount:], uint64(c.Amount))
	binary.BigEndian.PutUint64(b[cgFee:], uint64(c.Fee))
	copy(b[cgContract:], c.Contract[:])
	binary.BigEndian.PutUint64(b[cgEventTime:], uint64(unixNano(c.EventTime)))
	binary.BigEndian.PutUint64(b[cgCharged:], uint64(unixNano(c.Charged)))
	for _, s := range []string{c.Provider, c.Payer, c.EventID, c.Quantity} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func decodeCharge(doc string) (hub.Charge, error) {
	var c hub.Charge
	if len(doc) < cgFixedLen {
		return c, errBadCharge
	}
	b := []byte(doc)
	st, ok := hub.ChargeStatusOf(b[cgStatus])
	if !ok {
		return c, fmt.Errorf("%w: status %q", errBadCharge, b[cgStatus])
	}
	c.Status = st
	copy(c.Channel.Hash[:], b[cgChannel:])
	c.Channel.Index = binary.BigEndian.Uint32(b[cgChannel+32:])
	c.Amount = lnwire.MilliSatoshi(binary.BigEndian.Uint64(b[cgAmount:]))
	c.Fee = lnwire.MilliSatoshi(binary.BigEndian.Uint64(b[cgFee:]))
	copy(c.Contract[:], b[cgContract:])
	c.EventTime = fromUnixNano(int64(binary.BigEndian.Uint64(b[cgEventTime:])))
	c.Charged = fromUnixNano(int64(binary.BigEndian.Uint64(b[cgCharged:])))
	rest := b[cgFixedLen:]
	for i, dst := range []*string{&c.Provider, &c.Payer, &c.EventID, &c.Quantity} {
		if i == 3 && len(rest) == 0 {
			break // written before quantities were kept
		}
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return c, errBadCharge
		}
		*dst = string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
	}
	return c, nil
}

// chargeID is the exactly-once key of a charge.
func chargeID(provider, eventID string) string { return provider + "\x00" + eventID }

func validateCharge(c hub.Charge) error {
	switch {
	case c.Provider == "" || c.EventID == "":
		return fmt.Errorf("redisstore: %w: charge needs a provider and an event id", hub.ErrInvalid)
	case strings.IndexByte(c.Provider, 0) >= 0:
		// A zero byte would end the name early in the charge id.
		return fmt.Errorf("redisstore: %w: charge %s: zero byte in the provider", hub.ErrInvalid, c.EventID)
	case c.Fee > c.Amount:
		return fmt.Errorf("redisstore: %w: charge %s: fee %d above amount %d", hub.ErrInvalid, c.EventID, c.Fee, c.Amount)
	}
	if _, ok := c.Status.Code(); !ok {
		return fmt.Errorf("redisstore: %w: charge %s: status %q", hub.ErrInvalid, c.EventID, c.Status)
	}
	return checkAmounts("charge", c.Amount)
}

// RecordCharges writes the new charges of cs and raises their channels'
// Owed with one script run, which Redis executes atomically; see
// hub.ChargeStore. It is durable when the server runs with appendfsync
// always (see the package comment). A charge with Status ChargeOwed whose
// channel is zero or unknown is stored as ChargeUnpaid with a zero
// Channel; credit is granted in the order of cs. It returns an error
// wrapping hub.ErrInvalid, writing nothing, when a charge lacks a provider
// or event id, names an unknown status, has a fee above its amount or an
// amount above MaxAmount, or has a zero byte in its provider.
func (s *Store) RecordCharges(ctx context.Context, cs []hub.Charge, creditLimit lnwire.MilliSatoshi) ([]hub.ChargeResult, error) {
	if len(cs) == 0 {
		return []hub.ChargeResult{}, nil
	}
	// Owed is at most MaxAmount, so a larger limit never binds; clamping
	// it keeps the script's sum exact.
	creditLimit = min(creditLimit, MaxAmount)
	args := make([]any, 0, 3+7*len(cs))
	args = append(args, s.prefix, fmtMsat(creditLimit), len(cs))
	for _, c := range cs {
		if err := validateCharge(c); err != nil {
			return nil, err
		}
		code, _ := c.Status.Code()
		id := chargeID(c.Provider, c.EventID)
		op := ""
		if c.Status == hub.ChargeOwed && c.Channel != (wire.OutPoint{}) {
			op = c.Channel.String()
		}
		args = append(args, id, encodeCharge(c, code), op, fmtMsat(c.Amount), c.Provider, c.Payer,
			string(timeKey(c.Charged))+id)
	}
	res, err := scriptReply(ctx, s.rdb, chargesScript, []string{s.chargesKey(), s.fundKey(), s.owedKey(), s.owedKey() + "seq"}, args...)
	if err != nil {
		return nil, fmt.Errorf("redisstore: record %d charges: %w", len(cs), err)
	}
	if len(res) != len(cs) {
		return nil, fmt.Errorf("redisstore: record %d charges: %d replies", len(cs), len(res))
	}
	out := make([]hub.ChargeResult, len(cs))
	for i, r := range res {
		if strings.HasPrefix(r, "d") {
			c, err := decodeCharge(r[1:])
			if err != nil {
				return nil, fmt.Errorf("redisstore: charge %s/%s: %w", cs[i].Provider, cs[i].EventID, err)
			}
			out[i] = hub.ChargeResult{Duplicate: true, Stored: c}
			continue
		}
		if len(r) < 2 || r[0] != 'n' {
			return nil, fmt.Errorf("redisstore: record charges: unexpected reply %q", r)
		}
		st, ok := hub.ChargeStatusOf(r[1])
		if !ok {
			return nil, fmt.Errorf("redisstore: record charges: unexpected reply %q", r)
		}
		c := cs[i]
		c.Status = st
		c.EventTime, c.Charged = fromUnixNano(unixNano(c.EventTime)), fromUnixNano(unixNano(c.Charged))
		if len(r) > 2 && r[2] == 'x' {
			c.Channel = wire.OutPoint{}
		}
		out[i] = hub.ChargeResult{Stored: c}
	}
	return out, nil
}

// SetChargeStatus moves the named charges of provider to status, changing
// nothing else (Owed moves with payments). It returns an error wrapping
// hub.ErrNotFound, writing nothing, when one of the events was never
// charged, and hub.ErrInvalid for an unknown status.
func (s *Store) SetChargeStatus(ctx context.Context, provider string, eventIDs []string, status hub.ChargeStatus) error {
	code, ok := status.Code()
	if !ok {
		return fmt.Errorf("redisstore: %w: charge status %q", hub.ErrInvalid, status)
	}
	if len(eventIDs) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(eventIDs))
	args = append(args, string(code))
	for _, e := range eventIDs {
		args = append(args, chargeID(provider, e))
	}
	res, err := scriptReply(ctx, s.rdb, chargeStatusScript, []string{s.chargesKey(), s.owedKey(), s.owedKey() + "seq"}, args...)
	if err != nil {
		return fmt.Errorf("redisstore: set status of %d charges of %s: %w", len(eventIDs), provider, err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "notfound":
		return fmt.Errorf("redisstore: set charge status: %w: charge %q", hub.ErrNotFound, at(res, 1))
	}
	return fmt.Errorf("redisstore: set charge status: unexpected script reply %q", res)
}

// Charge returns one charge, or hub.ErrNotFound.
func (s *Store) Charge(ctx context.Context, provider, eventID string) (hub.Charge, error) {
	doc, err := s.rdb.HGet(ctx, s.chargesKey(), chargeID(provider, eventID)).Result()
	if errors.Is(err, redis.Nil) {
		return hub.Charge{}, fmt.Errorf("%w: charge %s/%s", hub.ErrNotFound, provider, eventID)
	}
	if err != nil {
		return hub.Charge{}, fmt.Errorf("redisstore: charge %s/%s: %w", provider, eventID, err)
	}
	c, err := decodeCharge(doc)
	if err != nil {
		return hub.Charge{}, fmt.Errorf("redisstore: charge %s/%s: %w", provider, eventID, err)
	}
	return c, nil
}

// ChargesByProvider returns a provider's charges recorded in [from, to),
// oldest first; charges of the same nanosecond come in event id order.
func (s *Store) ChargesByProvider(ctx context.Context, provider string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, s.providerKey(provider), from, to)
}

// ChargesByPayer returns a payer's charges recorded in [from, to), oldest
// first; charges of the same nanosecond come in provider and event id
// order.
func (s *Store) ChargesByPayer(ctx context.Context, payer string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, s.payerKey(payer), from, to)
}

func (s *Store) chargesBy(ctx context.Context, key string, from, to time.Time) ([]hub.Charge, error) {
	if !from.Before(to) {
		return nil, nil
	}
	// A member is time key || id: every member of an instant in [from, to)
	// sorts at or after from's key and before to's.
	members, err := s.rdb.ZRangeByLex(ctx, key, &redis.ZRangeBy{
		Min: "[" + string(timeKey(from)),
		Max: "(" + string(timeKey(to)),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: charges of %s: %w", key, err)
	}
	if len(members) == 0 {
		return nil, nil
	}
	ids := make([]string, len(members))
	for i, m := range members {
		if len(m) <= 8 {
			return nil, fmt.Errorf("redisstore: charge index %s holds a %d-byte member", key, len(m))
		}
		ids[i] = m[8:]
	}
	docs, err := s.rdb.HMGet(ctx, s.chargesKey(), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: charges of %s: %w", key, err)
	}
	out := make([]hub.Charge, 0, len(docs))
	for i, d := range docs {
		doc, ok := d.(string)
		if !ok {
			return nil, fmt.Errorf("redisstore: charge %q is indexed but missing", ids[i])
		}
		c, err := decodeCharge(doc)
		if err != nil {
			return nil, fmt.Errorf("redisstore: charge %q: %w", ids[i], err)
		}
		out = append(out, c)
	}
	return out, nil
}

// OwedCharges returns every charge now owed, oldest recorded first (the
// owed index is scored by a sequence the recording script advances).
func (s *Store) OwedCharges(ctx context.Context) ([]hub.Charge, error) {
	ids, err := s.rdb.ZRange(ctx, s.owedKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: owed charges: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	docs, err := s.rdb.HMGet(ctx, s.chargesKey(), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: owed charges: %w", err)
	}
	out := make([]hub.Charge, 0, len(docs))
	for i, d := range docs {
		doc, ok := d.(string)
		if !ok {
			return nil, fmt.Errorf("redisstore: owed charge %q is indexed but missing", ids[i])
		}
		c, err := decodeCharge(doc)
		if err != nil {
			return nil, fmt.Errorf("redisstore: charge %q: %w", ids[i], err)
		}
		// The index and the documents are read in two calls; a charge
		// paid in between is left out.
		if c.Status == hub.ChargeOwed {
			out = append(out, c)
		}
	}
	return out, nil
}
