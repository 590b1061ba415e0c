package boltstore

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
)

// CDR buckets, created by the first CDR stored; readers treat a missing
// bucket as empty.
var (
	bucketCDRs     = []byte("cdrs")   // id -> CDRRecord JSON
	bucketCDROrder = []byte("cdrord") // sortable created time || id -> provider
)

var _ hub.CDRStore = (*Store)(nil)

// PutCDR stores r under its id; an id already there is left as it is.
func (s *Store) PutCDR(ctx context.Context, r hub.CDRRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("boltstore: encode CDR %s: %w", r.ID, err)
	}
	id := []byte(r.ID)
	order := append(timeKey(r.Created), id...)
	err = s.commit.do(func(tx *bolt.Tx) error {
		docs, err := tx.CreateBucketIfNotExists(bucketCDRs)
		if err != nil {
			return err
		}
		if docs.Get(id) != nil {
			return nil
		}
		idx, err := tx.CreateBucketIfNotExists(bucketCDROrder)
		if err != nil {
			return err
		}
		if err := idx.Put(order, []byte(r.Provider)); err != nil {
			return err
		}
		return docs.Put(id, doc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: put CDR %s: %w", r.ID, err)
	}
	return nil
}

// CDR returns the CDR with id, or hub.ErrNotFound.
func (s *Store) CDR(ctx context.Context, id string) (hub.CDRRecord, error) {
	if err := ctx.Err(); err != nil {
		return hub.CDRRecord{}, err
	}
	var r hub.CDRRecord
	err := s.db.View(func(tx *bolt.Tx) error { return readCDR(tx.Bucket(bucketCDRs), []byte(id), &r) })
	return r, err
}

func readCDR(docs *bolt.Bucket, id []byte, r *hub.CDRRecord) error {
	var doc []byte
	if docs != nil {
		doc = docs.Get(id)
	}
	if doc == nil {
		return fmt.Errorf("%w: CDR %q", hub.ErrNotFound, id)
	}
	if err := json.Unmarshal(doc, r); err != nil {
		return fmt.Errorf("boltstore: decode CDR %q: %w", id, err)
	}
	return nil
}

// CDRs lists the CDRs of provider ("" for all), newest first; CDRs of the
// same instant come in descending id order.
func (s *Store) CDRs(ctx context.Context, provider string) ([]hub.CDRRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.CDRRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketCDROrder)
		if idx == nil {
			return nil
		}
		docs := tx.Bucket(bucketCDRs)
		c := idx.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if provider != "" && string(v) != provider {
				continue
			}
			var r hub.CDRRecord
			if err := readCDR(docs, k[8:], &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
