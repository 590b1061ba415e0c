package hub

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrAuditBroken is returned by VerifyAuditChain when an entry does not link
// to the one before it or its hash does not match its contents.
var ErrAuditBroken = errors.New("hub: audit chain broken")

// Hash is a SHA-256 digest.
type Hash [32]byte

// String returns the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes the hash as hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes a hex hash.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("%w: hash must be 64 hex characters", ErrInvalid)
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// AuditEntry is one record of the append-only audit log. Entries are chained:
// each names the hash of the one before it, and its own hash covers its
// sequence number, time, kind, subject, detail and that link, so changing any
// stored byte breaks the chain from that entry on.
type AuditEntry struct {
	Seq     uint64          `json:"seq"` // 1 for the first entry
	Time    time.Time       `json:"time"`
	Kind    string          `json:"kind"`    // e.g. "device.enrol"
	Subject string          `json:"subject"` // e.g. a device id
	Actor   string          `json:"actor"`   // who did it: "operator", "token:<id>", "system"
	Detail  json.RawMessage `json:"detail,omitempty"`
	Prev    Hash            `json:"prev"`
	Hash    Hash            `json:"hash"`
}

// Audit entry kinds.
const (
	AuditEnrol  = "device.enrol"
	AuditRevoke = "device.revoke"
	AuditRotate = "device.rotate"
	AuditFreeze = "device.freeze"
	AuditAdmin  = "admin.change"
)

// ComputeHash returns the digest that e.Hash must equal. The encoding is
// length-prefixed so no two different entries share it.
func (e AuditEntry) ComputeHash() Hash {
	var buf bytes.Buffer
	buf.WriteString("m2mhub/audit/v1")
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], e.Seq)
	buf.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(e.Time.UTC().UnixNano()))
	buf.Write(n[:])
	for _, s := range []string{e.Kind, e.Subject, e.Actor, string(e.Detail)} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		buf.Write(n[:])
		buf.WriteString(s)
	}
	buf.Write(e.Prev[:])
	return sha256.Sum256(buf.Bytes())
}

// NextAuditEntry builds the entry that follows head (the zero entry for an
// empty log) and seals it with its hash.
func NextAuditEntry(head AuditEntry, now time.Time, kind, subject, actor string, detail any) (AuditEntry, error) {
	var raw json.RawMessage
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return AuditEntry{}, fmt.Errorf("hub: audit detail: %w", err)
		}
		raw = b
	}
	e := AuditEntry{
		Seq:     head.Seq + 1,
		Time:    now.UTC().Truncate(time.Microsecond),
		Kind:    kind,
		Subject: subject,
		Actor:   actor,
		Detail:  raw,
		Prev:    head.Hash,
	}
	e.Hash = e.ComputeHash()
	return e, nil
}

// AuditVerifier checks a log entry by entry, so a long log can be verified in
// pages without holding it all in memory.
type AuditVerifier struct {
	prev AuditEntry
}

// Next checks that e follows the entries seen so far. The error wraps
// ErrAuditBroken and names the sequence number of the first bad entry.
func (v *AuditVerifier) Next(e AuditEntry) error {
	switch {
	case e.Seq != v.prev.Seq+1:
		return fmt.Errorf("%w at entry %d: expected sequence %d", ErrAuditBroken, e.Seq, v.prev.Seq+1)
	case e.Prev != v.prev.Hash:
		return fmt.Errorf("%w at entry %d: does not link to entry %d", ErrAuditBroken, e.Seq, v.prev.Seq)
	case e.ComputeHash() != e.Hash:
		return fmt.Errorf("%w at entry %d: contents do not match its hash", ErrAuditBroken, e.Seq)
	}
	v.prev = e
	return nil
}

// Head returns the last entry verified so far.
func (v *AuditVerifier) Head() AuditEntry { return v.prev }
