package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/tlv"
	"github.com/m2mhub/m2mhub/msat"
)

// Bounds the channel messages enforce on both encode and decode. A value
// outside them is a protocol violation, not a business refusal, so the hub
// never has to reason about it.
const (
	// MaxIDSize bounds device and provider ids and ChannelError codes.
	MaxIDSize = 64
	// MaxMemoSize bounds free-text memos.
	MaxMemoSize = 256
	// MaxErrorMessageSize bounds the human text of ChannelError and
	// HoldResult.
	MaxErrorMessageSize = 512
	// MaxPkScriptSize bounds the output scripts in ChannelOffer and
	// CloseRequest; a taproot script is 34 bytes.
	MaxPkScriptSize = 64
	// MaxReceiptSize bounds a channel.Receipt encoding carried in PayAck
	// and ReceiptNotice. It equals channel.MaxReceiptSize.
	MaxReceiptSize = 1024
	// MaxCloseTxSize bounds the unsigned close transaction in
	// CloseProposal.
	MaxCloseTxSize = 4096
	// MaxMilliSatoshi is the largest msat amount accepted: all bitcoin
	// that will ever exist. It keeps sums of a few amounts far from
	// overflowing uint64.
	MaxMilliSatoshi = msat.Amount(btcutil.MaxSatoshi) * 1000
)

// Sizes of the fixed-width values on the wire.
const (
	outPointSize = chainhash.HashSize + 4
	// NonceSize is the length of a MuSig2 public nonce (two compressed
	// points).
	NonceSize = 66
)

// field is one TLV record of a message together with the rules the codec
// applies to it. Every message lists its fields once (see fielder) and the
// same list drives encoding, decoding and validation, so the codecs cannot
// drift apart.
type field struct {
	rec tlv.Record
	// optional fields may be absent; present reports whether the value in
	// the message must be written.
	optional bool
	present  func() bool
	// check validates the value after decoding and before encoding; nil
	// when the type itself is the whole rule.
	check func() error
}

// fielder is implemented by pointers to every TLV message: fields returns
// the message's records, bound to its own fields, in increasing type order.
type fielder interface {
	Message
	fields() []field
}

// encodeFields writes the present fields of m as one TLV stream after
// validating them.
func encodeFields(b *bytes.Buffer, m fielder) error {
	fs := m.fields()
	recs := make([]tlv.Record, 0, len(fs))
	for _, f := range fs {
		if f.optional && !f.present() {
			continue
		}
		if f.check != nil {
			if err := f.check(); err != nil {
				return fmt.Errorf("%w: %T: record %d: %v", ErrProtocol, m, f.rec.Type(), err)
			}
		}
		recs = append(recs, f.rec)
	}
	s, err := tlv.NewStream(recs...)
	if err != nil {
		return err
	}
	return s.Encode(b)
}

// decodeFields reads a TLV stream into a fresh message of type T and, when
// every rule holds, stores it in *m. A failed decode leaves *m untouched.
// It rejects, wrapping ErrProtocol, a malformed or non-canonical stream, a
// missing required record, an unknown even record and any value outside its
// bounds; unknown odd records are skipped.
func decodeFields[T any, P interface {
	*T
	fielder
}](r io.Reader, m P) error {
	var fresh T
	fs := P(&fresh).fields()
	recs := make([]tlv.Record, len(fs))
	for i, f := range fs {
		recs[i] = f.rec
	}
	s, err := tlv.NewStream(recs...)
	if err != nil {
		return err
	}
	parsed, err := s.DecodeWithParsedTypesP2P(r)
	if err != nil {
		return fmt.Errorf("%w: %T: %v", ErrProtocol, m, err)
	}
	known := make(map[tlv.Type]bool, len(fs))
	for _, f := range fs {
		t := f.rec.Type()
		known[t] = true
		if _, ok := parsed[t]; !ok {
			if !f.optional {
				return fmt.Errorf("%w: %T: record %d missing", ErrProtocol, m, t)
			}
			continue
		}
		if f.check != nil {
			if err := f.check(); err != nil {
				return fmt.Errorf("%w: %T: record %d: %v", ErrProtocol, m, t, err)
			}
		}
	}
	for t := range parsed {
		if !known[t] && t%2 == 0 {
			return fmt.Errorf("%w: %T: unknown required record %d", ErrProtocol, m, t)
		}
	}
	*m = fresh
	return nil
}

// fixedRecord is a record of exactly size bytes. Encoding writes put(src());
// decoding checks the length and reads into dst(), which may allocate.
func fixedRecord[T any](typ tlv.Type, size int, src, dst func() *T, put func([]byte, *T), get func([]byte, *T) error) tlv.Record {
	enc := func(w io.Writer, _ interface{}, _ *[8]byte) error {
		buf := make([]byte, size)
		put(buf, src())
		_, err := w.Write(buf)
		return err
	}
	dec := func(r io.Reader, _ interface{}, _ *[8]byte, l uint64) error {
		if l != uint64(size) {
			return fmt.Errorf("record of %d bytes, want %d", l, size)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		return get(buf, dst())
	}
	return tlv.MakeStaticRecord(typ, nil, uint64(size), enc, dec)
}

// static builds a required fixed-size record of size bytes for *v, written
// by put and read by get.
func static[T any](typ tlv.Type, v *T, size int, put func([]byte, *T), get func([]byte, *T) error) field {
	at := func() *T { return v }
	return field{rec: fixedRecord(typ, size, at, at, put, get)}
}

// optStatic is static for an optional value: nil means absent. Decoding
// allocates the value; a failed decode discards the whole message, so a
// half-filled value is never seen.
func optStatic[T any](typ tlv.Type, pp **T, size int, put func([]byte, *T), get func([]byte, *T) error) field {
	src := func() *T { return *pp }
	dst := func() *T {
		*pp = new(T)
		return *pp
	}
	return field{
		rec:      fixedRecord(typ, size, src, dst, put, get),
		optional: true,
		present:  func() bool { return *pp != nil },
	}
}

func putU64(b []byte, v *uint64) { binary.BigEndian.PutUint64(b, *v) }
func getU64(b []byte, v *uint64) error {
	*v = binary.BigEndian.Uint64(b)
	return nil
}

func putU32(b []byte, v *uint32) { binary.BigEndian.PutUint32(b, *v) }
func getU32(b []byte, v *uint32) error {
	*v = binary.BigEndian.Uint32(b)
	return nil
}

func putOutPoint(b []byte, op *wire.OutPoint) {
	copy(b, op.Hash[:])
	binary.BigEndian.PutUint32(b[chainhash.HashSize:], op.Index)
}

func getOutPoint(b []byte, op *wire.OutPoint) error {
	copy(op.Hash[:], b)
	op.Index = binary.BigEndian.Uint32(b[chainhash.HashSize:])
	return nil
}

// u64Field is a required u64 record.
func u64Field(typ tlv.Type, v *uint64) field { return static(typ, v, 8, putU64, getU64) }

// u32Field is a required u32 record.
func u32Field(typ tlv.Type, v *uint32) field { return static(typ, v, 4, putU32, getU32) }

// optU64Field is an optional u64 record.
func optU64Field(typ tlv.Type, v **uint64) field { return optStatic(typ, v, 8, putU64, getU64) }

// outPointField is a required 36-byte outpoint: txid in internal byte order,
// then the output index as a big-endian u32.
func outPointField(typ tlv.Type, v *wire.OutPoint) field {
	return static(typ, v, outPointSize, putOutPoint, getOutPoint)
}

// optOutPointField is an optional outpoint.
func optOutPointField(typ tlv.Type, v **wire.OutPoint) field {
	return optStatic(typ, v, outPointSize, putOutPoint, getOutPoint)
}

// arrayField is a required fixed-size byte array record; b is a slice of
// the array in the message, so decoding writes straight into it.
func arrayField(typ tlv.Type, b []byte) field {
	return static(typ, &b, len(b),
		func(dst []byte, v *[]byte) { copy(dst, *v) },
		func(src []byte, v *[]byte) error {
			copy(*v, src)
			return nil
		})
}

// optArrayField is an optional fixed-size byte array record; view returns
// the array's bytes.
func optArrayField[A any](typ tlv.Type, v **A, size int, view func(*A) []byte) field {
	return optStatic(typ, v, size,
		func(dst []byte, a *A) { copy(dst, view(a)) },
		func(src []byte, a *A) error {
			copy(view(a), src)
			return nil
		})
}

// optHoldIDField is an optional 16-byte hold id.
func optHoldIDField(typ tlv.Type, v **[16]byte) field {
	return optArrayField(typ, v, 16, func(a *[16]byte) []byte { return a[:] })
}

// optPendingIDField is an optional 32-byte pending channel id.
func optPendingIDField(typ tlv.Type, v **[32]byte) field {
	return optArrayField(typ, v, 32, func(a *[32]byte) []byte { return a[:] })
}

// msatField is a required u64 msat amount of at most MaxMilliSatoshi.
func msatField(typ tlv.Type, v *msat.Amount) field {
	f := static(typ, v, 8,
		func(b []byte, v *msat.Amount) { binary.BigEndian.PutUint64(b, uint64(*v)) },
		func(b []byte, v *msat.Amount) error {
			*v = msat.Amount(binary.BigEndian.Uint64(b))
			return nil
		})
	f.check = func() error {
		if *v > MaxMilliSatoshi {
			return fmt.Errorf("%d msat exceeds %d", uint64(*v), uint64(MaxMilliSatoshi))
		}
		return nil
	}
	return f
}

// satField is a required u64 satoshi amount in [0, btcutil.MaxSatoshi].
func satField(typ tlv.Type, v *btcutil.Amount) field {
	f := static(typ, v, 8,
		func(b []byte, v *btcutil.Amount) { binary.BigEndian.PutUint64(b, uint64(*v)) },
		func(b []byte, v *btcutil.Amount) error {
			u := binary.BigEndian.Uint64(b)
			if u > btcutil.MaxSatoshi {
				return fmt.Errorf("%d sat exceeds %d", u, int64(btcutil.MaxSatoshi))
			}
			*v = btcutil.Amount(u)
			return nil
		})
	f.check = func() error {
		if *v < 0 || *v > btcutil.MaxSatoshi {
			return fmt.Errorf("%d sat outside [0, %d]", int64(*v), int64(btcutil.MaxSatoshi))
		}
		return nil
	}
	return f
}

// pubKeyField is a required 33-byte compressed public key that must be a
// point on the curve.
func pubKeyField(typ tlv.Type, v **btcec.PublicKey) field {
	f := field{rec: tlv.MakePrimitiveRecord(typ, v)}
	f.check = func() error {
		if *v == nil {
			return fmt.Errorf("key missing")
		}
		return nil
	}
	return f
}

// varField is a variable-length record of minLen..maxLen bytes; the length
// is checked before anything is allocated. text additionally requires valid
// UTF-8.
func varField[S ~string | ~[]byte](typ tlv.Type, v *S, minLen, maxLen int, text bool) field {
	enc := func(w io.Writer, _ interface{}, _ *[8]byte) error {
		_, err := w.Write([]byte(*v))
		return err
	}
	dec := func(r io.Reader, _ interface{}, _ *[8]byte, l uint64) error {
		if l > uint64(maxLen) {
			return fmt.Errorf("%d bytes exceed %d", l, maxLen)
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		*v = S(b)
		return nil
	}
	size := func() uint64 { return uint64(len(*v)) }
	return field{
		rec: tlv.MakeDynamicRecord(typ, v, size, enc, dec),
		check: func() error {
			if len(*v) < minLen || len(*v) > maxLen {
				return fmt.Errorf("%d bytes, want %d..%d", len(*v), minLen, maxLen)
			}
			if text && !utf8.Valid([]byte(*v)) {
				return fmt.Errorf("not UTF-8")
			}
			return nil
		},
	}
}

// bytesField is a required byte string of 1..maxLen bytes.
func bytesField(typ tlv.Type, v *[]byte, maxLen int) field {
	return varField(typ, v, 1, maxLen, false)
}

// stringField is a required UTF-8 string of minLen..maxLen bytes.
func stringField[S ~string](typ tlv.Type, v *S, minLen, maxLen int) field {
	return varField(typ, v, minLen, maxLen, true)
}

// optStringField is an optional UTF-8 string of 1..maxLen bytes; the empty
// string means absent. A present but empty record decodes to "" and so
// re-encodes without the record.
func optStringField[S ~string](typ tlv.Type, v *S, maxLen int) field {
	f := stringField(typ, v, 0, maxLen)
	f.optional = true
	f.present = func() bool { return *v != "" }
	return f
}

// idField is a required device or provider id: 1..MaxIDSize bytes of UTF-8.
func idField(typ tlv.Type, v *string) field { return stringField(typ, v, 1, MaxIDSize) }

// memoField is an optional memo of at most MaxMemoSize bytes.
func memoField(typ tlv.Type, v *string) field { return optStringField(typ, v, MaxMemoSize) }

// enumField is a required string that must be one of allowed.
func enumField[S ~string](typ tlv.Type, v *S, allowed ...S) field {
	f := stringField(typ, v, 1, MaxIDSize)
	f.check = func() error {
		for _, a := range allowed {
			if *v == a {
				return nil
			}
		}
		return fmt.Errorf("unknown value %q", string(*v))
	}
	return f
}
