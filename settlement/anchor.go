package settlement

import (
	"bytes"
	"fmt"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// AnchorMagic opens every anchor payload; the trailing 1 is the format
// version.
const AnchorMagic = "M2M1"

// AnchorSize is the length of an anchor payload: magic, receipts root and
// audit-log head. It is below the 80 bytes a standard OP_RETURN may carry.
const AnchorSize = len(AnchorMagic) + 32 + 32

// anchorScriptSize is OP_RETURN, one direct push opcode (0x44) and the
// payload.
const anchorScriptSize = 2 + AnchorSize

// Anchor is what a settlement transaction commits to in its OP_RETURN
// output: the Merkle root of the epoch's receipt IDs and the head of the
// hub's hash-chained audit log.
type Anchor struct {
	ReceiptsRoot [32]byte
	AuditHead    [32]byte
}

// Payload returns the 68-byte payload: "M2M1" ‖ receipts root ‖ audit head.
func (a Anchor) Payload() []byte {
	b := make([]byte, 0, AnchorSize)
	b = append(b, AnchorMagic...)
	b = append(b, a.ReceiptsRoot[:]...)
	return append(b, a.AuditHead[:]...)
}

// ParseAnchorPayload decodes a payload written by Payload. It returns an
// error wrapping ErrBadAnchor when b is not exactly one.
func ParseAnchorPayload(b []byte) (Anchor, error) {
	if len(b) != AnchorSize || !bytes.HasPrefix(b, []byte(AnchorMagic)) {
		return Anchor{}, fmt.Errorf("%w: payload of %d bytes", ErrBadAnchor, len(b))
	}
	var a Anchor
	copy(a.ReceiptsRoot[:], b[4:36])
	copy(a.AuditHead[:], b[36:])
	return a, nil
}

// Script returns the output script OP_RETURN <payload>: 0x6a 0x44 followed by
// the 68-byte payload, 70 bytes in all.
func (a Anchor) Script() []byte {
	s := make([]byte, 0, anchorScriptSize)
	s = append(s, txscript.OP_RETURN, byte(AnchorSize))
	return append(s, a.Payload()...)
}

// TxOut returns the zero-value OP_RETURN output carrying a.
func (a Anchor) TxOut() *wire.TxOut { return wire.NewTxOut(0, a.Script()) }

// ParseAnchorScript decodes an output script written by Script. Only that
// exact encoding is accepted (a direct 0x44 push, nothing after it), so an
// anchor has one script and one txid. It returns an error wrapping
// ErrBadAnchor otherwise.
func ParseAnchorScript(script []byte) (Anchor, error) {
	if len(script) != anchorScriptSize || script[0] != txscript.OP_RETURN || script[1] != byte(AnchorSize) {
		return Anchor{}, fmt.Errorf("%w: not an m2mhub OP_RETURN", ErrBadAnchor)
	}
	return ParseAnchorPayload(script[2:])
}

// FindAnchor returns the anchor of a settlement transaction and its output
// index. It returns an error wrapping ErrBadAnchor unless exactly one output
// carries an anchor.
func FindAnchor(tx *wire.MsgTx) (Anchor, int, error) {
	found, idx := Anchor{}, -1
	for i, out := range tx.TxOut {
		a, err := ParseAnchorScript(out.PkScript)
		if err != nil {
			continue
		}
		if idx >= 0 {
			return Anchor{}, 0, fmt.Errorf("%w: two anchors", ErrBadAnchor)
		}
		found, idx = a, i
	}
	if idx < 0 {
		return Anchor{}, 0, fmt.Errorf("%w: no anchor output", ErrBadAnchor)
	}
	return found, idx, nil
}
