package channel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// ErrBadReceipt means a receipt's encoding or fields break the rules of
// MarshalBinary, or its hub key is not a valid public key.
var ErrBadReceipt = errors.New("channel: bad receipt")

// Receipt bounds and layout constants.
const (
	// ReceiptVersion is the first byte of a receipt encoding without
	// metering fields (EventCount zero).
	ReceiptVersion = 1
	// ReceiptVersionEvents is the first byte of a receipt that names the
	// usage events it pays for (EventCount above zero): it adds Contract,
	// EventsRoot and EventCount.
	ReceiptVersionEvents = 2
	// MaxReceiptIDSize bounds Payer and Payee.
	MaxReceiptIDSize = 64
	// MaxReceiptMemoSize bounds Memo.
	MaxReceiptMemoSize = 256
	// MaxReceiptSize bounds a whole encoding; the wire messages that carry
	// receipts use the same bound.
	MaxReceiptSize = 1024

	receiptTag     = "m2mhub/receipt/v1"
	receiptSigSize = schnorr.SignatureSize
)

// Receipt is the hub's signed statement that a payment was made: Payer's
// channel reached state (Channel, Seq, Paid) and Amount of it went to Payee.
// Its ID is the Merkle leaf settlement commits to on chain, so the encoding
// is canonical: one receipt, one byte string.
type Receipt struct {
	Channel wire.OutPoint
	Seq     uint64
	// Payer and Payee are device and provider ids, 1..MaxReceiptIDSize
	// bytes of UTF-8.
	Payer, Payee string
	// Amount is this payment; Paid the channel's cumulative total after it.
	Amount, Paid msat.Amount
	// HoldID is the hold the payment captured against; zero means none.
	HoldID [16]byte
	// Memo is free text, at most MaxReceiptMemoSize bytes of UTF-8.
	Memo string
	// Time is encoded as unix milliseconds; finer precision is dropped
	// and times before 1970 are refused.
	Time time.Time
	// Contract is the hash of the contract that priced the events this
	// payment covers, EventsRoot the Merkle root of their ids (see
	// EventsRoot) and EventCount how many there are. A receipt with
	// EventCount zero is a plain payment and encodes as version 1, with
	// Contract and EventsRoot zero; one with EventCount above zero encodes
	// as version 2.
	Contract   [32]byte
	EventsRoot [32]byte
	EventCount uint32
	// HubKey is the compressed public key that made Sig. Verify checks
	// the signature against it; the caller checks that it is a hub key
	// it trusts (VerifyKey does both).
	HubKey [33]byte
	// Sig is the BIP-340 signature by HubKey over ID.
	Sig [64]byte
}

// appendUnsigned appends the encoding without Sig. Strings carry u32
// length prefixes, so the encoding, and thus ID, is unambiguous even for
// a receipt that breaks the bounds MarshalBinary enforces.
//
// Layout (integers big-endian): version u8 = 1 || funding txid [32]
// (internal order) || vout u32 || seq u64 || len u32 || payer || len u32 ||
// payee || amount msat u64 || paid msat u64 || hold id [16] || len u32 ||
// memo || time unix ms i64 || hub key [33]; MarshalBinary then appends
// sig [64]. Version 2 (EventCount above zero) starts with version u8 = 2 and
// inserts contract [32] || events root [32] || event count u32 between the
// time and the hub key.
func (r *Receipt) appendUnsigned(b []byte) []byte {
	if r.EventCount == 0 {
		b = append(b, ReceiptVersion)
	} else {
		b = append(b, ReceiptVersionEvents)
	}
	b = append(b, r.Channel.Hash[:]...)
	b = binary.BigEndian.AppendUint32(b, r.Channel.Index)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = appendString(b, r.Payer)
	b = appendString(b, r.Payee)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Amount))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Paid))
	b = append(b, r.HoldID[:]...)
	b = appendString(b, r.Memo)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixMilli()))
	if r.EventCount != 0 {
		b = append(b, r.Contract[:]...)
		b = append(b, r.EventsRoot[:]...)
		b = binary.BigEndian.AppendUint32(b, r.EventCount)
	}
	return append(b, r.HubKey[:]...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// validate checks the bounds every encoding must respect.
func (r *Receipt) validate() error {
	for _, f := range []struct {
		name     string
		s        string
		min, max int
	}{
		{"payer", r.Payer, 1, MaxReceiptIDSize},
		{"payee", r.Payee, 1, MaxReceiptIDSize},
		{"memo", r.Memo, 0, MaxReceiptMemoSize},
	} {
		if len(f.s) < f.min || len(f.s) > f.max {
			return fmt.Errorf("%w: %s of %d bytes (want %d..%d)", ErrBadReceipt, f.name, len(f.s), f.min, f.max)
		}
		if !utf8.ValidString(f.s) {
			return fmt.Errorf("%w: %s is not UTF-8", ErrBadReceipt, f.name)
		}
	}
	if r.Time.UnixMilli() < 0 {
		return fmt.Errorf("%w: time %v before 1970", ErrBadReceipt, r.Time)
	}
	if r.EventCount == 0 && (r.Contract != [32]byte{} || r.EventsRoot != [32]byte{}) {
		// Version 1 has no room for them: they would be dropped, and
		// the signature would not cover them.
		return fmt.Errorf("%w: contract or events root without events", ErrBadReceipt)
	}
	return nil
}

// MarshalBinary returns the canonical encoding (see appendUnsigned for the
// layout) followed by Sig. It returns an error wrapping ErrBadReceipt when a
// field is out of bounds.
func (r Receipt) MarshalBinary() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	b := r.appendUnsigned(make([]byte, 0, 256))
	return append(b, r.Sig[:]...), nil
}

// UnmarshalBinary decodes an encoding made by MarshalBinary. It returns an
// error wrapping ErrBadReceipt for an unknown version, a truncated or
// over-long input, trailing bytes, or a field out of bounds, so exactly the
// encodings MarshalBinary produces are accepted.
func (r *Receipt) UnmarshalBinary(b []byte) error {
	if len(b) > MaxReceiptSize {
		return fmt.Errorf("%w: %d bytes exceed %d", ErrBadReceipt, len(b), MaxReceiptSize)
	}
	d := receiptReader{b: b}
	var out Receipt
	v := d.bytes(1)
	if v != nil && v[0] != ReceiptVersion && v[0] != ReceiptVersionEvents {
		return fmt.Errorf("%w: version %d", ErrBadReceipt, v[0])
	}
	copy(out.Channel.Hash[:], d.bytes(chainhash.HashSize))
	out.Channel.Index = d.u32()
	out.Seq = d.u64()
	out.Payer = d.str(MaxReceiptIDSize)
	out.Payee = d.str(MaxReceiptIDSize)
	out.Amount = msat.Amount(d.u64())
	out.Paid = msat.Amount(d.u64())
	copy(out.HoldID[:], d.bytes(16))
	out.Memo = d.str(MaxReceiptMemoSize)
	ms := int64(d.u64())
	if v != nil && v[0] == ReceiptVersionEvents {
		copy(out.Contract[:], d.bytes(32))
		copy(out.EventsRoot[:], d.bytes(32))
		out.EventCount = d.u32()
		if d.err == nil && out.EventCount == 0 {
			// Canonical: a receipt without events is version 1.
			d.err = fmt.Errorf("%w: version 2 with no events", ErrBadReceipt)
		}
	}
	copy(out.HubKey[:], d.bytes(33))
	copy(out.Sig[:], d.bytes(receiptSigSize))
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadReceipt, len(d.b))
	}
	out.Time = time.UnixMilli(ms).UTC()
	if err := out.validate(); err != nil {
		return err
	}
	*r = out
	return nil
}

// receiptReader consumes a receipt encoding; the first error sticks and
// every later read returns zero values.
type receiptReader struct {
	b   []byte
	err error
}

func (d *receiptReader) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("%w: truncated", ErrBadReceipt)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *receiptReader) u32() uint32 {
	if v := d.bytes(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *receiptReader) u64() uint64 {
	if v := d.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// str reads a u32-length-prefixed string, refusing lengths above max before
// slicing.
func (d *receiptReader) str(max int) string {
	n := d.u32()
	if d.err == nil && n > uint32(max) {
		d.err = fmt.Errorf("%w: string of %d bytes exceeds %d", ErrBadReceipt, n, max)
	}
	return string(d.bytes(int(n)))
}

// ID is tagged_hash("m2mhub/receipt/v1", encoding without Sig): what the hub
// signs and the Merkle leaf settlement commits to. Both versions use the same
// tag; the version byte inside the hashed encoding keeps them apart.
func (r *Receipt) ID() [32]byte {
	return *chainhash.TaggedHash([]byte(receiptTag), r.appendUnsigned(make([]byte, 0, 256)))
}

// Sign sets HubKey to hubPriv's public key and Sig to its signature over ID.
// It returns an error wrapping ErrBadReceipt when a field is out of bounds,
// so the hub never signs a receipt it could not encode. A signer of many
// receipts uses a ReceiptSigner.
func (r *Receipt) Sign(hubPriv *btcec.PrivateKey) error {
	return NewReceiptSigner(hubPriv).Sign(r)
}

// ReceiptSigner signs receipts under one hub key whose public half it
// derives once: the derivation is a scalar multiplication, a third of what
// the signature itself costs, and the hub signs a receipt per payment.
type ReceiptSigner struct {
	priv *btcec.PrivateKey
	pub  [33]byte
}

// NewReceiptSigner returns a signer of receipts under hubPriv.
func NewReceiptSigner(hubPriv *btcec.PrivateKey) *ReceiptSigner {
	return &ReceiptSigner{priv: hubPriv, pub: [33]byte(hubPriv.PubKey().SerializeCompressed())}
}

// Sign sets r's HubKey and Sig as Receipt.Sign does, with the same errors.
func (s *ReceiptSigner) Sign(r *Receipt) error {
	if err := r.validate(); err != nil {
		return err
	}
	r.HubKey = s.pub
	hubPriv := s.priv
	id := r.ID()
	// FastSign skips btcec's verification of its own signature, which
	// would double the cost of every payment's receipt on the hub's hot
	// path; every receiver (device, provider, hubctl) verifies the receipt
	// anyway, so a faulty signature cannot go unnoticed.
	sig, err := schnorr.Sign(hubPriv, id[:], schnorr.FastSign())
	if err != nil {
		return err
	}
	r.Sig = [64]byte(sig.Serialize())
	return nil
}

// Verify checks that Sig is HubKey's signature over ID. It returns an error
// wrapping ErrBadReceipt for out-of-bounds fields or an invalid HubKey, and
// ErrBadSignature when the signature does not verify. It does not say
// whether HubKey belongs to a hub the caller trusts; see VerifyKey.
func (r *Receipt) Verify() error {
	if err := r.validate(); err != nil {
		return err
	}
	pub, err := btcec.ParsePubKey(r.HubKey[:])
	if err != nil {
		return fmt.Errorf("%w: hub key: %v", ErrBadReceipt, err)
	}
	k := liftKey(pub)
	return r.verifySig(&k)
}

// verifySig checks that Sig is k's signature over ID.
func (r *Receipt) verifySig(k *xOnlyKey) error {
	id := r.ID()
	if !k.verify(&id, &r.Sig) {
		return fmt.Errorf("%w: receipt %x", ErrBadSignature, id)
	}
	return nil
}

// ReceiptVerifier checks receipts against one trusted hub key, parsed and
// lifted once: a device checks the receipt of every payment it makes, and
// Receipt.VerifyKey parses the key from its 33 bytes (a square root on the
// curve) each time.
type ReceiptVerifier struct {
	hub [33]byte
	key xOnlyKey
}

// NewReceiptVerifier returns the verifier of receipts signed by hub.
func NewReceiptVerifier(hub *btcec.PublicKey) *ReceiptVerifier {
	return &ReceiptVerifier{hub: [33]byte(hub.SerializeCompressed()), key: liftKey(hub)}
}

// Verify is r.VerifyKey(hub) for the verifier's hub, with the same errors.
func (v *ReceiptVerifier) Verify(r *Receipt) error {
	if r.HubKey != v.hub {
		return fmt.Errorf("%w: receipt signed by %x", ErrNotParticipant, r.HubKey)
	}
	if err := r.validate(); err != nil {
		return err
	}
	return r.verifySig(&v.key)
}

// VerifyKey is Verify plus a check that the receipt was signed by hub. It
// returns an error wrapping ErrNotParticipant when HubKey is another key.
// A caller checking many receipts of one hub keeps a ReceiptVerifier.
func (r *Receipt) VerifyKey(hub *btcec.PublicKey) error {
	if hub == nil {
		return fmt.Errorf("%w: receipt signed by %x", ErrNotParticipant, r.HubKey)
	}
	return NewReceiptVerifier(hub).Verify(r)
}
