package hub

import (
	"bytes"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
)

// ChargeListener hears how a PaymentRequest ends. The channel manager calls
// it with a channel's lock held, so implementations must only queue the news
// and return.
type ChargeListener interface {
	// ChargePaid reports that the device paid request reqID; receipt is
	// the hub-signed, version-2 receipt encoding it was acknowledged with.
	ChargePaid(reqID uint64, receipt []byte)
	// ChargeRefused reports that the device refused request reqID (its
	// spending policy said no), with the code of the device's ChannelError
	// (docs/protocol.md) and its message.
	ChargeRefused(reqID uint64, code, message string)
	// ChargeFailed reports that request reqID can no longer be paid: the
	// session it was sent on ended before the device paid or refused it,
	// and no payment naming it is taken any more. Its charges are still
	// owed; the requester may ask for them again on the device's next
	// session.
	ChargeFailed(reqID uint64, reason string)
}

// PaymentRequest is a payment the hub asks a payer for, covering metered
// charges: one request, one device signature, many events.
type PaymentRequest struct {
	// Listener hears how the request ends: paid or refused. It is
	// required; a cancelled request is reported to nobody.
	Listener     ChargeListener
	Payer, Payee string
	Channel      btcwire.OutPoint
	Amount       msat.Amount
	// Contract, EventsRoot and EventCount go into the version-2 receipt
	// (channel.EventsRoot over the covered event ids).
	Contract   [32]byte
	EventsRoot [32]byte
	EventCount uint32
	Memo       string
	// Hold, when set, is the hold the payment captures: the charges were
	// recorded against it (channels.Manager.RecordHeldCharge).
	Hold *[16]byte
	// Fence, when set, goes into the paying update (PaymentUpdate.Fence):
	// the payment is applied only while the request is its charges' live
	// one, so a request its asker has superseded or lost is paid never.
	Fence *ChargeFence
}

// Settleable is one open channel as a settlement sees it at the cut: the
// record with its state as of the cut and the channel output it spends.
type Settleable struct {
	Record ChannelRecord
	Output *channel.Output
}

// Claim returns the latest acknowledged state and its device signature.
func (s Settleable) Claim() channel.Claim {
	return channel.Claim{
		State:     channel.State{ChannelID: s.Record.Funding, Seq: s.Record.Seq, Paid: s.Record.Paid},
		DeviceSig: s.Record.DeviceSig,
	}
}

// RolloverPair is one settled channel and the output that replaces it.
type RolloverPair struct {
	Old btcwire.OutPoint
	// Next is the funding of the next channel and NextParams its terms.
	Next       btcwire.OutPoint
	NextParams channel.Params
	// PaidAtCut is the old channel's Paid the epoch's ledger counted;
	// anything paid on it after the cut is carried into the next
	// channel's Owed (the device signed it on an output the batch
	// spends, and the next epoch's ledger charges it).
	PaidAtCut msat.Amount
}

// OutpointLess orders outpoints by txid bytes, then index: the order in
// which channels are locked and settled.
func OutpointLess(a, b btcwire.OutPoint) bool {
	if d := bytes.Compare(a.Hash[:], b.Hash[:]); d != 0 {
		return d < 0
	}
	return a.Index < b.Index
}
