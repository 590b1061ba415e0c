package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
)

// Channel buckets. A channel is stored in two parts: the record as JSON
// (changed only by PutChannel) and its payment state in a fixed 96-byte
// binary value (changed by ApplyPayment and ApplyOwed). The split keeps the
// hot path free of JSON: ApplyPayment builds its state value before the
// transaction and inside it only compares a sequence number and copies
// bytes. Holds are split the same way.
var (
	bucketChannels   = []byte("channels")  // pending id -> ChannelRecord JSON (state fields zero)
	bucketChanState  = []byte("chanstate") // pending id -> state (see encodeState)
	bucketFunding    = []byte("funding")   // outpoint key -> pending id
	bucketDevChans   = []byte("devchans")  // device id || 0 || big-endian order -> pending id
	bucketHolds      = []byte("holds")     // hold id -> Hold JSON (Captured zero)
	bucketHoldState  = []byte("holdstate") // hold id -> hold state (see encodeHoldState)
	bucketChanHolds  = []byte("chanholds") // outpoint key || hold id -> empty
	bucketReceipts   = []byte("receipts")  // outpoint key || big-endian seq -> big-endian log position
	bucketReceiptLog = []byte("rcptlog")   // big-endian log position -> receipt
	channelBucketSet = [][]byte{bucketChannels, bucketChanState, bucketFunding, bucketDevChans, bucketHolds, bucketHoldState, bucketChanHolds, bucketReceipts, bucketReceiptLog}
)

var _ hub.ChannelStore = (*Store)(nil)

// opKeyLen is the length of an outpoint key: txid then big-endian index, so
// a channel's receipts sort by seq under its key.
const opKeyLen = chainHashLen + 4

const chainHashLen = 32

func opKey(op wire.OutPoint) []byte {
	k := make([]byte, opKeyLen, opKeyLen+8)
	copy(k, op.Hash[:])
	binary.BigEndian.PutUint32(k[chainHashLen:], op.Index)
	return k
}

func isZeroOutPoint(op wire.OutPoint) bool { return op == wire.OutPoint{} }

// State value layout: seq | paid | owed | updated (unix ns, MinInt64 for
// the zero time) | device signature.
const (
	stSeq     = 0
	stPaid    = 8
	stOwed    = 16
	stUpdated = 24
	stSig     = 32
	stateLen  = stSig + 64
)

type chanState struct {
	seq     uint64
	paid    msat.Amount
	owed    msat.Amount
	updated time.Time
	sig     [64]byte
}

func encodeState(s chanState) []byte {
	b := make([]byte, stateLen)
	binary.BigEndian.PutUint64(b[stSeq:], s.seq)
	binary.BigEndian.PutUint64(b[stPaid:], uint64(s.paid))
	binary.BigEndian.PutUint64(b[stOwed:], uint64(s.owed))
	binary.BigEndian.PutUint64(b[stUpdated:], uint64(record.UnixNano(s.updated)))
	copy(b[stSig:], s.sig[:])
	return b
}

func decodeState(b []byte) (chanState, error) {
	if len(b) != stateLen {
		return chanState{}, fmt.Errorf("boltstore: channel state is %d bytes, want %d", len(b), stateLen)
	}
	s := chanState{
		seq:     binary.BigEndian.Uint64(b[stSeq:]),
		paid:    msat.Amount(binary.BigEndian.Uint64(b[stPaid:])),
		owed:    msat.Amount(binary.BigEndian.Uint64(b[stOwed:])),
		updated: record.FromUnixNano(int64(binary.BigEndian.Uint64(b[stUpdated:]))),
	}
	copy(s.sig[:], b[stSig:])
	return s, nil
}

// Hold state layout: active flag | max | captured | channel outpoint key.
// Status and Max are repeated from the JSON so ApplyPayment can check a
// capture without decoding it.
const (
	hsActive   = 0
	hsMax      = 1
	hsCaptured = 9
	hsChannel  = 17
	holdStLen  = hsChannel + opKeyLen
)

func encodeHoldState(h hub.Hold, captured msat.Amount) []byte {
	b := make([]byte, holdStLen)
	if h.Status == hub.HoldActive {
		b[hsActive] = 1
	}
	binary.BigEndian.PutUint64(b[hsMax:], uint64(h.Max))
	binary.BigEndian.PutUint64(b[hsCaptured:], uint64(captured))
	copy(b[hsChannel:], opKey(h.Channel))
	return b
}

// capture returns the hold state with amount more captured, or an error
// wrapping hub.ErrHoldConflict. It only reads hs.
func capture(hs, op []byte, id []byte, amount msat.Amount) ([]byte, error) {
	if len(hs) != holdStLen {
		return nil, fmt.Errorf("boltstore: hold state is %d bytes, want %d", len(hs), holdStLen)
	}
	if hs[hsActive] != 1 {
		return nil, fmt.Errorf("%w: hold %x is not active", hub.ErrHoldConflict, id)
	}
	if !bytes.Equal(hs[hsChannel:], op) {
		return nil, fmt.Errorf("%w: hold %x belongs to another channel", hub.ErrHoldConflict, id)
	}
	maxAmt := binary.BigEndian.Uint64(hs[hsMax:])
	captured := binary.BigEndian.Uint64(hs[hsCaptured:])
	if captured > maxAmt || uint64(amount) > maxAmt-captured {
		return nil, fmt.Errorf("%w: hold %x has %d msat left, capture is %d", hub.ErrHoldConflict, id, maxAmt-min(captured, maxAmt), amount)
	}
	out := bytes.Clone(hs)
	binary.BigEndian.PutUint64(out[hsCaptured:], captured+uint64(amount))
	return out, nil
}

// devKey is the device index key of a channel: the device id, a zero byte
// (device ids hold none, see hub.ChannelRecord.Validate) and the order of creation.
func devKey(deviceID string, order uint64) []byte {
	k := make([]byte, 0, len(deviceID)+9)
	k = append(k, deviceID...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, order)
}

func devPrefix(deviceID string) []byte { return append([]byte(deviceID), 0) }

// PutChannel creates or replaces a channel record. On replace it keeps the
// stored Seq, Paid, DeviceSig and Owed (only ApplyPayment and ApplyOwed move
// them) and the later of the two UpdatedAt times. It returns an error
// wrapping hub.ErrAlreadyExists when c.Funding is indexed to another
// channel.
func (s *Store) PutChannel(ctx context.Context, c hub.ChannelRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	pid := bytes.Clone(c.PendingID[:])
	fresh := encodeState(chanState{seq: c.Seq, paid: c.Paid, owed: c.Owed, updated: c.UpdatedAt, sig: c.DeviceSig})
	doc, err := json.Marshal(staticPart(c))
	if err != nil {
		return fmt.Errorf("boltstore: encode channel %x: %w", pid, err)
	}
	var fund []byte
	if !isZeroOutPoint(c.Funding) {
		fund = opKey(c.Funding)
	}

	err = s.commit.do(func(tx *bolt.Tx) error {
		chans := tx.Bucket(bucketChannels)
		states := tx.Bucket(bucketChanState)
		funding := tx.Bucket(bucketFunding)
		devs := tx.Bucket(bucketDevChans)

		if fund != nil {
			if owner := funding.Get(fund); owner != nil && !bytes.Equal(owner, pid) {
				return fmt.Errorf("%w: funding %s is channel %x", hub.ErrAlreadyExists, c.Funding, owner)
			}
		}
		state := fresh
		if oldDoc := chans.Get(pid); oldDoc != nil {
			var old hub.ChannelRecord
			if err := record.DecodeChannel(oldDoc, &old); err != nil {
				return fmt.Errorf("boltstore: decode channel %x: %w", pid, err)
			}
			if !isZeroOutPoint(old.Funding) && old.Funding != c.Funding {
				if err := funding.Delete(opKey(old.Funding)); err != nil {
					return err
				}
			}
			if old.DeviceID != c.DeviceID {
				if err := moveDevice(devs, old.DeviceID, c.DeviceID, pid); err != nil {
					return err
				}
			}
			st, err := decodeState(states.Get(pid))
			if err != nil {
				return err
			}
			if c.UpdatedAt.After(st.updated) {
				st.updated = c.UpdatedAt
			}
			state = encodeState(st)
		} else {
			order, err := devs.NextSequence()
			if err != nil {
				return err
			}
			if err := devs.Put(devKey(c.DeviceID, order), pid); err != nil {
				return err
			}
		}
		if fund != nil {
			if err := funding.Put(fund, pid); err != nil {
				return err
			}
		}
		if err := states.Put(pid, state); err != nil {
			return err
		}
		return chans.Put(pid, doc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: put channel %x: %w", pid, err)
	}
	return nil
}

// moveDevice re-files a channel under another device, keeping its order.
func moveDevice(devs *bolt.Bucket, from, to string, pid []byte) error {
	c := devs.Cursor()
	p := devPrefix(from)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if !bytes.Equal(v, pid) {
			continue
		}
		order := binary.BigEndian.Uint64(k[len(p):])
		if err := devs.Delete(k); err != nil {
			return err
		}
		return devs.Put(devKey(to, order), pid)
	}
	return fmt.Errorf("boltstore: channel %x missing from the index of device %s", pid, from)
}

// staticPart is the record as stored in JSON: the state fields live in the
// state value, and zeroing them here leaves one source for each.
func staticPart(c hub.ChannelRecord) hub.ChannelRecord {
	c.Seq, c.Paid, c.Owed, c.DeviceSig, c.UpdatedAt = 0, 0, 0, [64]byte{}, time.Time{}
	return c
}

// readChannel decodes the channel stored under pid with its state.
func readChannel(tx *bolt.Tx, pid []byte) (hub.ChannelRecord, error) {
	var c hub.ChannelRecord
	doc := tx.Bucket(bucketChannels).Get(pid)
	if doc == nil {
		return c, fmt.Errorf("%w: channel %x", hub.ErrNotFound, pid)
	}
	if err := record.DecodeChannel(doc, &c); err != nil {
		return c, fmt.Errorf("boltstore: decode channel %x: %w", pid, err)
	}
	st, err := decodeState(tx.Bucket(bucketChanState).Get(pid))
	if err != nil {
		return c, fmt.Errorf("boltstore: channel %x: %w", pid, err)
	}
	c.Seq, c.Paid, c.Owed, c.UpdatedAt, c.DeviceSig = st.seq, st.paid, st.owed, st.updated, st.sig
	return c, nil
}

// ChannelByPending returns the channel offered under id, or
// hub.ErrNotFound.
func (s *Store) ChannelByPending(ctx context.Context, id [32]byte) (hub.ChannelRecord, error) {
	if err := ctx.Err(); err != nil {
		return hub.ChannelRecord{}, err
	}
	var c hub.ChannelRecord
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		c, err = readChannel(tx, id[:])
		return err
	})
	return c, err
}

// Channel returns the channel funded by op, or hub.ErrNotFound.
func (s *Store) Channel(ctx context.Context, op wire.OutPoint) (hub.ChannelRecord, error) {
	if err := ctx.Err(); err != nil {
		return hub.ChannelRecord{}, err
	}
	var c hub.ChannelRecord
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		pid := tx.Bucket(bucketFunding).Get(opKey(op))
		if pid == nil {
			return fmt.Errorf("%w: channel %s", hub.ErrNotFound, op)
		}
		c, err = readChannel(tx, pid)
		return err
	})
	return c, err
}

// ChannelsByDevice returns a device's channels in the order they were first
// stored.
func (s *Store) ChannelsByDevice(ctx context.Context, deviceID string) ([]hub.ChannelRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.ChannelRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDevChans).Cursor()
		p := devPrefix(deviceID)
		for k, pid := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, pid = c.Next() {
			ch, err := readChannel(tx, pid)
			if err != nil {
				return err
			}
			out = append(out, ch)
		}
		return nil
	})
	return out, err
}

// Channels returns every channel whose status is one of statuses, or every
// channel when none is given, ordered by pending id.
func (s *Store) Channels(ctx context.Context, statuses ...hub.ChannelStatus) ([]hub.ChannelRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.ChannelRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChannels).ForEach(func(pid, _ []byte) error {
			ch, err := readChannel(tx, pid)
			if err != nil {
				return err
			}
			if len(statuses) == 0 || slices.Contains(statuses, ch.Status) {
				out = append(out, ch)
			}
			return nil
		})
	})
	return out, err
}

// ApplyPayment writes u atomically and durably, lowering the stored Owed
// by u.Amount inside the transaction, and returns the new Owed; see
// hub.ChannelStore for the rule and the errors. Concurrent calls share one commit and one fsync (committer).
func (s *Store) ApplyPayment(ctx context.Context, u hub.PaymentUpdate) (msat.Amount, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := u.Validate(); err != nil {
		return 0, fmt.Errorf("boltstore: %w", err)
	}
	// Everything written is built here, outside the transaction: the
	// committer runs the group serially, so work inside it is not parallel.
	op := opKey(u.Channel)
	// Owed is filled in inside the transaction, from the stored value.
	state := encodeState(chanState{seq: u.Seq, paid: u.Paid, updated: u.Time, sig: u.DeviceSig})
	rkey := binary.BigEndian.AppendUint64(bytes.Clone(op), u.Seq)
	var holdID []byte
	if u.HoldID != nil {
		holdID = bytes.Clone(u.HoldID[:])
	}

	// A refusal (seq or hold conflict, unknown channel) is reported through
	// refused and the function returns nil, so it does not fail the whole
	// group: the committer would roll back every other caller's update and
	// rerun them. It may run the function more than once; it resets refused
	// and only reads and writes through tx, so every run is the same.
	var refused error
	var owed uint64
	var call uint64
	if u.Fence != nil {
		if err := u.Fence.Validate(); err != nil {
			return 0, fmt.Errorf("boltstore: %w", err)
		}
		call = payCalls.Add(1)
	}
	err := s.commit.do(func(tx *bolt.Tx) error {
		refused = nil
		pid := tx.Bucket(bucketFunding).Get(op)
		if pid == nil {
			refused = fmt.Errorf("%w: channel %s", hub.ErrNotFound, u.Channel)
			return nil
		}
		states := tx.Bucket(bucketChanState)
		cur := states.Get(pid)
		if len(cur) != stateLen {
			return fmt.Errorf("boltstore: channel %x state is %d bytes", pid, len(cur))
		}
		if stored := binary.BigEndian.Uint64(cur[stSeq:]); stored != u.Seq-1 {
			refused = fmt.Errorf("%w: channel %s is at seq %d, update is %d", hub.ErrSeqConflict, u.Channel, stored, u.Seq)
			return nil
		}
		var hs *bolt.Bucket
		var hold []byte
		if holdID != nil {
			hs = tx.Bucket(bucketHoldState)
			cur := hs.Get(holdID)
			if cur == nil {
				refused = fmt.Errorf("%w: hold %x", hub.ErrNotFound, holdID)
				return nil
			}
			next, err := capture(cur, op, holdID, u.Amount)
			if err != nil {
				refused = err
				return nil
			}
			hold = next
		}
		// The fence is checked and marked last: no refusal may follow
		// the mark, and nothing is written before it.
		if u.Fence != nil {
			if refused = s.payFenced(u.Fence, call); refused != nil {
				return nil
			}
		}
		if hold != nil {
			if err := hs.Put(holdID, hold); err != nil {
				return err
			}
		}
		owed = binary.BigEndian.Uint64(cur[stOwed:])
		owed -= min(owed, uint64(u.Amount))
		binary.BigEndian.PutUint64(state[stOwed:], owed)
		if err := states.Put(pid, state); err != nil {
			return err
		}
		return putReceipt(tx, rkey, u.Receipt)
	})
	if err != nil && u.Fence != nil {
		s.unpayFenced(u.Fence, call)
	}
	if err == nil {
		err = refused
	}
	if err != nil {
		return 0, fmt.Errorf("boltstore: apply payment %s seq %d: %w", u.Channel, u.Seq, err)
	}
	return msat.Amount(owed), nil
}

// putReceipt appends a receipt to the log and indexes it under rkey
// (outpoint key || seq). The receipts of one group commit are spread over
// many channels; keyed by channel they would dirty one growing page per
// update, which measured four times the CPU of the rest of ApplyPayment.
// Appended in commit order, they fill a few new pages per commit, and the
// index entries that stay scattered are 8-byte values.
func putReceipt(tx *bolt.Tx, rkey, receipt []byte) error {
	log := tx.Bucket(bucketReceiptLog)
	// Keys only ever grow, so pages can be filled completely.
	log.FillPercent = 1.0
	pos, err := log.NextSequence()
	if err != nil {
		return err
	}
	pk := seqBytes(pos)
	if err := log.Put(pk, receipt); err != nil {
		return err
	}
	return tx.Bucket(bucketReceipts).Put(rkey, pk)
}

// ApplyOwed raises a channel's Owed (and a hold's Captured) by amount; see
// hub.ChannelStore for the errors.
func (s *Store) ApplyOwed(ctx context.Context, op wire.OutPoint, holdID *[16]byte, amount, limit msat.Amount) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ok := opKey(op)
	var hid []byte
	if holdID != nil {
		hid = bytes.Clone(holdID[:])
	}
	var refused error
	err := s.commit.do(func(tx *bolt.Tx) error {
		refused = nil
		pid := tx.Bucket(bucketFunding).Get(ok)
		if pid == nil {
			refused = fmt.Errorf("%w: channel %s", hub.ErrNotFound, op)
			return nil
		}
		states := tx.Bucket(bucketChanState)
		cur := states.Get(pid)
		if len(cur) != stateLen {
			return fmt.Errorf("boltstore: channel %x state is %d bytes", pid, len(cur))
		}
		owed := binary.BigEndian.Uint64(cur[stOwed:])
		if owed > uint64(limit) || uint64(amount) > uint64(limit)-owed {
			refused = fmt.Errorf("%w: channel %s owes %d msat, %d more passes the limit %d", hub.ErrCreditLimit, op, owed, amount, limit)
			return nil
		}
		if hid != nil {
			hs := tx.Bucket(bucketHoldState)
			cur := hs.Get(hid)
			if cur == nil {
				refused = fmt.Errorf("%w: hold %x", hub.ErrNotFound, hid)
				return nil
			}
			next, err := capture(cur, ok, hid, amount)
			if err != nil {
				refused = err
				return nil
			}
			if err := hs.Put(hid, next); err != nil {
				return err
			}
		}
		next := bytes.Clone(cur)
		binary.BigEndian.PutUint64(next[stOwed:], owed+uint64(amount))
		return states.Put(pid, next)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return fmt.Errorf("boltstore: apply owed %s: %w", op, err)
	}
	return nil
}

// Receipts returns up to limit receipts of the channel funded by op with
// Seq >= from, in seq order. A limit below one returns none.
func (s *Store) Receipts(ctx context.Context, op wire.OutPoint, from uint64, limit int) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	p := opKey(op)
	var out [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketReceipts).Cursor()
		log := tx.Bucket(bucketReceiptLog)
		for k, pos := c.Seek(binary.BigEndian.AppendUint64(bytes.Clone(p), from)); k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, pos = c.Next() {
			r := log.Get(pos)
			if r == nil {
				return fmt.Errorf("boltstore: receipt %x is indexed at %x, which is missing", k, pos)
			}
			// Values are only valid inside the transaction.
			out = append(out, bytes.Clone(r))
		}
		return nil
	})
	return out, err
}

// PutHold creates or replaces a hold, keeping the stored Captured.
func (s *Store) PutHold(ctx context.Context, h hub.Hold) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	id := bytes.Clone(h.ID[:])
	static := h
	static.Captured = 0
	doc, err := json.Marshal(static)
	if err != nil {
		return fmt.Errorf("boltstore: encode hold %x: %w", id, err)
	}
	newIdx := append(opKey(h.Channel), id...)

	err = s.commit.do(func(tx *bolt.Tx) error {
		hs := tx.Bucket(bucketHoldState)
		idx := tx.Bucket(bucketChanHolds)
		captured := h.Captured
		if old := hs.Get(id); old != nil {
			if len(old) != holdStLen {
				return fmt.Errorf("boltstore: hold %x state is %d bytes", id, len(old))
			}
			captured = msat.Amount(binary.BigEndian.Uint64(old[hsCaptured:]))
			if oldIdx := append(bytes.Clone(old[hsChannel:]), id...); !bytes.Equal(oldIdx, newIdx) {
				if err := idx.Delete(oldIdx); err != nil {
					return err
				}
			}
		}
		if err := hs.Put(id, encodeHoldState(h, captured)); err != nil {
			return err
		}
		if err := idx.Put(newIdx, []byte{}); err != nil {
			return err
		}
		return tx.Bucket(bucketHolds).Put(id, doc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: put hold %x: %w", id, err)
	}
	return nil
}

func readHold(tx *bolt.Tx, id []byte) (hub.Hold, error) {
	var h hub.Hold
	doc := tx.Bucket(bucketHolds).Get(id)
	if doc == nil {
		return h, fmt.Errorf("%w: hold %x", hub.ErrNotFound, id)
	}
	if err := json.Unmarshal(doc, &h); err != nil {
		return h, fmt.Errorf("boltstore: decode hold %x: %w", id, err)
	}
	st := tx.Bucket(bucketHoldState).Get(id)
	if len(st) != holdStLen {
		return h, fmt.Errorf("boltstore: hold %x state is %d bytes", id, len(st))
	}
	h.Captured = msat.Amount(binary.BigEndian.Uint64(st[hsCaptured:]))
	return h, nil
}

// Hold returns a hold by id, or hub.ErrNotFound.
func (s *Store) Hold(ctx context.Context, id [16]byte) (hub.Hold, error) {
	if err := ctx.Err(); err != nil {
		return hub.Hold{}, err
	}
	var h hub.Hold
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		h, err = readHold(tx, id[:])
		return err
	})
	return h, err
}

// Holds returns the holds of the channel funded by op, ordered by id.
func (s *Store) Holds(ctx context.Context, op wire.OutPoint) ([]hub.Hold, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := opKey(op)
	var out []hub.Hold
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketChanHolds).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			h, err := readHold(tx, k[opKeyLen:])
			if err != nil {
				return err
			}
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// ActiveHolds returns every active hold, in one read transaction: the
// hold states are scanned for the active flag, and only active holds are
// decoded.
func (s *Store) ActiveHolds(ctx context.Context) ([]hub.Hold, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.Hold
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHoldState).ForEach(func(id, st []byte) error {
			if len(st) != holdStLen || st[hsActive] != 1 {
				return nil
			}
			h, err := readHold(tx, id)
			if err != nil {
				return err
			}
			if h.Status == hub.HoldActive {
				out = append(out, h)
			}
			return nil
		})
	})
	return out, err
}
