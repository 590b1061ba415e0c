package wire

// NewMessage returns an empty message of custom type t, ready for Decode, or
// nil when m2mhub defines no message of that type. It is the table
// DecodeMessage dispatches on; a switch rather than a map keeps it free of
// package-level mutable state.
func NewMessage(t MessageType) Message {
	switch t {
	case MsgEnrol:
		return new(Enrol)
	case MsgOpenChannel:
		return new(OpenChannel)
	case MsgChannelOffer:
		return new(ChannelOffer)
	case MsgChannelFunded:
		return new(ChannelFunded)
	case MsgChannelReady:
		return new(ChannelReady)
	case MsgPay:
		return new(Pay)
	case MsgPayAck:
		return new(PayAck)
	case MsgChannelError:
		return new(ChannelError)
	case MsgHoldRequest:
		return new(HoldRequest)
	case MsgHoldAuthorize:
		return new(HoldAuthorize)
	case MsgHoldResult:
		return new(HoldResult)
	case MsgCapture:
		return new(Capture)
	case MsgPaymentRequest:
		return new(PaymentRequest)
	case MsgRelease:
		return new(Release)
	case MsgHoldClosed:
		return new(HoldClosed)
	case MsgReceiptNotice:
		return new(ReceiptNotice)
	case MsgCloseRequest:
		return new(CloseRequest)
	case MsgCloseProposal:
		return new(CloseProposal)
	case MsgCloseSign:
		return new(CloseSign)
	case MsgChannelClosed:
		return new(ChannelClosed)
	case MsgSettleProposal:
		return new(SettleProposal)
	case MsgSettleSign:
		return new(SettleSign)
	case MsgSettleDone:
		return new(SettleDone)
	case MsgChannelSync:
		return new(ChannelSync)
	case MsgChannelState:
		return new(ChannelState)
	}
	return nil
}
