package webhook

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
)

// Entry is one delivery as an Outbox keeps it: one event for one
// endpoint.
type Entry struct {
	ID       string          `json:"id"`
	Endpoint string          `json:"endpoint"`
	Event    string          `json:"event"`
	Body     json.RawMessage `json:"body"`
	Attempts int             `json:"attempts"`
	NextAt   time.Time       `json:"next_at"`
	LastErr  string          `json:"last_error,omitempty"`
	// MaybeSent is set by Claim when an attempt may have reached the
	// receiver before (a claim that was never finished: the process
	// holding it died, or the outbox was reopened); the delivery is then
	// sent as a redelivery. It is not stored.
	MaybeSent bool `json:"-"`
}

// Claim is a lease on one due entry, taken by Outbox.Claim. Only its
// holder finishes the entry (Retry, Bury); when the lease runs out
// unfinished the entry is due again, for any claimer.
type Claim struct {
	Entry Entry
	Token string
}

// Outbox is the durable queue of deliveries. It gives each due entry to
// one claimer at a time, for a lease; an entry is finished by Done
// (delivered or dropped), Retry (due again later) or Bury (dead). An
// entry whose claimer never finishes it is due again when the lease runs
// out, so every delivery is made at least once, and in normal operation
// (no claimer dies, no POST outlives the lease) exactly once across every
// process sharing the outbox. BoltOutbox is the local one; hub/redisshared
// has the one several hubd share.
type Outbox interface {
	// Put adds entries; an id already pending is kept as is (one
	// delivery per event).
	Put(ctx context.Context, es []Entry) error
	// Claim leases the earliest entry due at now until now+lease. ok is
	// false when none is due; next is then the earliest due time of a
	// pending entry (zero when there is none, or when unknown).
	Claim(ctx context.Context, now time.Time, lease time.Duration) (c Claim, ok bool, next time.Time, err error)
	// Done removes a claimed entry (delivered, or its endpoint removed).
	Done(ctx context.Context, c Claim) error
	// Retry stores the claimed entry c.Entry (attempts, error, NextAt
	// updated) and makes it due at c.Entry.NextAt. It does nothing when
	// the lease was lost to another claimer.
	Retry(ctx context.Context, c Claim) error
	// Bury moves the claimed entry c.Entry to the dead set.
	Bury(ctx context.Context, c Claim) error
	// List returns the pending and the dead entries.
	List(ctx context.Context) (pending, dead []Entry, err error)
	// Redeliver moves dead entry id back to pending, attempts reset and
	// due at now. It returns an error wrapping hub.ErrNotFound when no
	// dead entry has that id.
	Redeliver(ctx context.Context, id string, now time.Time) (Entry, error)
	// Pending counts pending entries, claimed ones included.
	Pending(ctx context.Context) (int, error)
	Close() error
}

// newToken returns a random claim token.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var bucketDue = []byte("due")

// BoltOutbox is the Outbox in a local bbolt file, for one hubd (the
// embedded store). The file holds buckets outbox (id -> entry JSON) and
// dead (the same), as before the Outbox port existed, so an older file
// opens as is, plus due, an index of pending entries by due time (8-byte
// big-endian Unix nanoseconds then the id), rebuilt at open. Claims live
// in memory: the file has one process, and every entry pending at open
// is due at its stored time and marked MaybeSent.
type BoltOutbox struct {
	db *bolt.DB

	mu     sync.Mutex
	due    map[string]time.Time // id -> its key in bucket due
	claims map[string]string    // id -> token
	loaded map[string]bool      // pending when the file was opened
}

var _ Outbox = (*BoltOutbox)(nil)

// OpenBoltOutbox opens (creating) the outbox file at path.
func OpenBoltOutbox(path string) (*BoltOutbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("webhook: outbox %s: %w", path, err)
	}
	o := &BoltOutbox{db: db, due: map[string]time.Time{}, claims: map[string]string{}, loaded: map[string]bool{}}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketDead); err != nil {
			return err
		}
		if tx.Bucket(bucketDue) != nil {
			if err := tx.DeleteBucket(bucketDue); err != nil {
				return err
			}
		}
		idx, err := tx.CreateBucket(bucketDue)
		if err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketOutbox)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("delivery %s: %w", k, err)
			}
			o.loaded[e.ID] = true
			o.due[e.ID] = e.NextAt
			return idx.Put(dueKey(e.NextAt, e.ID), nil)
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("webhook: outbox %s: %w", path, err)
	}
	return o, nil
}

func dueKey(t time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(max(t.UnixNano(), 0)))
	return append(k, id...)
}

// reindex moves id's due key to t. The caller holds mu.
func (o *BoltOutbox) reindex(tx *bolt.Tx, id string, t time.Time) error {
	idx := tx.Bucket(bucketDue)
	if old, ok := o.due[id]; ok {
		if err := idx.Delete(dueKey(old, id)); err != nil {
			return err
		}
	}
	o.due[id] = t
	return idx.Put(dueKey(t, id), nil)
}

func (o *BoltOutbox) unindex(tx *bolt.Tx, id string) error {
	if old, ok := o.due[id]; ok {
		if err := tx.Bucket(bucketDue).Delete(dueKey(old, id)); err != nil {
			return err
		}
	}
	return nil
}

// Put implements Outbox.
func (o *BoltOutbox) Put(ctx context.Context, es []Entry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	added := map[string]time.Time{}
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for _, e := range es {
			if b.Get([]byte(e.ID)) != nil {
				continue // queued before: one delivery per event
			}
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(e.ID), v); err != nil {
				return err
			}
			if err := tx.Bucket(bucketDue).Put(dueKey(e.NextAt, e.ID), nil); err != nil {
				return err
			}
			added[e.ID] = e.NextAt
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("webhook: outbox: %w", err)
	}
	for id, t := range added {
		o.due[id] = t
	}
	return nil
}

// dueAt is the time a bucketDue key (8-byte unix ns || id) is due.
func dueAt(k []byte) time.Time { return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))) }

// firstDue returns when the earliest queued delivery is due; zero when
// none is queued.
func firstDue(tx *bolt.Tx) time.Time {
	k, _ := tx.Bucket(bucketDue).Cursor().First()
	if k == nil {
		return time.Time{}
	}
	return dueAt(k)
}

// Claim implements Outbox.
func (o *BoltOutbox) Claim(ctx context.Context, now time.Time, lease time.Duration) (Claim, bool, time.Time, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var c Claim
	var ok bool
	var next time.Time
	// Idle workers ask every PollInterval: look in a read transaction
	// first, since a write transaction commits (and fsyncs) even when it
	// changes nothing.
	if err := o.db.View(func(tx *bolt.Tx) error {
		next = firstDue(tx)
		return nil
	}); err != nil || next.IsZero() || next.After(now) {
		return c, false, next, err
	}
	next = time.Time{}
	err := o.db.Update(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketDue).Cursor().First()
		if k == nil {
			return nil
		}
		at := dueAt(k)
		if at.After(now) {
			next = at
			return nil
		}
		id := string(k[8:])
		v := tx.Bucket(bucketOutbox).Get([]byte(id))
		if v == nil { // cannot happen: the index follows the bucket
			delete(o.due, id)
			return tx.Bucket(bucketDue).Delete(k)
		}
		if err := json.Unmarshal(v, &c.Entry); err != nil {
			return fmt.Errorf("delivery %s: %w", id, err)
		}
		if err := o.reindex(tx, id, now.Add(lease)); err != nil {
			return err
		}
		_, stale := o.claims[id]
		c.Entry.MaybeSent = stale || o.loaded[id]
		c.Token = newToken()
		o.claims[id] = c.Token
		ok = true
		return nil
	})
	if err != nil {
		return Claim{}, false, time.Time{}, fmt.Errorf("webhook: outbox: %w", err)
	}
	return c, ok, next, nil
}

// Done implements Outbox.
func (o *BoltOutbox) Done(ctx context.Context, c Claim) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.removeLocked(c.Entry.ID, nil)
}

// removeLocked deletes delivery id from the outbox bucket and its due index
// (after first, if not nil, ran in the same transaction) and forgets its
// in-memory due time, claim and loaded mark. o.mu must be held.
func (o *BoltOutbox) removeLocked(id string, first func(tx *bolt.Tx) error) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		if first != nil {
			if err := first(tx); err != nil {
				return err
			}
		}
		if err := o.unindex(tx, id); err != nil {
			return err
		}
		return tx.Bucket(bucketOutbox).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("webhook: outbox: %w", err)
	}
	delete(o.due, id)
	delete(o.claims, id)
	delete(o.loaded, id)
	return nil
}

// Retry implements Outbox.
func (o *BoltOutbox) Retry(ctx context.Context, c Claim) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := c.Entry.ID
	if o.claims[id] != c.Token {
		return nil // the lease ran out and another claim took it
	}
	v, err := json.Marshal(c.Entry)
	if err != nil {
		return err
	}
	err = o.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketOutbox).Put([]byte(id), v); err != nil {
			return err
		}
		return o.reindex(tx, id, c.Entry.NextAt)
	})
	if err != nil {
		return fmt.Errorf("webhook: outbox: %w", err)
	}
	delete(o.claims, id)
	delete(o.loaded, id)
	return nil
}

// Bury implements Outbox.
func (o *BoltOutbox) Bury(ctx context.Context, c Claim) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := c.Entry.ID
	if o.claims[id] != c.Token {
		return nil
	}
	v, err := json.Marshal(c.Entry)
	if err != nil {
		return err
	}
	return o.removeLocked(id, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDead).Put([]byte(id), v)
	})
}

// List implements Outbox.
func (o *BoltOutbox) List(ctx context.Context) (pending, dead []Entry, err error) {
	err = o.db.View(func(tx *bolt.Tx) error {
		for _, b := range []struct {
			name []byte
			out  *[]Entry
		}{{bucketOutbox, &pending}, {bucketDead, &dead}} {
			err := tx.Bucket(b.name).ForEach(func(k, v []byte) error {
				var e Entry
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("delivery %s: %w", k, err)
				}
				*b.out = append(*b.out, e)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: outbox: %w", err)
	}
	return pending, dead, nil
}

// Redeliver implements Outbox.
func (o *BoltOutbox) Redeliver(ctx context.Context, id string, now time.Time) (Entry, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var e Entry
	err := o.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDead).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: no dead delivery %s", hub.ErrNotFound, id)
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("delivery %s: %w", id, err)
		}
		e.Attempts, e.LastErr, e.NextAt = 0, "", now
		nv, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketOutbox).Put([]byte(id), nv); err != nil {
			return err
		}
		if err := o.reindex(tx, id, now); err != nil {
			return err
		}
		return tx.Bucket(bucketDead).Delete([]byte(id))
	})
	if err != nil {
		return Entry{}, fmt.Errorf("webhook: redeliver: %w", err)
	}
	// It may have reached the receiver before: a redelivery.
	o.loaded[id] = true
	return e, nil
}

// Pending implements Outbox.
func (o *BoltOutbox) Pending(ctx context.Context) (int, error) {
	var n int
	err := o.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("webhook: outbox: %w", err)
	}
	return n, nil
}

// Close implements Outbox.
func (o *BoltOutbox) Close() error { return o.db.Close() }
