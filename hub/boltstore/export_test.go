package boltstore

import (
	bolt "go.etcd.io/bbolt"
)

// PutRawDevice writes a device record and an index entry past Apply's
// checks, as an older hub could, for the conformance suite's unreadable
// record tests.
func (s *Store) PutRawDevice(id string, doc, key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketKeyIndex).Put(key, []byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketDevices).Put([]byte(id), doc)
	})
}
