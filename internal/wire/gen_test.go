package wire

import (
	"bytes"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/tlv"
	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"
)

// Generators of valid channel messages, shared by the property tests, the
// malformed-input tests and the fuzz seed corpus.

func genBytes(t *rapid.T, n int, label string) []byte {
	return rapid.SliceOfN(rapid.Byte(), n, n).Draw(t, label)
}

func genArr16(t *rapid.T, label string) [16]byte { return [16]byte(genBytes(t, 16, label)) }
func genArr32(t *rapid.T, label string) [32]byte { return [32]byte(genBytes(t, 32, label)) }
func genArr64(t *rapid.T, label string) [64]byte { return [64]byte(genBytes(t, 64, label)) }
func genNonce(t *rapid.T, label string) [NonceSize]byte {
	return [NonceSize]byte(genBytes(t, NonceSize, label))
}

func genVar(t *rapid.T, minLen, maxLen int, label string) []byte {
	return rapid.SliceOfN(rapid.Byte(), minLen, maxLen).Draw(t, label)
}

func genString(t *rapid.T, minRunes, maxBytes int, label string) string {
	return rapid.StringOfN(rapid.Rune(), minRunes, -1, maxBytes).Draw(t, label)
}

func genID(t *rapid.T, label string) string   { return genString(t, 1, MaxIDSize, label) }
func genMemo(t *rapid.T, label string) string { return genString(t, 0, MaxMemoSize, label) }

func genOutPoint(t *rapid.T, label string) wire.OutPoint {
	return wire.OutPoint{Hash: genArr32(t, label+".hash"), Index: rapid.Uint32().Draw(t, label+".index")}
}

func genSat(t *rapid.T, label string) btcutil.Amount {
	return btcutil.Amount(rapid.Int64Range(0, btcutil.MaxSatoshi).Draw(t, label))
}

func genMsat(t *rapid.T, label string) msat.Amount {
	return msat.Amount(rapid.Uint64Range(0, uint64(MaxMilliSatoshi)).Draw(t, label))
}

func genPtr[T any](t *rapid.T, label string, gen func(*rapid.T, string) T) *T {
	if !rapid.Bool().Draw(t, label+".present") {
		return nil
	}
	v := gen(t, label)
	return &v
}

func genU64(t *rapid.T, label string) uint64 { return rapid.Uint64().Draw(t, label) }

func genOutPointPtr(t *rapid.T, label string) *wire.OutPoint { return genPtr(t, label, genOutPoint) }

func genKey(t *rapid.T, label string) *btcec.PublicKey {
	var k btcec.ModNScalar
	k.SetByteSlice(genBytes(t, 32, label))
	if k.IsZero() {
		k.SetInt(1)
	}
	return btcec.PrivKeyFromScalar(&k).PubKey()
}

// messageGens returns one generator of valid messages per channel message
// type, indexed by type.
func messageGens() map[MessageType]func(*rapid.T) Message {
	gens := map[MessageType]func(*rapid.T) Message{
		MsgOpenChannel: func(t *rapid.T) Message {
			return &OpenChannel{ReqID: genU64(t, "req"), Capacity: genSat(t, "cap"), Expiry: rapid.Uint32().Draw(t, "exp")}
		},
		MsgChannelOffer: func(t *rapid.T) Message {
			return &ChannelOffer{
				ReqID: genU64(t, "req"), PendingID: genArr32(t, "pid"), HubChanKey: genKey(t, "key"),
				Capacity: genSat(t, "cap"), Expiry: rapid.Uint32().Draw(t, "exp"),
				MinDepth: rapid.Uint32().Draw(t, "depth"), PkScript: genVar(t, 1, MaxPkScriptSize, "script"),
			}
		},
		MsgChannelFunded: func(t *rapid.T) Message {
			return &ChannelFunded{PendingID: genArr32(t, "pid"), Outpoint: genOutPoint(t, "op")}
		},
		MsgChannelReady: func(t *rapid.T) Message {
			return &ChannelReady{PendingID: genArr32(t, "pid"), Outpoint: genOutPoint(t, "op"),
				Capacity: genSat(t, "cap"), Expiry: rapid.Uint32().Draw(t, "exp")}
		},
		MsgPay: func(t *rapid.T) Message {
			return &Pay{
				ChanID: genOutPoint(t, "chan"), Seq: genU64(t, "seq"), Paid: genMsat(t, "paid"),
				Amount: genMsat(t, "amount"), Payee: genID(t, "payee"), Sig: genArr64(t, "sig"),
				Memo: genMemo(t, "memo"), HoldID: genPtr(t, "hold", genArr16), ReqID: genPtr(t, "req", genU64),
			}
		},
		MsgPayAck: func(t *rapid.T) Message {
			return &PayAck{ChanID: genOutPoint(t, "chan"), Seq: genU64(t, "seq"), Receipt: genVar(t, 1, MaxReceiptSize, "receipt")}
		},
		MsgChannelError: func(t *rapid.T) Message {
			return &ChannelError{
				Code:    rapid.OneOf(rapid.SampledFrom(ChanCodes()), rapid.Custom(func(t *rapid.T) ChanCode { return ChanCode(genID(t, "other")) })).Draw(t, "code"),
				Message: genString(t, 0, MaxErrorMessageSize, "msg"),
				ChanID:  genOutPointPtr(t, "chan"), Seq: genPtr(t, "seq", genU64), ReqID: genPtr(t, "req", genU64),
				HoldID: genPtr(t, "hold", genArr16), PendingID: genPtr(t, "pid", genArr32),
			}
		},
		MsgHoldRequest: func(t *rapid.T) Message {
			return &HoldRequest{HoldID: genArr16(t, "hold"), Payer: genID(t, "payer"), Max: genMsat(t, "max"),
				Expires: genU64(t, "exp"), Memo: genMemo(t, "memo"), Provider: genString(t, 0, MaxIDSize, "prov")}
		},
		MsgHoldAuthorize: func(t *rapid.T) Message {
			return &HoldAuthorize{HoldID: genArr16(t, "hold"), ChanID: genOutPoint(t, "chan"), Provider: genID(t, "prov"),
				Max: genMsat(t, "max"), Expires: genU64(t, "exp"), Sig: genArr64(t, "sig")}
		},
		MsgHoldResult: func(t *rapid.T) Message {
			return &HoldResult{HoldID: genArr16(t, "hold"),
				Status: rapid.SampledFrom([]HoldResultStatus{HoldAuthorized, HoldRefused}).Draw(t, "status"),
				Code:   ChanCode(genString(t, 0, MaxIDSize, "code")), Message: genString(t, 0, MaxErrorMessageSize, "msg")}
		},
		MsgCapture: func(t *rapid.T) Message {
			return &Capture{HoldID: genArr16(t, "hold"), Amount: genMsat(t, "amount"), Memo: genMemo(t, "memo")}
		},
		MsgPaymentRequest: func(t *rapid.T) Message {
			return &PaymentRequest{ReqID: genU64(t, "req"), ChanID: genOutPoint(t, "chan"), Payee: genID(t, "payee"),
				Amount: genMsat(t, "amount"), HoldID: genPtr(t, "hold", genArr16), Memo: genMemo(t, "memo")}
		},
		MsgRelease: func(t *rapid.T) Message { return &Release{HoldID: genArr16(t, "hold")} },
		MsgHoldClosed: func(t *rapid.T) Message {
			return &HoldClosed{HoldID: genArr16(t, "hold"), Captured: genMsat(t, "captured"),
				Reason: rapid.SampledFrom([]HoldCloseReason{HoldReleased, HoldExpired, HoldChannelClosed}).Draw(t, "reason")}
		},
		MsgReceiptNotice: func(t *rapid.T) Message {
			return &ReceiptNotice{Receipt: genVar(t, 1, MaxReceiptSize, "receipt")}
		},
		MsgCloseRequest: func(t *rapid.T) Message {
			return &CloseRequest{ChanID: genOutPoint(t, "chan"), PkScript: genVar(t, 1, MaxPkScriptSize, "script"), DeviceNonce: genNonce(t, "nonce")}
		},
		MsgCloseProposal: func(t *rapid.T) Message {
			return &CloseProposal{ChanID: genOutPoint(t, "chan"), Tx: genVar(t, 1, MaxCloseTxSize, "tx"),
				HubNonce: genNonce(t, "nonce")}
		},
		MsgCloseSign: func(t *rapid.T) Message {
			return &CloseSign{ChanID: genOutPoint(t, "chan"), DevicePartialSig: genArr32(t, "psig")}
		},
		MsgChannelClosed: func(t *rapid.T) Message {
			return &ChannelClosed{ChanID: genOutPoint(t, "chan"), Txid: genArr32(t, "txid")}
		},
	}
	for typ, gen := range syncGens() {
		gens[typ] = gen
	}
	for typ, gen := range settleGens() {
		gens[typ] = gen
	}
	return gens
}

// record is one raw TLV record, for building malformed streams by hand.
type record struct {
	typ uint64
	val []byte
}

// splitRecords parses a well-formed TLV payload into its records.
func splitRecords(tb testing.TB, payload []byte) []record {
	tb.Helper()
	r := bytes.NewReader(payload)
	var buf [8]byte
	var out []record
	for r.Len() > 0 {
		typ, err := tlv.ReadVarInt(r, &buf)
		if err != nil {
			tb.Fatal(err)
		}
		l, err := tlv.ReadVarInt(r, &buf)
		if err != nil {
			tb.Fatal(err)
		}
		v := make([]byte, l)
		if _, err := r.Read(v); err != nil && l > 0 {
			tb.Fatal(err)
		}
		out = append(out, record{typ, v})
	}
	return out
}

// joinRecords writes records as a TLV payload, in the order given.
func joinRecords(tb testing.TB, recs []record) []byte {
	tb.Helper()
	var b bytes.Buffer
	var buf [8]byte
	for _, rec := range recs {
		if err := tlv.WriteVarInt(&b, rec.typ, &buf); err != nil {
			tb.Fatal(err)
		}
		if err := tlv.WriteVarInt(&b, uint64(len(rec.val)), &buf); err != nil {
			tb.Fatal(err)
		}
		b.Write(rec.val)
	}
	return b.Bytes()
}

// withType prefixes a payload with the 2-byte message type.
func withType(t MessageType, payload []byte) []byte {
	return append([]byte{byte(t >> 8), byte(t)}, payload...)
}
