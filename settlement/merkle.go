package settlement

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Domain-separation prefixes of the Merkle tree: a leaf hash can never be
// read as an inner node, which closes the second-preimage attack on trees
// that hash both the same way.
const (
	leafPrefix = 0x00
	nodePrefix = 0x01
)

// LeafHash is the hash of one leaf: SHA-256(0x00 ‖ id), where id is a
// receipt ID (channel.Receipt.ID).
func LeafHash(id [32]byte) [32]byte {
	var b [33]byte
	b[0] = leafPrefix
	copy(b[1:], id[:])
	return sha256.Sum256(b[:])
}

// nodeHash is the hash of an inner node: SHA-256(0x01 ‖ left ‖ right).
func nodeHash(left, right [32]byte) [32]byte {
	var b [65]byte
	b[0] = nodePrefix
	copy(b[1:], left[:])
	copy(b[33:], right[:])
	return sha256.Sum256(b[:])
}

// MerkleTree is the tree over an epoch's receipt IDs, in the order the hub
// issued the receipts. Each level pairs nodes left to right; a last,
// unpaired node is promoted to the next level unchanged (never duplicated,
// so no two leaf lists share a root). The root of no leaves is 32 zero
// bytes, and the root of one leaf is its leaf hash.
type MerkleTree struct {
	// levels[0] are the leaf hashes, the last level is the root.
	levels [][][32]byte
}

// NewMerkleTree builds the tree over ids.
func NewMerkleTree(ids [][32]byte) *MerkleTree {
	if len(ids) == 0 {
		return &MerkleTree{}
	}
	level := make([][32]byte, len(ids))
	for i, id := range ids {
		level[i] = LeafHash(id)
	}
	t := &MerkleTree{levels: [][][32]byte{level}}
	for len(level) > 1 {
		up := make([][32]byte, (len(level)+1)/2)
		for i := 0; i+1 < len(level); i += 2 {
			up[i/2] = nodeHash(level[i], level[i+1])
		}
		if len(level)%2 == 1 {
			up[len(up)-1] = level[len(level)-1]
		}
		t.levels = append(t.levels, up)
		level = up
	}
	return t
}

// Len returns the number of leaves.
func (t *MerkleTree) Len() int {
	if len(t.levels) == 0 {
		return 0
	}
	return len(t.levels[0])
}

// Root returns the tree's root.
func (t *MerkleTree) Root() [32]byte {
	if len(t.levels) == 0 {
		return [32]byte{}
	}
	return t.levels[len(t.levels)-1][0]
}

// Proof is the path from one leaf to the root: the leaf's index, the number
// of leaves (which fixes where nodes were promoted rather than paired), and
// the sibling hashes from the leaf level up, one per level where the node
// had a sibling.
type Proof struct {
	Index    uint64
	Leaves   uint64
	Siblings [][32]byte
}

// Proof returns the proof for leaf i. It returns an error wrapping
// ErrBadProof when i is out of range.
func (t *MerkleTree) Proof(i int) (Proof, error) {
	if i < 0 || i >= t.Len() {
		return Proof{}, fmt.Errorf("%w: leaf %d of %d", ErrBadProof, i, t.Len())
	}
	p := Proof{Index: uint64(i), Leaves: uint64(t.Len())}
	for _, level := range t.levels[:len(t.levels)-1] {
		if sib := i ^ 1; sib < len(level) {
			p.Siblings = append(p.Siblings, level[sib])
		}
		i /= 2
	}
	return p, nil
}

// VerifyProof checks that the receipt id is leaf p.Index of a tree of
// p.Leaves leaves whose root is root. It returns an error wrapping
// ErrBadProof when it is not.
func VerifyProof(id [32]byte, p Proof, root [32]byte) error {
	if p.Leaves == 0 || p.Index >= p.Leaves {
		return fmt.Errorf("%w: leaf %d of %d", ErrBadProof, p.Index, p.Leaves)
	}
	h := LeafHash(id)
	i, n := p.Index, p.Leaves
	used := 0
	for n > 1 {
		switch {
		case i%2 == 1: // right child: sibling on the left
			if used == len(p.Siblings) {
				return fmt.Errorf("%w: too few siblings", ErrBadProof)
			}
			h = nodeHash(p.Siblings[used], h)
			used++
		case i+1 < n: // left child with a right sibling
			if used == len(p.Siblings) {
				return fmt.Errorf("%w: too few siblings", ErrBadProof)
			}
			h = nodeHash(h, p.Siblings[used])
			used++
		default: // last, unpaired: promoted unchanged
		}
		i /= 2
		n = (n + 1) / 2
	}
	if used != len(p.Siblings) {
		return fmt.Errorf("%w: %d siblings unused", ErrBadProof, len(p.Siblings)-used)
	}
	if h != root {
		return fmt.Errorf("%w: root mismatch", ErrBadProof)
	}
	return nil
}

// maxProofSiblings bounds a proof: a tree of at most 2^64 leaves has at most
// 64 levels below the root.
const maxProofSiblings = 64

// MarshalBinary encodes p as index (u64 BE) ‖ leaves (u64 BE) ‖ count (u8)
// ‖ count × 32-byte sibling.
func (p Proof) MarshalBinary() ([]byte, error) {
	if len(p.Siblings) > maxProofSiblings {
		return nil, fmt.Errorf("%w: %d siblings", ErrBadProof, len(p.Siblings))
	}
	b := make([]byte, 0, 17+32*len(p.Siblings))
	b = binary.BigEndian.AppendUint64(b, p.Index)
	b = binary.BigEndian.AppendUint64(b, p.Leaves)
	b = append(b, byte(len(p.Siblings)))
	for _, s := range p.Siblings {
		b = append(b, s[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes a proof written by MarshalBinary. It returns an
// error wrapping ErrBadProof when b is not exactly one well-formed proof: the
// index must be below the leaf count and the sibling count within what a
// tree of that many leaves can have.
func (p *Proof) UnmarshalBinary(b []byte) error {
	if len(b) < 17 {
		return fmt.Errorf("%w: %d bytes", ErrBadProof, len(b))
	}
	idx := binary.BigEndian.Uint64(b)
	leaves := binary.BigEndian.Uint64(b[8:])
	n := int(b[16])
	// A tree of L leaves has ceil(log2 L) levels below the root.
	if leaves == 0 || idx >= leaves || n > bits.Len64(leaves-1) {
		return fmt.Errorf("%w: %d siblings for %d leaves", ErrBadProof, n, leaves)
	}
	if len(b) != 17+32*n {
		return fmt.Errorf("%w: %d bytes for %d siblings", ErrBadProof, len(b), n)
	}
	sibs := make([][32]byte, n)
	for i := range sibs {
		copy(sibs[i][:], b[17+32*i:])
	}
	*p = Proof{Index: idx, Leaves: leaves, Siblings: sibs}
	return nil
}
