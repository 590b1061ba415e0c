package channel

import (
	"crypto/sha256"
	"fmt"
	"slices"
)

// Domain-separation prefixes of the events Merkle tree, so that a leaf can
// never be passed off as an inner node (the second-preimage attack on
// unprefixed Merkle trees).
const (
	eventLeafPrefix = 0x00
	eventNodePrefix = 0x01
)

// EventsRoot returns the Merkle root a version-2 receipt carries for the
// usage events it pays for, and how many there are.
//
// The ids are sorted bytewise, so the root does not depend on the order in
// which the hub charged them. Leaf i is SHA-256(0x00 || id_i); an inner node
// is SHA-256(0x01 || left || right); a level with an odd count carries its
// last node up unchanged (never duplicated, so two different id sets never
// share a root). A single id's root is its leaf. It returns an error
// wrapping ErrBadReceipt for an empty list or a repeated id, since a
// receipt names each event once.
func EventsRoot(ids []string) ([32]byte, uint32, error) {
	if len(ids) == 0 {
		return [32]byte{}, 0, fmt.Errorf("%w: no event ids", ErrBadReceipt)
	}
	if uint64(len(ids)) > uint64(^uint32(0)) {
		return [32]byte{}, 0, fmt.Errorf("%w: %d event ids", ErrBadReceipt, len(ids))
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	level := make([][32]byte, len(sorted))
	buf := make([]byte, 0, 65)
	for i, id := range sorted {
		if i > 0 && sorted[i-1] == id {
			return [32]byte{}, 0, fmt.Errorf("%w: event id %q repeated", ErrBadReceipt, id)
		}
		buf = append(append(buf[:0], eventLeafPrefix), id...)
		level[i] = sha256.Sum256(buf)
	}
	for len(level) > 1 {
		next := level[:0]
		for i := 0; i < len(level); i += 2 {
			if i+1 == len(level) {
				next = append(next, level[i])
				continue
			}
			buf = append(append(append(buf[:0], eventNodePrefix), level[i][:]...), level[i+1][:]...)
			next = append(next, sha256.Sum256(buf))
		}
		level = next
	}
	return level[0], uint32(len(sorted)), nil
}

// CoversEvents reports whether r names exactly the events ids (in any
// order): a provider checks that a receipt pays for the events it says.
func (r *Receipt) CoversEvents(ids []string) bool {
	root, n, err := EventsRoot(ids)
	return err == nil && n == r.EventCount && root == r.EventsRoot
}
