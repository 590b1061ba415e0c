// Package boltstore is the embedded hub.Store and hub.ChannelStore: one
// bbolt file in the hub's data directory, as lnd keeps its channel state. It
// is the default for a single hubd; several hubd instances share state
// through redisstore instead.
//
// Every acknowledged write has been fsynced: bbolt syncs the file on each
// commit, and every write goes through one committer goroutine that puts
// all writes queued so far into one commit (group commit, see committer),
// so concurrent writers share an fsync instead of paying one each, and a
// lone writer waits for no timer.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
)

// ErrLocked is returned by New when another process has the database open.
// bbolt holds an exclusive file lock for as long as a DB is open.
var ErrLocked = errors.New("boltstore: database is locked by another process")

// FileName is the name of the database file inside Config.Path.
const FileName = "hub.db"

// DefaultOpenTimeout is how long New waits for the file lock before it
// gives up with ErrLocked.
const DefaultOpenTimeout = 2 * time.Second

// Bucket names. The layout is part of the on-disk format.
var (
	bucketDevices  = []byte("devices")  // id -> Device JSON
	bucketKeyIndex = []byte("keyindex") // 33-byte key -> device id
	bucketAudit    = []byte("audit")    // big-endian seq -> AuditEntry JSON
	bucketTokens   = []byte("tokens")   // spent token id -> empty
	bucketMeta     = []byte("meta")     // "head" -> big-endian seq || hash

	keyHead = []byte("head")
)

// Config configures a Store.
type Config struct {
	// Path is the directory that holds the database file; it is created
	// (mode 0700) if missing.
	Path string
	// OpenTimeout bounds the wait for the file lock held by another
	// process; zero means DefaultOpenTimeout.
	OpenTimeout time.Duration
	// MinFree is the free space under Path below which Healthy reports
	// the store failing before a write does. Zero means DefaultMinFree.
	MinFree uint64
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

// DefaultMinFree is Config.MinFree's default. bbolt grows its file in
// steps (doubling up to 1 GiB), so a disk is already full for it while
// some megabytes are still free.
const DefaultMinFree = 64 << 20

// ErrDiskFull means the file system under the store has less free space
// than Config.MinFree.
var ErrDiskFull = errors.New("boltstore: disk (nearly) full")

// Store is a hub.Store backed by a bbolt file.
type Store struct {
	db        *bolt.DB
	commit    *committer
	dir       string
	minFree   uint64
	log       *slog.Logger
	closeOnce sync.Once
	closeErr  error
	// session is drawn at each open: a settlement lease stored under
	// another session was held by a process that has since closed the
	// file (or died), so it is not live (see lease.go).
	session string
	// claims are the charge claims (chargeclaims.go), guarded by
	// claimsMu.
	claimsMu      sync.Mutex
	claims        map[string]claim
	claimsSweepAt int
}

var _ hub.Store = (*Store)(nil)

// New opens (creating if needed) the database under cfg.Path. It returns
// an error wrapping ErrLocked when another process has the file open.
func New(cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("boltstore: %w: Path is required", hub.ErrInvalid)
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = DefaultOpenTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Path, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: create %s: %w", cfg.Path, err)
	}
	file := filepath.Join(cfg.Path, FileName)
	// The freelist is not written on each commit but rebuilt from the pages
	// when the file is opened (as lnd runs bbolt): with many channels it
	// grows large, and rewriting it on every group commit of the payment
	// path costs more than the scan at start-up. The hashmap freelist keeps
	// page allocation cheap when it is large.
	db, err := bolt.Open(file, 0o600, &bolt.Options{
		Timeout:        cfg.OpenTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v; is another hubd running on this data directory?)", ErrLocked, file, cfg.OpenTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", file, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range append([][]byte{bucketDevices, bucketKeyIndex, bucketAudit, bucketTokens, bucketMeta}, channelBucketSet...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: create buckets in %s: %w", file, err)
	}
	log.Info("registry store opened", "path", file)
	if cfg.MinFree == 0 {
		cfg.MinFree = DefaultMinFree
	}
	return &Store{db: db, commit: newCommitter(db), dir: cfg.Path, minFree: cfg.MinFree, log: log, session: newSession()}, nil
}

// Healthy reports whether writes can be made durable: it fails when the
// last commit failed (until one succeeds again) and when the file system
// has less than Config.MinFree bytes free (ErrDiskFull). It never waits
// for the committer, so it answers at once even when a commit hangs.
func (s *Store) Healthy(ctx context.Context) error {
	if err := s.commit.failing(); err != nil {
		return fmt.Errorf("boltstore: last commit failed: %w", err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &fs); err != nil {
		return fmt.Errorf("boltstore: statfs %s: %w", s.dir, err)
	}
	if free := fs.Bavail * uint64(fs.Bsize); free < s.minFree {
		return fmt.Errorf("%w: %d bytes free under %s, want %d", ErrDiskFull, free, s.dir, s.minFree)
	}
	return nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.db.Path() }

// Close commits the writes already queued, stops the committer, closes the
// database and releases its file lock. Writes after Close fail. Calling it
// again returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.commit.close()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// preparedDevice is a device with everything Apply needs computed outside
// the transaction, so the function bbolt may run more than once does no
// encoding and mutates nothing but the transaction.
type preparedDevice struct {
	id   []byte
	doc  []byte
	keys [][]byte // current key first, then retired keys
}

// Apply writes ch atomically and durably. See hub.Store for the errors.
func (s *Store) Apply(ctx context.Context, ch hub.Change) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validate(ch); err != nil {
		return err
	}
	devs := make([]preparedDevice, 0, len(ch.Devices))
	for _, d := range ch.Devices {
		doc, err := record.EncodeDevice(d)
		if err != nil {
			return fmt.Errorf("boltstore: %w", err)
		}
		p := preparedDevice{id: []byte(d.ID), doc: doc}
		p.keys = append(p.keys, bytes.Clone(d.Key[:]))
		for _, k := range d.RetiredKeys {
			p.keys = append(p.keys, bytes.Clone(k[:]))
		}
		devs = append(devs, p)
	}
	entry, err := json.Marshal(ch.Audit)
	if err != nil {
		return fmt.Errorf("boltstore: encode audit entry: %w", err)
	}
	seqKey := seqBytes(ch.Audit.Seq)
	head := make([]byte, 8+len(ch.Audit.Hash))
	copy(head, seqKey)
	copy(head[8:], ch.Audit.Hash[:])

	// The committer reruns this function alone when another function in
	// the same group fails, so it must only read and write through tx.
	err = s.commit.do(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var headSeq uint64
		var headHash hub.Hash
		if h := meta.Get(keyHead); h != nil {
			headSeq = binary.BigEndian.Uint64(h[:8])
			copy(headHash[:], h[8:])
		}
		if ch.Audit.Seq != headSeq+1 || ch.Audit.Prev != headHash {
			return fmt.Errorf("%w: entry %d does not follow head %d", hub.ErrAuditConflict, ch.Audit.Seq, headSeq)
		}

		tokens := tx.Bucket(bucketTokens)
		if ch.SpendToken != "" {
			if tokens.Get([]byte(ch.SpendToken)) != nil {
				return fmt.Errorf("%w: %s", hub.ErrTokenUsed, ch.SpendToken)
			}
			if err := tokens.Put([]byte(ch.SpendToken), []byte{}); err != nil {
				return err
			}
		}

		// Index and device writes happen in order, so a key claimed by an
		// earlier device of the same change is seen by the later ones.
		idx := tx.Bucket(bucketKeyIndex)
		devices := tx.Bucket(bucketDevices)
		for _, d := range devs {
			for _, k := range d.keys {
				if owner := idx.Get(k); owner != nil && !bytes.Equal(owner, d.id) {
					return fmt.Errorf("%w: key %x is indexed to device %s, not %s", hub.ErrAlreadyExists, k, owner, d.id)
				}
			}
			if err := unindexDropped(idx, devices.Get(d.id), d); err != nil {
				return err
			}
			for _, k := range d.keys {
				if err := idx.Put(k, d.id); err != nil {
					return err
				}
			}
			if err := devices.Put(d.id, d.doc); err != nil {
				return err
			}
		}

		for _, id := range ch.Remove {
			if err := removeDevice(idx, devices, []byte(id)); err != nil {
				return err
			}
		}

		if err := tx.Bucket(bucketAudit).Put(seqKey, entry); err != nil {
			return err
		}
		return meta.Put(keyHead, head)
	})
	if err != nil {
		return fmt.Errorf("boltstore: apply audit %d: %w", ch.Audit.Seq, err)
	}
	return nil
}

// unindexDropped removes index entries for keys the stored version of the
// device had and the new version no longer lists, so a key the operator
// dropped stops resolving to this device.
func unindexDropped(idx *bolt.Bucket, oldDoc []byte, d preparedDevice) error {
	if oldDoc == nil {
		return nil
	}
	var old hub.Device
	if err := json.Unmarshal(oldDoc, &old); err != nil {
		return fmt.Errorf("boltstore: decode stored device %s: %w", d.id, err)
	}
	keep := func(k []byte) bool {
		for _, nk := range d.keys {
			if bytes.Equal(nk, k) {
				return true
			}
		}
		return false
	}
	for _, k := range append([]hub.PubKey{old.Key}, old.RetiredKeys...) {
		if keep(k[:]) || !bytes.Equal(idx.Get(k[:]), d.id) {
			continue
		}
		if err := idx.Delete(k[:]); err != nil {
			return err
		}
	}
	return nil
}

// removeDevice deletes a device record and every index entry naming it.
// The record may not decode, so the index is scanned rather than read from
// it: an operator's rare repair, not a hot path.
func removeDevice(idx, devices *bolt.Bucket, id []byte) error {
	var keys [][]byte
	err := idx.ForEach(func(k, v []byte) error {
		if bytes.Equal(v, id) {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := idx.Delete(k); err != nil {
			return err
		}
	}
	return devices.Delete(id)
}

// Device returns the device with the given id, or hub.ErrNotFound.
func (s *Store) Device(ctx context.Context, id string) (hub.Device, error) {
	if err := ctx.Err(); err != nil {
		return hub.Device{}, err
	}
	var d hub.Device
	err := s.db.View(func(tx *bolt.Tx) error {
		return getDevice(tx, []byte(id), &d)
	})
	return d, err
}

// DeviceByKey returns the device whose current or retired key is key, or
// hub.ErrNotFound.
func (s *Store) DeviceByKey(ctx context.Context, key hub.PubKey) (hub.Device, error) {
	if err := ctx.Err(); err != nil {
		return hub.Device{}, err
	}
	var d hub.Device
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketKeyIndex).Get(key[:])
		if id == nil {
			return fmt.Errorf("%w: key %s", hub.ErrNotFound, key)
		}
		return getDevice(tx, id, &d)
	})
	return d, err
}

func getDevice(tx *bolt.Tx, id []byte, d *hub.Device) error {
	doc := tx.Bucket(bucketDevices).Get(id)
	if doc == nil {
		return fmt.Errorf("%w: device %s", hub.ErrNotFound, id)
	}
	v, err := record.DecodeDevice(string(id), doc)
	if err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	*d = v
	return nil
}

// Devices returns every device ordered by id (bbolt keeps keys sorted by
// bytes, which is Go's string order).
func (s *Store) Devices(ctx context.Context) ([]hub.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.Device
	err := s.eachDevice(func(id []byte, d hub.Device, err error) {
		if err != nil {
			s.log.Error("device record left out of the list: remove it with hubctl device remove --force", "id", string(id), "err", err)
			return
		}
		out = append(out, d)
	})
	return out, err
}

// UnreadableDevices returns the device records that do not decode,
// ordered by id.
func (s *Store) UnreadableDevices(ctx context.Context) ([]hub.UnreadableRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.UnreadableRecord
	err := s.eachDevice(func(id []byte, _ hub.Device, err error) {
		if err != nil {
			out = append(out, hub.UnreadableRecord{ID: string(id), Error: err.Error()})
		}
	})
	return out, err
}

// eachDevice calls f with every device record, decoded or with why not.
func (s *Store) eachDevice(f func(id []byte, d hub.Device, err error)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			d, err := record.DecodeDevice(string(k), v)
			f(k, d, err)
			return nil
		})
	})
}

// AuditHead returns the newest audit entry, or the zero entry when the log
// is empty.
func (s *Store) AuditHead(ctx context.Context) (hub.AuditEntry, error) {
	if err := ctx.Err(); err != nil {
		return hub.AuditEntry{}, err
	}
	var e hub.AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		h := tx.Bucket(bucketMeta).Get(keyHead)
		if h == nil {
			return nil
		}
		doc := tx.Bucket(bucketAudit).Get(h[:8])
		if doc == nil {
			return fmt.Errorf("boltstore: head names audit entry %d, which is missing", binary.BigEndian.Uint64(h[:8]))
		}
		return decodeEntry(doc, &e)
	})
	return e, err
}

// AuditRange returns up to limit entries with Seq >= from, in order. A
// limit below one returns none.
func (s *Store) AuditRange(ctx context.Context, from uint64, limit int) ([]hub.AuditEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []hub.AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Seek(seqBytes(from)); k != nil && len(out) < limit; k, v = c.Next() {
			var e hub.AuditEntry
			if err := decodeEntry(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func decodeEntry(doc []byte, e *hub.AuditEntry) error {
	if err := json.Unmarshal(doc, e); err != nil {
		return fmt.Errorf("boltstore: decode audit entry: %w", err)
	}
	return nil
}

func seqBytes(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

// validate refuses changes no store should write (hub.Change.Validate).
func validate(ch hub.Change) error {
	if err := ch.Validate(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	return nil
}
