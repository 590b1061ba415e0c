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
	"github.com/m2mhub/m2mhub/hub/internal/record"
)

// Contract buckets. They are created by the first write that needs them,
// so a database written before metering existed opens unchanged; readers
// treat a missing bucket as empty.
var (
	bucketContracts     = []byte("contracts")   // hash -> ContractRecord JSON
	bucketContractOrder = []byte("contractord") // sortable published time || hash -> empty
)

var _ hub.ContractStore = (*Store)(nil)

// timeKey is t as 8 bytes that sort in time order: encodeTime's int64 with
// the sign bit flipped, so instants before 1970 and the zero time (which
// encodeTime maps to the smallest int64) sort first rather than last.
func timeKey(t time.Time) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(record.UnixNano(t))^1<<63)
	return b[:]
}

// PutContract stores c under its hash; storing a hash that is already
// there is a no-op, since a contract never changes once published.
func (s *Store) PutContract(ctx context.Context, c hub.ContractRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	doc, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("boltstore: encode contract %s: %w", c.Hash, err)
	}
	h := bytes.Clone(c.Hash[:])
	order := append(timeKey(c.Published), h...)
	err = s.commit.do(func(tx *bolt.Tx) error {
		docs, err := tx.CreateBucketIfNotExists(bucketContracts)
		if err != nil {
			return err
		}
		if docs.Get(h) != nil {
			return nil
		}
		idx, err := tx.CreateBucketIfNotExists(bucketContractOrder)
		if err != nil {
			return err
		}
		if err := idx.Put(order, []byte{}); err != nil {
			return err
		}
		return docs.Put(h, doc)
	})
	if err != nil {
		return fmt.Errorf("boltstore: put contract %s: %w", c.Hash, err)
	}
	return nil
}

// Contract returns the contract with hash h, or hub.ErrNotFound.
func (s *Store) Contract(ctx context.Context, h hub.Hash) (hub.ContractRecord, error) {
	if err := ctx.Err(); err != nil {
		return hub.ContractRecord{}, err
	}
	var c hub.ContractRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return readContract(tx.Bucket(bucketContracts), h[:], &c)
	})
	return c, err
}

func readContract(docs *bolt.Bucket, h []byte, c *hub.ContractRecord) error {
	var doc []byte
	if docs != nil {
		doc = docs.Get(h)
	}
	if doc == nil {
		return fmt.Errorf("%w: contract %x", hub.ErrNotFound, h)
	}
	if err := json.Unmarshal(doc, c); err != nil {
		return fmt.Errorf("boltstore: decode contract %x: %w", h, err)
	}
	return nil
}

// Contracts lists every contract, newest (by Published) first; contracts
// published at the same instant come in descending hash order.
func (s *Store) Contracts(ctx context.Context) ([]hub.ContractRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []hub.ContractRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketContractOrder)
		if idx == nil {
			return nil
		}
		docs := tx.Bucket(bucketContracts)
		c := idx.Cursor()
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			var rec hub.ContractRecord
			if err := readContract(docs, k[8:], &rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}
