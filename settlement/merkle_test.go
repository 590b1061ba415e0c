package settlement

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
)

// ids returns n distinct made-up receipt IDs.
func ids(n int) [][32]byte {
	out := make([][32]byte, n)
	for i := range out {
		out[i] = sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
	}
	return out
}

func TestMerkle(t *testing.T) {
	t.Run("OKEveryLeaf", func(t *testing.T) {
		for n := 1; n <= 33; n++ {
			leaves := ids(n)
			tree := NewMerkleTree(leaves)
			root := tree.Root()
			for i, id := range leaves {
				p, err := tree.Proof(i)
				if err != nil {
					t.Fatal(err)
				}
				if err := VerifyProof(id, p, root); err != nil {
					t.Fatalf("n=%d leaf %d: %v", n, i, err)
				}
				b, err := p.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				var back Proof
				if err := back.UnmarshalBinary(b); err != nil {
					t.Fatalf("n=%d leaf %d: decode: %v", n, i, err)
				}
				if err := VerifyProof(id, back, root); err != nil {
					t.Fatalf("n=%d leaf %d: decoded proof: %v", n, i, err)
				}
			}
		}
	})
	t.Run("OKShape", func(t *testing.T) {
		// Worked example from docs/settlement.md: three leaves a, b, c give
		// root = H(0x01 ‖ H(0x01 ‖ L(a) ‖ L(b)) ‖ L(c)); c is promoted.
		l := ids(3)
		want := nodeHash(nodeHash(LeafHash(l[0]), LeafHash(l[1])), LeafHash(l[2]))
		if got := NewMerkleTree(l).Root(); got != want {
			t.Fatalf("root %x, want %x", got, want)
		}
		if got := NewMerkleTree(l[:1]).Root(); got != LeafHash(l[0]) {
			t.Fatal("one leaf: root is not the leaf hash")
		}
		if got := NewMerkleTree(nil).Root(); got != [32]byte{} {
			t.Fatal("empty tree: root is not zero")
		}
		// Promotion instead of duplication: [a b c] and [a b c c] differ.
		if NewMerkleTree(l).Root() == NewMerkleTree(append(l, l[2])).Root() {
			t.Fatal("duplicating the last leaf kept the root")
		}
	})
	t.Run("ErrBadProof", func(t *testing.T) {
		leaves := ids(11)
		tree := NewMerkleTree(leaves)
		root := tree.Root()
		p, _ := tree.Proof(6)
		cases := map[string]func() ([32]byte, Proof, [32]byte){
			"other leaf": func() ([32]byte, Proof, [32]byte) { return leaves[5], p, root },
			"other root": func() ([32]byte, Proof, [32]byte) { return leaves[6], p, sha256.Sum256(nil) },
			"other index": func() ([32]byte, Proof, [32]byte) {
				q := p
				q.Index = 7
				return leaves[6], q, root
			},
			"tampered sibling": func() ([32]byte, Proof, [32]byte) {
				q := p
				q.Siblings = append([][32]byte(nil), p.Siblings...)
				q.Siblings[1][0] ^= 1
				return leaves[6], q, root
			},
			"missing sibling": func() ([32]byte, Proof, [32]byte) {
				q := p
				q.Siblings = p.Siblings[:len(p.Siblings)-1]
				return leaves[6], q, root
			},
			"extra sibling": func() ([32]byte, Proof, [32]byte) {
				q := p
				q.Siblings = append(append([][32]byte(nil), p.Siblings...), root)
				return leaves[6], q, root
			},
			"index out of range": func() ([32]byte, Proof, [32]byte) {
				q := p
				q.Index = 11
				return leaves[6], q, root
			},
			// An inner node presented as a leaf: the tagged hashes
			// keep it from verifying.
			"inner node as leaf": func() ([32]byte, Proof, [32]byte) {
				l := ids(4)
				tr := NewMerkleTree(l)
				inner := nodeHash(LeafHash(l[0]), LeafHash(l[1]))
				return inner, Proof{Index: 0, Leaves: 2, Siblings: [][32]byte{nodeHash(LeafHash(l[2]), LeafHash(l[3]))}}, tr.Root()
			},
		}
		for name, c := range cases {
			id, q, r := c()
			if err := VerifyProof(id, q, r); !errors.Is(err, ErrBadProof) {
				t.Errorf("%s: got %v", name, err)
			}
		}
		if _, err := tree.Proof(11); !errors.Is(err, ErrBadProof) {
			t.Errorf("Proof(11) of 11: %v", err)
		}
		var q Proof
		for _, b := range [][]byte{nil, make([]byte, 16), append(make([]byte, 17), 0)} {
			if err := q.UnmarshalBinary(b); !errors.Is(err, ErrBadProof) {
				t.Errorf("decode %x: %v", b, err)
			}
		}
	})
}

func TestAnchor(t *testing.T) {
	a := Anchor{ReceiptsRoot: sha256.Sum256([]byte("receipts")), AuditHead: sha256.Sum256([]byte("audit"))}
	script := a.Script()
	if len(script) != 70 || script[0] != 0x6a || script[1] != 0x44 || string(script[2:6]) != "M2M1" {
		t.Fatalf("script %x", script)
	}
	got, err := ParseAnchorScript(script)
	if err != nil || got != a {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if got, err := ParseAnchorPayload(a.Payload()); err != nil || got != a {
		t.Fatalf("payload round trip: %+v, %v", got, err)
	}
	bad := [][]byte{
		nil,
		script[:69],
		append(append([]byte(nil), script...), 0x00),
		append([]byte{0x6a, 0x4c, 0x44}, a.Payload()...), // PUSHDATA1: not the canonical push
		append([]byte{0x6a, 0x44}, append([]byte("M2M2"), a.Payload()[4:]...)...),
	}
	for _, b := range bad {
		if _, err := ParseAnchorScript(b); !errors.Is(err, ErrBadAnchor) {
			t.Errorf("ParseAnchorScript(%x): %v", b, err)
		}
	}
}
