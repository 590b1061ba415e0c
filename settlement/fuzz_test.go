package settlement

import (
	"bytes"
	"testing"
)

// FuzzProofDecode checks that any proof the decoder accepts encodes back to
// the same bytes and never panics on verification.
func FuzzProofDecode(f *testing.F) {
	tree := NewMerkleTree(ids(5))
	for i := range 5 {
		p, _ := tree.Proof(i)
		b, _ := p.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Proof
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding %x gave %x, %v", b, again, err)
		}
		_ = VerifyProof([32]byte{}, p, tree.Root())
	})
}

// FuzzAnchorScript checks that any script the decoder accepts is exactly the
// one the anchor encodes to.
func FuzzAnchorScript(f *testing.F) {
	f.Add(Anchor{}.Script())
	f.Add([]byte{0x6a})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAnchorScript(b)
		if err != nil {
			return
		}
		if !bytes.Equal(a.Script(), b) {
			t.Fatalf("accepted %x, encodes to %x", b, a.Script())
		}
	})
}
