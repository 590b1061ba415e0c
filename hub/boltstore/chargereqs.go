package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
)

var (
	// provider || 0 || root -> expiry (unix ns, big-endian) || JSON event ids
	bucketChargeReqs = []byte("chgreqs")
	// expiry || provider || 0 || root -> nothing: the records by expiry,
	// so Put drops the expired ones without reading every record
	bucketChargeReqExp = []byte("chgreqexp")
)

func chargeReqKey(provider string, root hub.Hash) []byte {
	return append(append([]byte(provider), 0), root[:]...)
}

// chargeReq is one request record as written: its key, its expiry and
// its ids.
type chargeReq struct {
	key, exp, doc []byte
	now           uint64
}

// newChargeReq encodes the record of ids under (provider, root) for ttl
// by the wall clock.
func newChargeReq(provider string, root hub.Hash, ids []string, ttl time.Duration) (chargeReq, error) {
	if ttl <= 0 {
		return chargeReq{}, fmt.Errorf("boltstore: %w: a charge request needs a ttl", hub.ErrInvalid)
	}
	doc, err := json.Marshal(ids)
	if err != nil {
		return chargeReq{}, fmt.Errorf("boltstore: encode charge request: %w", err)
	}
	wall := time.Now()
	return chargeReq{
		key: chargeReqKey(provider, root),
		exp: binary.BigEndian.AppendUint64(nil, uint64(wall.Add(ttl).UnixNano())),
		doc: doc,
		now: uint64(wall.UnixNano()),
	}, nil
}

// put writes the record, replacing one under the same key, and drops the
// records that have expired.
func (r chargeReq) put(tx *bolt.Tx) error {
	reqs, err := tx.CreateBucketIfNotExists(bucketChargeReqs)
	if err != nil {
		return err
	}
	byExp, err := tx.CreateBucketIfNotExists(bucketChargeReqExp)
	if err != nil {
		return err
	}
	var gone [][]byte
	c := byExp.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) < r.now; k, _ = c.Next() {
		gone = append(gone, bytes.Clone(k))
	}
	for _, k := range gone {
		if v := reqs.Get(k[8:]); v != nil && string(v[:8]) == string(k[:8]) {
			if err := reqs.Delete(k[8:]); err != nil {
				return err
			}
		}
		if err := byExp.Delete(k); err != nil {
			return err
		}
	}
	if old := reqs.Get(r.key); old != nil {
		if err := byExp.Delete(append(old[:8:8], r.key...)); err != nil {
			return err
		}
	}
	if err := byExp.Put(append(r.exp[:8:8], r.key...), nil); err != nil {
		return err
	}
	return reqs.Put(r.key, append(bytes.Clone(r.exp), r.doc...))
}

// ChargeRequests reads the live records in one read transaction.
func (s *Store) ChargeRequests(ctx context.Context, provider string, roots []hub.Hash) ([][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([][]string, len(roots))
	err := s.db.View(func(tx *bolt.Tx) error {
		return readChargeReqs(tx, provider, roots, time.Now(), out, false)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TakeChargeRequests reads and deletes the live records in one
// transaction.
func (s *Store) TakeChargeRequests(ctx context.Context, provider string, roots []hub.Hash) ([][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([][]string, len(roots))
	now := time.Now()
	err := s.commit.do(func(tx *bolt.Tx) error {
		clear(out)
		return readChargeReqs(tx, provider, roots, now, out, true)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readChargeReqs decodes into out the records of roots live at now, and
// with take deletes every record of roots (live or expired).
func readChargeReqs(tx *bolt.Tx, provider string, roots []hub.Hash, now time.Time, out [][]string, take bool) error {
	reqs, byExp := tx.Bucket(bucketChargeReqs), tx.Bucket(bucketChargeReqExp)
	if reqs == nil {
		return nil
	}
	for i, r := range roots {
		key := chargeReqKey(provider, r)
		v := reqs.Get(key)
		if v == nil {
			continue
		}
		if binary.BigEndian.Uint64(v[:8]) > uint64(now.UnixNano()) {
			if err := json.Unmarshal(v[8:], &out[i]); err != nil {
				return fmt.Errorf("boltstore: decode charge request of %s: %w", provider, err)
			}
		}
		if !take {
			continue
		}
		if err := byExp.Delete(append(v[:8:8], key...)); err != nil {
			return err
		}
		if err := reqs.Delete(key); err != nil {
			return err
		}
	}
	return nil
}
