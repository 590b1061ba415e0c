package redisstore

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
)

// Charge keys, under the prefix: chg (hash: provider || 0 || event id ->
// charge document, see record.EncodeCharge), chgo (sorted set of the ids of the
// charges now owed, scored by a per-store sequence so they list in
// recording order), chgpd (sorted set, every score 0, of paid time key ||
// provider || 0 || event id, for every charge with a paid time),
// chgp:<provider>, chgy:<payer> and chgs:<payee> (one
// for each payee of a charge's shares) (sorted sets, every score 0, of time key || provider || 0 || event id,
// so a lexicographic range is a time window exact to the nanosecond and
// needs no double).

var (
	//go:embed charges.lua
	chargesSource string
	//go:embed chargestatus.lua
	chargeStatusSource string
	//go:embed chargepaid.lua
	chargePaidSource string
)

var _ hub.ChargeStore = (*Store)(nil)

func (s *Store) chargesKey() string           { return s.prefix + "chg" }
func (s *Store) owedKey() string              { return s.prefix + "chgo" }
func (s *Store) providerKey(p string) string  { return s.prefix + "chgp:" + p }
func (s *Store) payerKey(payer string) string { return s.prefix + "chgy:" + payer }
func (s *Store) payeeKey(payee string) string { return s.prefix + "chgs:" + payee }
func (s *Store) paidKey() string              { return s.prefix + "chgpd" }

// timeKey is t as 8 bytes that sort in time order (sign bit flipped).
func timeKey(t time.Time) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(record.UnixNano(t))^1<<63)
	return b[:]
}

func decodeCharge(doc string) (hub.Charge, error) {
	return record.DecodeCharge([]byte(doc))
}

// chargeID is the exactly-once key of a charge.
func chargeID(provider, eventID string) string { return provider + "\x00" + eventID }

func validateCharge(c hub.Charge) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("redisstore: %w", err)
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
// amount above MaxAmount, or has a zero byte in its provider or payer
// (hub.Charge.Validate).
func (s *Store) RecordCharges(ctx context.Context, cs []hub.Charge, creditLimit msat.Amount) ([]hub.ChargeResult, error) {
	if len(cs) == 0 {
		return []hub.ChargeResult{}, nil
	}
	// Owed is at most MaxAmount, so a larger limit never binds; clamping
	// it keeps the script's sum exact.
	creditLimit = min(creditLimit, MaxAmount)
	args := make([]any, 0, 3+8*len(cs))
	args = append(args, s.prefix, fmtMsat(creditLimit), len(cs))
	for _, c := range cs {
		if err := validateCharge(c); err != nil {
			return nil, err
		}
		id := chargeID(c.Provider, c.EventID)
		op := ""
		if c.Status == hub.ChargeOwed && c.Channel != (wire.OutPoint{}) {
			op = c.Channel.String()
		}
		var payees strings.Builder
		for _, sh := range c.Shares {
			payees.WriteString(sh.Payee)
			payees.WriteByte(0)
		}
		args = append(args, id, record.EncodeCharge(c), op, fmtMsat(c.Amount), c.Provider, c.Payer,
			string(timeKey(c.Charged))+id, payees.String())
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
		c.EventTime, c.Charged = record.FromUnixNano(record.UnixNano(c.EventTime)), record.FromUnixNano(record.UnixNano(c.Charged))
		if len(r) > 2 && r[2] == 'x' {
			c.Channel = wire.OutPoint{}
		}
		out[i] = hub.ChargeResult{Stored: c}
	}
	return out, nil
}

// SetChargeStatus moves the named charges of provider to status, changing
// nothing else but the paid time of charges it marks paid (Owed moves with
// payments); see hub.ChargeStore. It returns an error wrapping
// hub.ErrNotFound, writing nothing, when one of the events was never
// charged, and hub.ErrInvalid for an unknown status.
func (s *Store) SetChargeStatus(ctx context.Context, provider string, eventIDs []string, status hub.ChargeStatus, paidAt time.Time) error {
	code, ok := status.Code()
	if !ok {
		return fmt.Errorf("redisstore: %w: charge status %q", hub.ErrInvalid, status)
	}
	if len(eventIDs) == 0 {
		return nil
	}
	if status == hub.ChargePaid && !paidAt.IsZero() {
		return s.markPaid(ctx, provider, eventIDs, paidAt)
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

// markPaidAttempts bounds how often markPaid reads the charges again when
// another writer changed one of them, or cut the open epoch, between its
// read and its script.
const markPaidAttempts = 8

// markPaid marks the named charges paid at paidAt, or at the open epoch's
// From when paidAt is before it (hub.PaidTime): it reads their records and
// the open epoch in one round trip, re-encodes those not paid yet with the
// paid time, and has a script write them and index them by paid time if
// none changed and the open epoch is the one read.
func (s *Store) markPaid(ctx context.Context, provider string, eventIDs []string, paidAt time.Time) error {
	ids := make([]string, len(eventIDs))
	for i, e := range eventIDs {
		ids[i] = chargeID(provider, e)
	}
	for range markPaidAttempts {
		var docsCmd *redis.SliceCmd
		var openCmd *redis.StringSliceCmd
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			docsCmd = p.HMGet(ctx, s.chargesKey(), ids...)
			openCmd = p.ZRevRange(ctx, s.epochsKey(), 0, 0)
			return nil
		})
		if err != nil {
			return fmt.Errorf("redisstore: mark %d charges of %s paid: %w", len(ids), provider, err)
		}
		docs := docsCmd.Val()
		// The script checks the open epoch number is still the one of
		// the epoch read ('' when none is stored), so the paid time is
		// never before the start of the epoch open at the write.
		paid, openNum := paidAt, ""
		if o := openCmd.Val(); len(o) > 0 {
			open, err := decodeEpoch(o[0])
			if err != nil {
				return err
			}
			paid, openNum = hub.PaidTime(paidAt, open), strconv.FormatUint(open.Number, 10)
		}
		args := make([]any, 0, 1+4*len(ids))
		args = append(args, openNum)
		for i, d := range docs {
			doc, ok := d.(string)
			if !ok {
				return fmt.Errorf("redisstore: mark charges paid: %w: charge %q", hub.ErrNotFound, ids[i])
			}
			c, err := decodeCharge(doc)
			if err != nil {
				return fmt.Errorf("redisstore: charge %q: %w", ids[i], err)
			}
			if c.Status == hub.ChargePaid {
				continue // keeps its first paid time
			}
			c.Status, c.Paid = hub.ChargePaid, paid
			args = append(args, ids[i], doc, record.EncodeCharge(c), string(timeKey(paid))+ids[i])
		}
		if len(args) == 1 {
			return nil
		}
		res, err := scriptReply(ctx, s.rdb, chargePaidScript, []string{s.chargesKey(), s.owedKey(), s.paidKey(), s.epochOpenKey()}, args...)
		if err != nil {
			return fmt.Errorf("redisstore: mark %d charges of %s paid: %w", len(ids), provider, err)
		}
		switch res[0] {
		case "ok":
			return nil
		case "notfound":
			return fmt.Errorf("redisstore: mark charges paid: %w: charge %q", hub.ErrNotFound, at(res, 1))
		case "changed", "cut":
			continue
		default:
			return fmt.Errorf("redisstore: mark charges paid: unexpected script reply %q", res)
		}
	}
	return fmt.Errorf("redisstore: mark %d charges of %s paid: charges changed or epoch cut by other writers %d times", len(ids), provider, markPaidAttempts)
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

// ChargesByPayee returns the charges recorded in [from, to) that give
// payee a share, oldest first; charges of the same nanosecond come in
// provider and event id order.
func (s *Store) ChargesByPayee(ctx context.Context, payee string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, s.payeeKey(payee), from, to)
}

// ChargesByPayer returns a payer's charges recorded in [from, to), oldest
// first; charges of the same nanosecond come in provider and event id
// order.
func (s *Store) ChargesByPayer(ctx context.Context, payer string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, s.payerKey(payer), from, to)
}

// ChargesPaid returns every charge whose paid time is in [from, to),
// oldest paid first; charges paid in the same nanosecond come in provider
// and event id order.
func (s *Store) ChargesPaid(ctx context.Context, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, s.paidKey(), from, to)
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
