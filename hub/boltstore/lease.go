package boltstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
)

// The settlement lease. A bbolt file is open in one process at a time, so
// that process's hub is trivially the leader; the lease is still stored,
// with the same rules as redisstore's, so the settler and the fencing
// rule (hub/storetest) are the same on both stores: bucket settlelease,
// key "lease" -> Leader JSON, key "token" -> big-endian count of
// acquisitions. Expiry is by this process's clock, and a lease stored by
// an earlier open of the file (a process that stopped or died, which alone
// could hold the file) is not live: a restarted hub leads at once.
var (
	bucketLease   = []byte("settlelease")
	keyLease      = []byte("lease")
	keyLeaseToken = []byte("token")
)

var _ hub.LeaderLease = (*Store)(nil)

// storedLease is the lease as stored, with the session of the open that
// wrote it.
type storedLease struct {
	hub.Leader
	Session string `json:"session"`
}

func newSession() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// liveLease returns the stored lease if it has not expired and was written
// by this open of the file.
func (s *Store) liveLease(tx *bolt.Tx, now time.Time) (hub.Leader, bool, error) {
	b := tx.Bucket(bucketLease)
	if b == nil {
		return hub.Leader{}, false, nil
	}
	v := b.Get(keyLease)
	if v == nil {
		return hub.Leader{}, false, nil
	}
	var l storedLease
	if err := decodeJSON("settlement lease", keyLease, v, &l); err != nil {
		return hub.Leader{}, false, err
	}
	return l.Leader, l.Session == s.session && now.Before(l.Expires), nil
}

// checkFence refuses, inside a settlement write's transaction, a write
// whose context carries a fencing token that is not the live lease's.
func (s *Store) checkFence(ctx context.Context, tx *bolt.Tx) error {
	tok, ok := hub.Fence(ctx)
	if !ok {
		return nil
	}
	l, live, err := s.liveLease(tx, time.Now())
	if err != nil {
		return err
	}
	if !live || l.Token != tok {
		return fmt.Errorf("%w: token %d; the live lease is %s", hub.ErrFenced, tok, describeLease(l, live))
	}
	return nil
}

func describeLease(l hub.Leader, live bool) string {
	if !live {
		return "none"
	}
	return fmt.Sprintf("%s's token %d", l.Instance, l.Token)
}

func (s *Store) putLease(tx *bolt.Tx, l hub.Leader) error {
	b, err := tx.CreateBucketIfNotExists(bucketLease)
	if err != nil {
		return err
	}
	doc, err := json.Marshal(storedLease{Leader: l, Session: s.session})
	if err != nil {
		return fmt.Errorf("encode settlement lease: %w", err)
	}
	return b.Put(keyLease, doc)
}

func checkLease(instance string, ttl time.Duration) error {
	if instance == "" || ttl < time.Millisecond {
		return fmt.Errorf("boltstore: %w: lease of %q for %s (an instance and at least 1ms)", hub.ErrInvalid, instance, ttl)
	}
	return nil
}

// Acquire takes the settlement lease; see hub.LeaderLease.
func (s *Store) Acquire(ctx context.Context, instance string, ttl time.Duration) (hub.Leader, error) {
	if err := ctx.Err(); err != nil {
		return hub.Leader{}, err
	}
	if err := checkLease(instance, ttl); err != nil {
		return hub.Leader{}, err
	}
	var got hub.Leader
	err := s.commit.do(func(tx *bolt.Tx) error {
		now := time.Now()
		cur, live, err := s.liveLease(tx, now)
		if err != nil {
			return err
		}
		if live && cur.Instance != instance {
			got = cur
			return fmt.Errorf("%w: %s leads with token %d", hub.ErrNotLeader, cur.Instance, cur.Token)
		}
		b, err := tx.CreateBucketIfNotExists(bucketLease)
		if err != nil {
			return err
		}
		var n uint64
		if v := b.Get(keyLeaseToken); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		n++
		if err := b.Put(keyLeaseToken, seqBytes(n)); err != nil {
			return err
		}
		got = hub.Leader{Instance: instance, Token: n, Expires: now.Add(ttl)}
		return s.putLease(tx, got)
	})
	if err != nil {
		return got, fmt.Errorf("boltstore: acquire settlement lease: %w", err)
	}
	return got, nil
}

// Renew extends l by ttl if it still holds the lease.
func (s *Store) Renew(ctx context.Context, l hub.Leader, ttl time.Duration) (hub.Leader, error) {
	if err := ctx.Err(); err != nil {
		return hub.Leader{}, err
	}
	if err := checkLease(l.Instance, ttl); err != nil {
		return hub.Leader{}, err
	}
	err := s.commit.do(func(tx *bolt.Tx) error {
		now := time.Now()
		cur, live, err := s.liveLease(tx, now)
		if err != nil {
			return err
		}
		if !live || cur.Instance != l.Instance || cur.Token != l.Token {
			return fmt.Errorf("%w: lease of %s token %d; the live lease is %s", hub.ErrNotLeader, l.Instance, l.Token, describeLease(cur, live))
		}
		l.Expires = now.Add(ttl)
		return s.putLease(tx, l)
	})
	if err != nil {
		return hub.Leader{}, fmt.Errorf("boltstore: renew settlement lease: %w", err)
	}
	return l, nil
}

// Release deletes the lease if l still holds it.
func (s *Store) Release(ctx context.Context, l hub.Leader) error {
	err := s.commit.do(func(tx *bolt.Tx) error {
		cur, live, err := s.liveLease(tx, time.Now())
		if err != nil || !live || cur.Instance != l.Instance || cur.Token != l.Token {
			return err
		}
		return tx.Bucket(bucketLease).Delete(keyLease)
	})
	if err != nil {
		return fmt.Errorf("boltstore: release settlement lease: %w", err)
	}
	return nil
}

// Leader returns the live settlement lease, or hub.ErrNotFound.
func (s *Store) Leader(ctx context.Context) (hub.Leader, error) {
	if err := ctx.Err(); err != nil {
		return hub.Leader{}, err
	}
	var l hub.Leader
	var live bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		l, live, err = s.liveLease(tx, time.Now())
		return err
	})
	if err != nil {
		return hub.Leader{}, err
	}
	if !live {
		return hub.Leader{}, fmt.Errorf("%w: no settlement leader", hub.ErrNotFound)
	}
	return l, nil
}
