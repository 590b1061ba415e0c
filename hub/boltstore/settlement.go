package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// Settlement buckets. Like the contract buckets they are created by the
// first write that needs them, so a database written before settlement
// existed opens unchanged; readers treat a missing bucket as empty.
//
// Epochs are keyed by number, so the last key is the open epoch (a cut
// writes the closed epoch and its successor in one transaction). Runs are
// keyed by epoch then attempt, so the last key under an epoch is its latest
// attempt and a reverse scan meets every epoch's latest attempt first.
var (
	bucketEpochs = []byte("epochs") // big-endian number -> Epoch JSON
	bucketRuns   = []byte("runs")   // big-endian epoch || big-endian attempt -> Run JSON
)

var _ hub.SettlementStore = (*Store)(nil)

func runKey(epoch uint64, attempt uint32) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k, epoch)
	binary.BigEndian.PutUint32(k[8:], attempt)
	return k
}

// OpenEpoch returns the open epoch, or hub.ErrNotFound before the first
// one was stored.
func (s *Store) OpenEpoch(ctx context.Context) (settlement.Epoch, error) {
	if err := ctx.Err(); err != nil {
		return settlement.Epoch{}, err
	}
	var e settlement.Epoch
	err := s.db.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if e, ok, err = openEpochIn(tx); err == nil && !ok {
			err = fmt.Errorf("%w: no epoch stored", hub.ErrNotFound)
		}
		return err
	})
	return e, err
}

// openEpochIn returns the open epoch as tx sees it (the last key of the
// epochs bucket), and false when none is stored.
func openEpochIn(tx *bolt.Tx) (settlement.Epoch, bool, error) {
	var e settlement.Epoch
	b := tx.Bucket(bucketEpochs)
	if b == nil {
		return e, false, nil
	}
	k, v := b.Cursor().Last()
	if k == nil {
		return e, false, nil
	}
	return e, true, decodeJSON("epoch", k, v, &e)
}

// CutEpoch atomically stores closed and opens successor; see
// hub.SettlementStore. It returns an error wrapping hub.ErrInvalid when
// successor does not follow closed or closed has no End.
func (s *Store) CutEpoch(ctx context.Context, closed, successor settlement.Epoch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := hub.ValidateCut(closed, successor); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	closedDoc, err := json.Marshal(closed)
	if err != nil {
		return fmt.Errorf("boltstore: encode epoch %d: %w", closed.Number, err)
	}
	nextDoc, err := json.Marshal(successor)
	if err != nil {
		return fmt.Errorf("boltstore: encode epoch %d: %w", successor.Number, err)
	}
	err = s.commit.do(func(tx *bolt.Tx) error {
		if err := s.checkFence(ctx, tx); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketEpochs)
		if err != nil {
			return err
		}
		// The open epoch is the last key; with none stored only a cut of
		// "epoch 0" (the first open) is accepted.
		var open uint64
		if k, v := b.Cursor().Last(); k != nil {
			var cur settlement.Epoch
			if err := decodeJSON("epoch", k, v, &cur); err != nil {
				return err
			}
			if !cur.Open() {
				return fmt.Errorf("boltstore: stored epoch %d is the last and is not open", cur.Number)
			}
			open = cur.Number
		}
		if open != closed.Number {
			return fmt.Errorf("%w: open epoch is %d, cut names %d", hub.ErrEpochConflict, open, closed.Number)
		}
		if closed.Number > 1 {
			prev, err := latestRun(tx.Bucket(bucketRuns), closed.Number-1)
			if err != nil {
				return fmt.Errorf("%w: epoch %d: %w", hub.ErrRunOpen, closed.Number-1, err)
			}
			if !prev.State.Settled() {
				return fmt.Errorf("%w: epoch %d is %s", hub.ErrRunOpen, closed.Number-1, prev.State)
			}
		}
		if closed.Number > 0 {
			if err := b.Put(seqBytes(closed.Number), closedDoc); err != nil {
				return err
			}
		}
		return b.Put(seqBytes(successor.Number), nextDoc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: cut epoch %d: %w", closed.Number, err)
	}
	return nil
}

// Epochs returns up to limit epochs, newest first. A limit below one
// returns none.
func (s *Store) Epochs(ctx context.Context, limit int) ([]settlement.Epoch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []settlement.Epoch
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEpochs)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var e settlement.Epoch
			if err := decodeJSON("epoch", k, v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// PutRun stores r under (r.Epoch.Number, r.Attempt), replacing it. It
// returns an error wrapping hub.ErrInvalid when either is zero.
func (s *Store) PutRun(ctx context.Context, r settlement.Run) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := hub.ValidateRun(r); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("boltstore: encode run %d/%d: %w", r.Epoch.Number, r.Attempt, err)
	}
	key := runKey(r.Epoch.Number, r.Attempt)
	err = s.commit.do(func(tx *bolt.Tx) error {
		if err := s.checkFence(ctx, tx); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketRuns)
		if err != nil {
			return err
		}
		return b.Put(key, doc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: put run %d/%d: %w", r.Epoch.Number, r.Attempt, err)
	}
	return nil
}

// Run returns the latest attempt for an epoch, or hub.ErrNotFound.
func (s *Store) Run(ctx context.Context, epoch uint64) (settlement.Run, error) {
	if err := ctx.Err(); err != nil {
		return settlement.Run{}, err
	}
	var r settlement.Run
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = latestRun(tx.Bucket(bucketRuns), epoch)
		return err
	})
	return r, err
}

// latestRun reads the latest attempt of an epoch's run from the runs
// bucket b (nil when none was created yet), or hub.ErrNotFound.
func latestRun(b *bolt.Bucket, epoch uint64) (settlement.Run, error) {
	var r settlement.Run
	if b == nil {
		return r, fmt.Errorf("%w: run of epoch %d", hub.ErrNotFound, epoch)
	}
	// The latest attempt is the last key with the epoch's prefix.
	c := b.Cursor()
	end := runKey(epoch, math.MaxUint32)
	k, v := c.Seek(end)
	switch {
	case k == nil:
		k, v = c.Last()
	case !bytes.Equal(k, end):
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, seqBytes(epoch)) {
		return r, fmt.Errorf("%w: run of epoch %d", hub.ErrNotFound, epoch)
	}
	return r, decodeJSON("run", k, v, &r)
}

// Runs returns up to limit runs, the latest attempt of each epoch, newest
// epoch first. A limit below one returns none.
func (s *Store) Runs(ctx context.Context, limit int) ([]settlement.Run, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []settlement.Run
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var last []byte // epoch prefix of the run appended last
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			if last != nil && bytes.Equal(k[:8], last) {
				continue // an earlier attempt of an epoch already listed
			}
			var r settlement.Run
			if err := decodeJSON("run", k, v, &r); err != nil {
				return err
			}
			out = append(out, r)
			last = bytes.Clone(k[:8])
		}
		return nil
	})
	return out, err
}

// rollover is a CommitRollover with everything encoded before the
// transaction.
type rollover struct {
	runKey, runDoc []byte
	old            []oldChannel
	next           []newChannel
}

type oldChannel struct {
	op      wire.OutPoint
	key     []byte
	closeTx chainhash.Hash
	read    hub.ChannelRecord // as the caller read it
}

type newChannel struct {
	pid, fund, doc, state []byte
	device                string
	name                  string
}

// CommitRollover atomically stores r and moves the settled channels to
// their next outputs, in one transaction; see hub.SettlementStore. The
// CloseTx of each old channel is the transaction of r.Txs that spends it;
// an old channel that no transaction spends, a repeated outpoint, or a next
// record without a pending id, device or funding is refused with
// hub.ErrInvalid. A next record whose pending id or funding is already
// stored is refused with hub.ErrAlreadyExists. Nothing is written when
// anything is refused.
func (s *Store) CommitRollover(ctx context.Context, r settlement.Run, old []hub.ChannelRecord, next []hub.ChannelRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ro, err := prepareRollover(r, old, next)
	if err != nil {
		return fmt.Errorf("boltstore: commit rollover of epoch %d: %w", r.Epoch.Number, err)
	}
	// An error from the function rolls the whole transaction back (the
	// committer reruns it alone to report the error), so the checks below
	// may interleave with writes without a refusal leaving half a rollover.
	err = s.commit.do(func(tx *bolt.Tx) error {
		if err := s.checkFence(ctx, tx); err != nil {
			return err
		}
		funding := tx.Bucket(bucketFunding)
		chans := tx.Bucket(bucketChannels)
		states := tx.Bucket(bucketChanState)
		devs := tx.Bucket(bucketDevChans)
		for _, o := range ro.old {
			pid := funding.Get(o.key)
			if pid == nil {
				return fmt.Errorf("%w: channel %s", hub.ErrNotFound, o.op)
			}
			c, err := readChannel(tx, pid)
			if err != nil {
				return err
			}
			if c.Status == hub.ChannelClosed {
				return fmt.Errorf("%w: channel %s is already closed by %v", hub.ErrSeqConflict, o.op, c.CloseTx)
			}
			if c.Seq != o.read.Seq || c.Paid != o.read.Paid || c.Owed != o.read.Owed {
				return fmt.Errorf("%w: channel %s moved since it was read", hub.ErrSeqConflict, o.op)
			}
			c.Status = hub.ChannelClosed
			closeTx := o.closeTx
			c.CloseTx = &closeTx
			doc, err := json.Marshal(staticPart(c))
			if err != nil {
				return fmt.Errorf("encode channel %x: %w", pid, err)
			}
			if err := chans.Put(pid, doc); err != nil {
				return err
			}
			// The state (seq, paid, signature) stays: it is what the
			// batch claimed. Only the update time moves on.
			if r.Updated.After(c.UpdatedAt) {
				st, err := decodeState(states.Get(pid))
				if err != nil {
					return err
				}
				st.updated = r.Updated
				if err := states.Put(pid, encodeState(st)); err != nil {
					return err
				}
			}
		}
		for _, n := range ro.next {
			if chans.Get(n.pid) != nil {
				return fmt.Errorf("%w: channel %s", hub.ErrAlreadyExists, n.name)
			}
			if owner := funding.Get(n.fund); owner != nil {
				return fmt.Errorf("%w: funding of channel %s is channel %x", hub.ErrAlreadyExists, n.name, owner)
			}
			order, err := devs.NextSequence()
			if err != nil {
				return err
			}
			if err := devs.Put(devKey(n.device, order), n.pid); err != nil {
				return err
			}
			if err := funding.Put(n.fund, n.pid); err != nil {
				return err
			}
			if err := states.Put(n.pid, n.state); err != nil {
				return err
			}
			if err := chans.Put(n.pid, n.doc); err != nil {
				return err
			}
		}
		runs, err := tx.CreateBucketIfNotExists(bucketRuns)
		if err != nil {
			return err
		}
		return runs.Put(ro.runKey, ro.runDoc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: commit rollover of epoch %d: %w", r.Epoch.Number, err)
	}
	return nil
}

// prepareRollover checks and encodes a rollover outside the transaction.
func prepareRollover(r settlement.Run, old []hub.ChannelRecord, next []hub.ChannelRecord) (rollover, error) {
	spender, err := hub.ValidateRollover(r, old, next)
	if err != nil {
		return rollover{}, err
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return rollover{}, fmt.Errorf("encode run: %w", err)
	}
	ro := rollover{runKey: runKey(r.Epoch.Number, r.Attempt), runDoc: doc}
	for _, c := range old {
		op := c.Funding
		ro.old = append(ro.old, oldChannel{op: op, key: opKey(op), closeTx: spender[op], read: c})
	}
	for _, c := range next {
		name := fmt.Sprintf("%x", c.PendingID)
		doc, err := json.Marshal(staticPart(c))
		if err != nil {
			return rollover{}, fmt.Errorf("encode channel %s: %w", name, err)
		}
		// A new channel starts with no payments; only the unsigned
		// balance carries over from the channel it replaces.
		state := encodeState(chanState{owed: c.Owed, updated: c.UpdatedAt})
		ro.next = append(ro.next, newChannel{
			pid: bytes.Clone(c.PendingID[:]), fund: opKey(c.Funding), doc: doc, state: state,
			device: c.DeviceID, name: name,
		})
	}
	return ro, nil
}

func decodeJSON(what string, k, v []byte, into any) error {
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("boltstore: decode %s %x: %w", what, k, err)
	}
	return nil
}
