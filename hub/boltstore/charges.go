package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
)

// Charge buckets. A charge is written once to an append-only log, in
// commit order, and found through indexes that hold its log position:
// by (provider, event id) for exactly-once, and by provider, by payer and
// by each share's payee in time order for the windowed lists. The log is what makes
// RecordCharges cheap: the charges of one commit fill a few new pages at
// the end of the log instead of dirtying one page per charge across a
// tree keyed by event id; only the 8-byte index values are scattered.
// Like the contract buckets they are created by the first write.
var (
	bucketChargeLog   = []byte("chglog")   // big-endian position -> charge (see hub.EncodeChargeRecord)
	bucketChargeIDs   = []byte("chgids")   // provider || 0 || event id -> position
	bucketChargeProv  = []byte("chgprov")  // provider || 0 || timeKey(charged) || position -> empty
	bucketChargePayer = []byte("chgpayer") // payer || 0 || timeKey(charged) || position -> empty
	bucketChargeOwed  = []byte("chgowed")  // position -> empty, for every charge now owed
	bucketChargePayee = []byte("chgpayee") // payee || 0 || timeKey(charged) || position -> empty, per share
	bucketChargePaid  = []byte("chgpaid")  // timeKey(paid) || position -> empty, for every charge with a paid time
	chargeBucketSet   = [][]byte{bucketChargeLog, bucketChargeIDs, bucketChargeProv, bucketChargePayer, bucketChargePayee}
)

var _ hub.ChargeStore = (*Store)(nil)

// chargeID is the exactly-once key of a charge.
func chargeID(provider, eventID string) []byte {
	k := make([]byte, 0, len(provider)+1+len(eventID))
	k = append(k, provider...)
	k = append(k, 0)
	return append(k, eventID...)
}

// partyKey is the start of a provider's or payer's index keys at time t;
// the log position follows it.
func partyKey(party string, t time.Time) []byte {
	k := make([]byte, 0, len(party)+1+8+8)
	k = append(k, party...)
	k = append(k, 0)
	return append(k, timeKey(t)...)
}

// roundTrip returns t as the store gives it back: UTC, no monotonic
// reading.
func roundTrip(t time.Time) time.Time { return record.FromUnixNano(record.UnixNano(t)) }

func validateCharge(c hub.Charge) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	return nil
}

// preparedCharge is one charge of RecordCharges with everything its write
// needs built outside the transaction.
type preparedCharge struct {
	stored  hub.Charge // as it reads back, before the status is decided
	doc     []byte
	id      []byte
	prov    []byte   // partyKey of the provider
	payer   []byte   // partyKey of the payer
	payees  [][]byte // partyKey of each share's payee
	channel string   // outpoint key when the charge raises Owed, else ""
	firstOf int      // index of the earlier charge with the same id, or -1
}

// owedChannel is a channel's state as RecordCharges moves it within one
// transaction.
type owedChannel struct {
	pid   []byte
	state []byte // a copy, written back at the end when dirty
	owed  uint64
	dirty bool
}

// RecordCharges writes the new charges of cs and raises their channels'
// Owed in one transaction, durable before it returns and shared with other
// writers' commits; see hub.ChargeStore. A charge with Status ChargeOwed
// whose channel is zero or unknown is stored as ChargeUnpaid with a zero
// Channel; credit is granted in the order of cs. It returns an error
// wrapping hub.ErrInvalid, writing nothing, when a charge lacks a provider
// or event id, names an unknown status, has a fee above its amount, or has
// a zero byte in its provider or payer.
func (s *Store) RecordCharges(ctx context.Context, cs []hub.Charge, creditLimit msat.Amount) ([]hub.ChargeResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return []hub.ChargeResult{}, nil
	}
	// Encoding happens here, outside the transaction: the committer runs
	// its group serially, so work inside it uses one core.
	ps := make([]preparedCharge, len(cs))
	seen := make(map[string]int, len(cs))
	for i, c := range cs {
		if err := validateCharge(c); err != nil {
			return nil, err
		}
		p := &ps[i]
		p.id = chargeID(c.Provider, c.EventID)
		p.firstOf = -1
		if j, ok := seen[string(p.id)]; ok {
			p.firstOf = j
			continue
		}
		seen[string(p.id)] = i
		p.stored = c
		p.stored.EventTime, p.stored.Charged = roundTrip(c.EventTime), roundTrip(c.Charged)
		p.doc = record.EncodeCharge(c)
		p.prov = partyKey(c.Provider, c.Charged)
		p.payer = partyKey(c.Payer, c.Charged)
		for _, sh := range c.Shares {
			p.payees = append(p.payees, partyKey(sh.Payee, c.Charged))
		}
		if c.Status == hub.ChargeOwed && !isZeroOutPoint(c.Channel) {
			p.channel = string(opKey(c.Channel))
		}
	}
	limit := uint64(creditLimit)

	// The function may run more than once (the committer reruns it alone
	// when another write of its group fails); it resets what it builds
	// and changes nothing outside tx but res, so every run is the same.
	var res []hub.ChargeResult
	err := s.commit.do(func(tx *bolt.Tx) error {
		res = make([]hub.ChargeResult, len(cs))
		var bs [5]*bolt.Bucket
		for i, name := range chargeBucketSet {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			bs[i] = b
		}
		log, ids, prov, payer, payee := bs[0], bs[1], bs[2], bs[3], bs[4]
		// Through owedIndex: a store written before the index existed
		// gets it built from the log, not started empty.
		owedIdx, err := owedIndex(tx)
		if err != nil {
			return err
		}
		// Positions only grow, so log pages can be filled completely.
		log.FillPercent = 1.0
		funding, states := tx.Bucket(bucketFunding), tx.Bucket(bucketChanState)
		chans := make(map[string]*owedChannel)

		for i := range ps {
			p := &ps[i]
			if p.firstOf >= 0 {
				continue
			}
			if pos := ids.Get(p.id); pos != nil {
				c, err := record.DecodeCharge(log.Get(pos))
				if err != nil {
					return fmt.Errorf("charge %q at %x: %w", p.id, pos, err)
				}
				res[i] = hub.ChargeResult{Duplicate: true, Stored: c}
				continue
			}
			stored, doc := p.stored, p.doc
			if stored.Status == hub.ChargeOwed {
				ch, err := owedChannelOf(chans, funding, states, p.channel)
				if err != nil {
					return err
				}
				amount := uint64(stored.Amount)
				switch {
				case ch == nil:
					// No channel to charge: the payer cannot pay.
					stored.Status, stored.Channel = hub.ChargeUnpaid, wire.OutPoint{}
					doc = bytes.Clone(doc)
					doc[record.ChargeRecordStatus] = 'u'
					clear(doc[record.ChargeRecordChannel : record.ChargeRecordChannel+opKeyLen])
				case ch.owed > limit || amount > limit-ch.owed:
					stored.Status = hub.ChargeUnpaid
					doc = bytes.Clone(doc)
					doc[record.ChargeRecordStatus] = 'u'
				default:
					ch.owed += amount
					ch.dirty = true
				}
			}
			seq, err := log.NextSequence()
			if err != nil {
				return err
			}
			pos := seqBytes(seq)
			if err := log.Put(pos, doc); err != nil {
				return err
			}
			if err := ids.Put(p.id, pos); err != nil {
				return err
			}
			if err := prov.Put(append(p.prov[:len(p.prov):len(p.prov)], pos...), []byte{}); err != nil {
				return err
			}
			if err := payer.Put(append(p.payer[:len(p.payer):len(p.payer)], pos...), []byte{}); err != nil {
				return err
			}
			for _, k := range p.payees {
				if err := payee.Put(append(k[:len(k):len(k)], pos...), []byte{}); err != nil {
					return err
				}
			}
			if stored.Status == hub.ChargeOwed {
				if err := owedIdx.Put(pos, []byte{}); err != nil {
					return err
				}
			}
			res[i] = hub.ChargeResult{Stored: stored}
		}
		for i := range ps {
			if j := ps[i].firstOf; j >= 0 {
				res[i] = hub.ChargeResult{Duplicate: true, Stored: res[j].Stored}
			}
		}
		for _, ch := range chans {
			if ch == nil || !ch.dirty {
				continue
			}
			binary.BigEndian.PutUint64(ch.state[stOwed:], ch.owed)
			if err := states.Put(ch.pid, ch.state); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: record %d charges: %w", len(cs), err)
	}
	return res, nil
}

// owedChannelOf returns the channel funded by the outpoint key op as this
// transaction has moved it so far, or nil when no channel is funded by op.
func owedChannelOf(chans map[string]*owedChannel, funding, states *bolt.Bucket, op string) (*owedChannel, error) {
	if op == "" {
		return nil, nil
	}
	if ch, ok := chans[op]; ok {
		return ch, nil
	}
	var ch *owedChannel
	if pid := funding.Get([]byte(op)); pid != nil {
		cur := states.Get(pid)
		if len(cur) != stateLen {
			return nil, fmt.Errorf("channel %x state is %d bytes", pid, len(cur))
		}
		ch = &owedChannel{pid: bytes.Clone(pid), state: bytes.Clone(cur), owed: binary.BigEndian.Uint64(cur[stOwed:])}
	}
	// A missing channel is remembered as nil, so it is looked up once.
	chans[op] = ch
	return ch, nil
}

// SetChargeStatus moves the named charges of provider to status, changing
// nothing else but the paid time of charges it marks paid (Owed moves with
// payments); see hub.ChargeStore. It returns an error wrapping
// hub.ErrNotFound, writing nothing, when one of the events was never
// charged, and hub.ErrInvalid for an unknown status.
func (s *Store) SetChargeStatus(ctx context.Context, provider string, eventIDs []string, status hub.ChargeStatus, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	code, ok := status.Code()
	if !ok {
		return fmt.Errorf("boltstore: %w: charge status %q", hub.ErrInvalid, status)
	}
	ids := make([][]byte, len(eventIDs))
	for i, e := range eventIDs {
		ids[i] = chargeID(provider, e)
	}
	stamp := code == 'p' && !at.IsZero()
	var refused error
	err := s.commit.do(func(tx *bolt.Tx) error {
		refused = nil
		idx, log := tx.Bucket(bucketChargeIDs), tx.Bucket(bucketChargeLog)
		owedIdx, err := owedIndex(tx)
		if err != nil {
			return err
		}
		var paidIdx *bolt.Bucket
		paid := at
		if stamp {
			if paidIdx, err = tx.CreateBucketIfNotExists(bucketChargePaid); err != nil {
				return err
			}
			// Read in the transaction that writes the mark, so a cut
			// either committed before it (and the mark is in its
			// successor) or after it (and the closed epoch's ledger,
			// built after the cut, reads the mark).
			open, ok, err := openEpochIn(tx)
			if err != nil {
				return err
			}
			if ok {
				paid = hub.PaidTime(at, open)
			}
		}
		// Every id is checked before the first write.
		pos := make([][]byte, len(ids))
		for i, id := range ids {
			if idx != nil {
				pos[i] = idx.Get(id)
			}
			if pos[i] == nil {
				refused = fmt.Errorf("%w: charge %s/%s", hub.ErrNotFound, provider, eventIDs[i])
				return nil
			}
		}
		for i, p := range pos {
			cur := log.Get(p)
			if len(cur) < record.ChargeFixedLen {
				return fmt.Errorf("charge %s/%s: %w", provider, eventIDs[i], record.ErrBadCharge)
			}
			if cur[record.ChargeRecordStatus] == code {
				continue
			}
			next := bytes.Clone(cur)
			next[record.ChargeRecordStatus] = code
			if stamp {
				// The paid time goes at the record's end, behind
				// variable-length fields: decode and encode again.
				c, err := record.DecodeCharge(next)
				if err != nil {
					return fmt.Errorf("charge %s/%s: %w", provider, eventIDs[i], err)
				}
				c.Paid = paid
				next = record.EncodeCharge(c)
				if err := paidIdx.Put(append(timeKey(paid), p...), []byte{}); err != nil {
					return err
				}
			}
			if err := log.Put(p, next); err != nil {
				return err
			}
			if code == 'o' {
				err = owedIdx.Put(p, []byte{})
			} else {
				err = owedIdx.Delete(p)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return fmt.Errorf("boltstore: set status of %d charges of %s: %w", len(eventIDs), provider, err)
	}
	return nil
}

// Charge returns one charge, or hub.ErrNotFound.
func (s *Store) Charge(ctx context.Context, provider, eventID string) (hub.Charge, error) {
	if err := ctx.Err(); err != nil {
		return hub.Charge{}, err
	}
	var c hub.Charge
	err := s.db.View(func(tx *bolt.Tx) error {
		var pos []byte
		if idx := tx.Bucket(bucketChargeIDs); idx != nil {
			pos = idx.Get(chargeID(provider, eventID))
		}
		if pos == nil {
			return fmt.Errorf("%w: charge %s/%s", hub.ErrNotFound, provider, eventID)
		}
		var err error
		if c, err = record.DecodeCharge(tx.Bucket(bucketChargeLog).Get(pos)); err != nil {
			return fmt.Errorf("charge %s/%s: %w", provider, eventID, err)
		}
		return nil
	})
	return c, err
}

// ChargesByProvider returns a provider's charges recorded in [from, to),
// oldest first; charges of the same instant come in the order they were
// recorded.
func (s *Store) ChargesByProvider(ctx context.Context, provider string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, bucketChargeProv, provider, from, to)
}

// ChargesByPayee returns the charges recorded in [from, to) that give
// payee a share, oldest first; charges of the same instant come in the
// order they were recorded.
func (s *Store) ChargesByPayee(ctx context.Context, payee string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, bucketChargePayee, payee, from, to)
}

// ChargesByPayer returns a payer's charges recorded in [from, to), oldest
// first; charges of the same instant come in the order they were recorded.
func (s *Store) ChargesByPayer(ctx context.Context, payer string, from, to time.Time) ([]hub.Charge, error) {
	return s.chargesBy(ctx, bucketChargePayer, payer, from, to)
}

// ChargesPaid returns every charge whose paid time is in [from, to), oldest
// paid first; charges paid at the same instant come in the order they were
// recorded.
func (s *Store) ChargesPaid(ctx context.Context, from, to time.Time) ([]hub.Charge, error) {
	if !from.Before(to) {
		return nil, ctx.Err()
	}
	return s.chargesIn(ctx, bucketChargePaid, timeKey(from), timeKey(to))
}

func (s *Store) chargesBy(ctx context.Context, bucket []byte, party string, from, to time.Time) ([]hub.Charge, error) {
	if !from.Before(to) {
		return nil, ctx.Err()
	}
	return s.chargesIn(ctx, bucket, partyKey(party, from), partyKey(party, to))
}

// chargesIn returns the charges of the index keys in [start, end) of
// bucket, each key a prefix as long as start followed by a log position.
func (s *Store) chargesIn(ctx context.Context, bucket, start, end []byte) ([]hub.Charge, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.Charge
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucket)
		if idx == nil {
			return nil
		}
		log := tx.Bucket(bucketChargeLog)
		c := idx.Cursor()
		// Keys of this party in the window sort between start and end:
		// the zero byte after the name keeps "charger" from reaching
		// into "charger-7".
		for k, _ := c.Seek(start); k != nil && bytes.Compare(k, end) < 0; k, _ = c.Next() {
			if len(k) != len(start)+8 {
				return fmt.Errorf("boltstore: charge index key %x has the wrong length", k)
			}
			pos := k[len(start):]
			ch, err := record.DecodeCharge(log.Get(pos))
			if err != nil {
				return fmt.Errorf("charge at %x: %w", pos, err)
			}
			out = append(out, ch)
		}
		return nil
	})
	return out, err
}

// owedIndex returns the index of owed charges, building it from the log
// when the store was written before the index existed (a one-off scan).
func owedIndex(tx *bolt.Tx) (*bolt.Bucket, error) {
	if b := tx.Bucket(bucketChargeOwed); b != nil {
		return b, nil
	}
	b, err := tx.CreateBucket(bucketChargeOwed)
	if err != nil {
		return nil, err
	}
	log := tx.Bucket(bucketChargeLog)
	if log == nil {
		return b, nil
	}
	err = log.ForEach(func(pos, v []byte) error {
		if len(v) > record.ChargeRecordStatus && v[record.ChargeRecordStatus] == 'o' {
			return b.Put(bytes.Clone(pos), []byte{})
		}
		return nil
	})
	return b, err
}

// OwedCharges returns every charge now owed, oldest recorded first: the
// owed index holds log positions, which grow with every commit.
func (s *Store) OwedCharges(ctx context.Context) ([]hub.Charge, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var built bool
	err := s.db.View(func(tx *bolt.Tx) error {
		built = tx.Bucket(bucketChargeOwed) != nil || tx.Bucket(bucketChargeLog) == nil
		return nil
	})
	if err == nil && !built {
		err = s.commit.do(func(tx *bolt.Tx) error {
			_, err := owedIndex(tx)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: owed charges: %w", err)
	}
	var out []hub.Charge
	err = s.db.View(func(tx *bolt.Tx) error {
		idx, log := tx.Bucket(bucketChargeOwed), tx.Bucket(bucketChargeLog)
		if idx == nil || log == nil {
			return nil
		}
		return idx.ForEach(func(pos, _ []byte) error {
			c, err := record.DecodeCharge(log.Get(pos))
			if err != nil {
				return fmt.Errorf("charge at %x: %w", pos, err)
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: owed charges: %w", err)
	}
	return out, nil
}
