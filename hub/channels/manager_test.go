package channels_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/internal/wire"
)

func TestPayOK(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)

	var total msat.Amount
	for i, amt := range []msat.Amount{1_500, 250, 1_000_000, 1} {
		ack := payer.Pay(c, amt, prov.ID)
		total += amt
		var r channel.Receipt
		if err := r.UnmarshalBinary(ack.Receipt); err != nil {
			t.Fatal(err)
		}
		if err := r.Verify(); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if r.HubKey != [33]byte(hub.PubKeyOf(h.HubKey.PubKey())) || r.Amount != amt || r.Paid != total ||
			r.Payer != payer.ID || r.Payee != prov.ID || r.Seq != uint64(i+1) {
			t.Fatalf("receipt %d: %+v", i, r)
		}
		note := chantest.Expect[*wire.ReceiptNotice](prov)
		if !bytes.Equal(note.Receipt, ack.Receipt) {
			t.Fatal("payee got another receipt")
		}
	}
	rec, err := h.Ch.Channel(context.Background(), c.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 4 || rec.Paid != total || rec.Status != hub.ChannelReady {
		t.Fatalf("stored %d/%d %s, want 4/%d ready", rec.Seq, rec.Paid, rec.Status, total)
	}
	// The stored signature claims the stored state (I2).
	sig, err := (channel.Claim{State: channel.State{ChannelID: c.Op, Seq: rec.Seq, Paid: rec.Paid}, DeviceSig: rec.DeviceSig}).Signature()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Out.VerifyClaim(channel.State{ChannelID: c.Op, Seq: rec.Seq, Paid: rec.Paid}, sig); err != nil {
		t.Fatal(err)
	}
	x, err := h.Ch.Exposure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if x.Channels != 1 || x.Credit != total%1000 || x.Owed != 0 {
		t.Fatalf("exposure %+v", x)
	}
}

// TestPayRefusals sends every kind of bad request on one session and checks
// the documented code, and that a good payment still goes through after each.
func TestPayRefusals(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	other := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	good := payer.Open(f, 50_000, chantest.TestHeight+500)
	second := payer.Open(f, 50_000, chantest.TestHeight+500)
	foreign := other.Open(f, 50_000, chantest.TestHeight+500)
	payer.Pay(good, 5_000_000, prov.ID) // enough for a claim to pay its fee
	chantest.Expect[*wire.ReceiptNotice](prov)

	max := good.Out.Params().MaxPaid()
	cases := []struct {
		name string
		send func() wire.Message
		code wire.ChanCode
	}{
		{"MalformedTLV", func() wire.Message {
			return &wire.Custom{Type: wire.MsgPay, Data: []byte{0x00, 0x20, 0x01}}
		}, wire.ChanMalformed},
		{"UnknownEvenType", func() wire.Message {
			return &wire.Custom{Type: wire.TypeBase + 0xF0, Data: nil}
		}, wire.ChanMalformed},
		{"UnknownChannel", func() wire.Message {
			c := *good
			c.Op.Index += 7
			return payer.PayMsg(&c, 1, 1000, 1000, prov.ID)
		}, wire.ChanUnknownChannel},
		{"NotOwner", func() wire.Message {
			return other.PayMsg(foreign, 1, 1000, 1000, prov.ID)
		}, wire.ChanNotOwner},
		{"StaleState", func() wire.Message {
			return payer.PayMsg(good, good.Seq, good.Paid+1000, 1000, prov.ID)
		}, wire.ChanStaleState},
		{"SeqGap", func() wire.Message {
			return payer.PayMsg(good, good.Seq+2, good.Paid+1000, 1000, prov.ID)
		}, wire.ChanSeqGap},
		{"PaidDecreased", func() wire.Message {
			return payer.PayMsg(good, good.Seq+1, good.Paid-1, 1, prov.ID)
		}, wire.ChanBadAmount},
		{"AmountMismatch", func() wire.Message {
			return payer.PayMsg(good, good.Seq+1, good.Paid+1000, 999, prov.ID)
		}, wire.ChanBadAmount},
		{"ZeroAmount", func() wire.Message {
			return payer.PayMsg(good, good.Seq+1, good.Paid, 0, prov.ID)
		}, wire.ChanBadAmount},
		{"OverCapacity", func() wire.Message {
			return payer.PayMsg(good, good.Seq+1, max+1, max+1-good.Paid, prov.ID)
		}, wire.ChanOverCapacity},
		{"UnknownPayee", func() wire.Message {
			return payer.PayMsg(good, good.Seq+1, good.Paid+1000, 1000, "dev-nobody")
		}, wire.ChanUnknownPayee},
		{"PayeeNotProvider", func() wire.Message {
			return payer.PayMsg(good, good.Seq+1, good.Paid+1000, 1000, other.ID)
		}, wire.ChanUnknownPayee},
		{"BadSignature", func() wire.Message {
			m := payer.PayMsg(good, good.Seq+1, good.Paid+1000, 1000, prov.ID)
			m.Sig[5] ^= 1
			return m
		}, wire.ChanBadSignature},
		{"SignatureForAnotherState", func() wire.Message {
			m := payer.PayMsg(good, good.Seq+1, good.Paid+2000, 2000, prov.ID)
			m.Paid, m.Amount = good.Paid+3000, 3000
			return m
		}, wire.ChanBadSignature},
		{"SignatureReplayedOnAnotherChannel", func() wire.Message {
			// second is at seq 0 like a fresh channel; a signature
			// of the same seq and paid on good must not pay it.
			m := payer.PayMsg(good, 1, 1000, 1000, prov.ID)
			m.ChanID = second.Op
			return m
		}, wire.ChanBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			payer.Send(tc.send())
			if tc.code == wire.ChanStaleState || tc.code == wire.ChanSeqGap {
				// Refused (I4), but first answered with the state
				// the hub holds, signed by the device itself.
				expectState(t, payer, good)
			}
			chantest.Refusal(payer, tc.code)
			// The session stays healthy and the channel usable.
			payer.Pay(good, 1000, prov.ID)
			chantest.Expect[*wire.ReceiptNotice](prov)
		})
	}

	t.Run("Frozen", func(t *testing.T) {
		if err := h.Ch.Freeze(context.Background(), payer.ID); err != nil {
			t.Fatal(err)
		}
		payer.Send(payer.PayMsg(good, good.Seq+1, good.Paid+1000, 1000, prov.ID))
		chantest.Refusal(payer, wire.ChanFrozen)
		rec, err := h.Ch.Channel(context.Background(), second.Op)
		if err != nil || rec.Status != hub.ChannelFrozen {
			t.Fatalf("second channel %s, %v", rec.Status, err)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		// Frozen channels are still claimed: unfreeze is not needed.
		txid, err := h.Ch.Claim(context.Background(), good.Op)
		if err != nil {
			t.Fatal(err)
		}
		closed := chantest.Expect[*wire.ChannelClosed](payer)
		if closed.Txid != txid {
			t.Fatal("ChannelClosed names another txid")
		}
		payer.Send(payer.PayMsg(good, good.Seq+1, good.Paid+1000, 1000, prov.ID))
		chantest.Refusal(payer, wire.ChanClosed)
	})
	t.Run("RateLimited", func(t *testing.T) {
		// Other's bucket: a burst of valid payments hits the limit.
		h2 := chantest.NewHarness(t, f, func(c *channels.Config) { c.PayRate, c.PayBurst = 1, 3 })
		p := h2.Enrol(hub.RolePayer)
		pv := h2.Enrol(hub.RoleProvider)
		c := p.Open(f, 50_000, chantest.TestHeight+500)
		for range 3 {
			p.Pay(c, 1000, pv.ID)
		}
		p.Send(p.PayMsg(c, c.Seq+1, c.Paid+1000, 1000, pv.ID))
		chantest.Refusal(p, wire.ChanRateLimited)
	})
}

// expectState reads the ChannelState the hub sends and checks it is c's
// latest state with the device's own signature over it.
func expectState(t *testing.T, d *chantest.Device, c *chantest.Channel) {
	t.Helper()
	st := chantest.Expect[*wire.ChannelState](d)
	if st.ChanID != c.Op || st.Seq != c.Seq || st.Paid != c.Paid || st.Sig == nil {
		t.Fatalf("state %v seq %d paid %d sig %v, want %v seq %d paid %d",
			st.ChanID, st.Seq, uint64(st.Paid), st.Sig != nil, c.Op, c.Seq, uint64(c.Paid))
	}
	sig, err := schnorr.ParseSignature(st.Sig[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Out.VerifyClaim(channel.State{ChannelID: c.Op, Seq: st.Seq, Paid: st.Paid}, sig); err != nil {
		t.Fatalf("state signature: %v", err)
	}
}

// TestChannelSync: a device asking for its channel's state gets the
// latest one with its own signature; another device's channel and an
// unknown one are refused.
func TestChannelSync(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	other := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 50_000, chantest.TestHeight+500)

	payer.Send(&wire.ChannelSync{ChanID: c.Op})
	if st := chantest.Expect[*wire.ChannelState](payer); st.Seq != 0 || st.Paid != 0 || st.Sig != nil {
		t.Fatalf("fresh channel state seq %d paid %d sig %v", st.Seq, uint64(st.Paid), st.Sig != nil)
	}
	for range 2 {
		payer.Pay(c, 3000, prov.ID)
		chantest.Expect[*wire.ReceiptNotice](prov)
	}
	payer.Send(&wire.ChannelSync{ChanID: c.Op})
	expectState(t, payer, c)

	other.Send(&wire.ChannelSync{ChanID: c.Op})
	if ce := chantest.Refusal(other, wire.ChanNotOwner); ce.ChanID == nil || *ce.ChanID != c.Op {
		t.Fatalf("refusal names %v", ce.ChanID)
	}
	unknown := c.Op
	unknown.Index += 9
	payer.Send(&wire.ChannelSync{ChanID: unknown})
	chantest.Refusal(payer, wire.ChanUnknownChannel)
}

func TestFundingMismatch(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	for _, tc := range []struct {
		name  string
		value func(btcutil.Amount) btcutil.Amount
		wrong bool
	}{
		{"WrongValue", func(c btcutil.Amount) btcutil.Amount { return c - 1 }, false},
		{"WrongScript", func(c btcutil.Amount) btcutil.Amount { return c }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, _ := payer.Offer(40_000, chantest.TestHeight+500)
			script := off.PkScript
			if tc.wrong {
				script = append([]byte{}, script...)
				script[5] ^= 1
			}
			op := f.Fund(tc.value(40_000), script, 6)
			payer.Send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
			ce := chantest.Refusal(payer, wire.ChanFundingMismatch)
			if ce.PendingID == nil || *ce.PendingID != off.PendingID {
				t.Fatal("refusal does not name the offer")
			}
			rec, err := h.Ch.Channel(context.Background(), op)
			if err != nil || rec.Status != hub.ChannelFailed {
				t.Fatalf("channel %s, %v; want failed", rec.Status, err)
			}
		})
	}
}

func TestFundingWaitsForDepth(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.MinDepth = 3 })
	payer := h.Enrol(hub.RolePayer)
	off, _ := payer.Offer(40_000, chantest.TestHeight+500)
	op := f.Fund(40_000, off.PkScript, 2)
	payer.Send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
	time.Sleep(200 * time.Millisecond) // several watcher rounds
	if rec, _ := h.Ch.Channel(context.Background(), op); rec.Status != hub.ChannelPending {
		t.Fatalf("status %s before min depth", rec.Status)
	}
	select {
	case m := <-payer.In:
		t.Fatalf("hub sent %T before min depth", m)
	default:
	}
	f.Mu.Lock()
	o := f.Outs[op]
	o.Confirmations = 3
	f.Outs[op] = o
	f.Mu.Unlock()
	r := chantest.Expect[*wire.ChannelReady](payer)
	if r.Outpoint != op || r.Capacity != 40_000 {
		t.Fatalf("ready %+v", r)
	}
}

func TestOpenRefusals(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.MaxPendingOpens = 2 })
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	for _, m := range []*wire.OpenChannel{
		{ReqID: 7, Capacity: 1_000, Expiry: chantest.TestHeight + 500},
		{ReqID: 7, Capacity: 50_000, Expiry: chantest.TestHeight + 1},
	} {
		payer.Send(m)
		if ce := chantest.Refusal(payer, wire.ChanBadParams); ce.ReqID == nil || *ce.ReqID != 7 {
			t.Fatal("refusal does not name the request")
		}
	}
	prov.Send(&wire.OpenChannel{ReqID: 1, Capacity: 50_000, Expiry: chantest.TestHeight + 500})
	chantest.Refusal(prov, wire.ChanNotOwner)
	first, _ := payer.Offer(50_000, chantest.TestHeight+500)
	// The same terms again (the first answer lost with a connection,
	// say) get the same offer, not a second pending slot.
	if again, _ := payer.Offer(50_000, chantest.TestHeight+500); again.PendingID != first.PendingID {
		t.Fatal("an OpenChannel with the terms of a pending offer got a new offer")
	}
	payer.Offer(50_000, chantest.TestHeight+501)
	payer.Send(&wire.OpenChannel{ReqID: 3, Capacity: 50_000, Expiry: chantest.TestHeight + 502})
	chantest.Refusal(payer, wire.ChanTooManyPending)
}

func TestHoldCaptureAndCredit(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) {
		c.CaptureTimeout = 150 * time.Millisecond
		c.CreditLimit = 5_000
	})
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 50_000, chantest.TestHeight+500)
	ctx := context.Background()

	holdID := [16]byte{1, 2, 3}
	expires := uint64(time.Now().Add(time.Hour).Unix())
	prov.Send(&wire.HoldRequest{HoldID: holdID, Payer: payer.ID, Max: 20_000, Expires: expires, Memo: "charging"})
	fwd := chantest.Expect[*wire.HoldRequest](payer)
	if fwd.Provider != prov.ID || fwd.Max != 20_000 {
		t.Fatalf("forwarded %+v", fwd)
	}
	sig, err := channel.SignHold(payer.Key, holdID, c.Op, prov.ID, 20_000, expires)
	if err != nil {
		t.Fatal(err)
	}
	payer.Send(&wire.HoldAuthorize{HoldID: holdID, ChanID: c.Op, Provider: prov.ID, Max: 20_000, Expires: expires, Sig: sig})
	if res := chantest.Expect[*wire.HoldResult](prov); res.Status != wire.HoldAuthorized {
		t.Fatalf("hold result %+v", res)
	}
	if x, _ := h.Ch.Exposure(ctx); x.Reserved != 20_000 {
		t.Fatalf("reserved %d, want 20000", x.Reserved)
	}

	// Capture answered by the device.
	prov.Send(&wire.Capture{HoldID: holdID, Amount: 7_000})
	req := chantest.Expect[*wire.PaymentRequest](payer)
	if req.Amount != 7_000 || req.HoldID == nil || *req.HoldID != holdID || req.Payee != prov.ID {
		t.Fatalf("payment request %+v", req)
	}
	m := payer.PayMsg(c, c.Seq+1, c.Paid+7_000, 7_000, prov.ID)
	m.HoldID, m.ReqID = &holdID, &req.ReqID
	payer.Send(m)
	chantest.Expect[*wire.PayAck](payer)
	c.Seq, c.Paid = c.Seq+1, c.Paid+7_000
	chantest.Expect[*wire.ReceiptNotice](prov)

	// More than the hold has left.
	prov.Send(&wire.Capture{HoldID: holdID, Amount: 13_001})
	chantest.Refusal(prov, wire.ChanHoldExceeded)

	// The device does not answer: charged on credit after the timeout.
	prov.Send(&wire.Capture{HoldID: holdID, Amount: 4_000})
	chantest.Expect[*wire.PaymentRequest](payer)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, _ := h.Ch.Channel(ctx, c.Op)
		if rec.Owed == 4_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("owed %d, want 4000", rec.Owed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Past the credit limit the provider is told to stop.
	prov.Send(&wire.Capture{HoldID: holdID, Amount: 2_000})
	chantest.Expect[*wire.PaymentRequest](payer)
	ce := chantest.Refusal(prov, wire.ChanCreditLimit)
	if ce.HoldID == nil || *ce.HoldID != holdID {
		t.Fatal("credit-limit does not name the hold")
	}
	// Paying the owed credit brings Owed back to zero.
	payer.Pay(c, 4_000, prov.ID)
	chantest.Expect[*wire.ReceiptNotice](prov)
	if rec, _ := h.Ch.Channel(ctx, c.Op); rec.Owed != 0 {
		t.Fatalf("owed %d after paying it", rec.Owed)
	}

	prov.Send(&wire.Release{HoldID: holdID})
	for _, d := range []*chantest.Device{payer, prov} {
		hc := chantest.Expect[*wire.HoldClosed](d)
		if hc.Reason != wire.HoldReleased || hc.Captured != 11_000 {
			t.Fatalf("hold closed %+v", hc)
		}
	}
	if x, _ := h.Ch.Exposure(ctx); x.Reserved != 0 {
		t.Fatalf("reserved %d after release", x.Reserved)
	}
	prov.Send(&wire.Capture{HoldID: holdID, Amount: 1})
	chantest.Refusal(prov, wire.ChanHoldExpired)
}

func TestHoldRefusedByDevice(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	payer.Open(f, 50_000, chantest.TestHeight+500)
	id := [16]byte{9}
	prov.Send(&wire.HoldRequest{HoldID: id, Payer: payer.ID, Max: 1_000, Expires: uint64(time.Now().Add(time.Minute).Unix())})
	chantest.Expect[*wire.HoldRequest](payer)
	payer.Send(&wire.ChannelError{Code: wire.ChanPolicyRefused, Message: "over budget", HoldID: &id})
	res := chantest.Expect[*wire.HoldResult](prov)
	if res.Status != wire.HoldRefused || res.Code != wire.ChanPolicyRefused {
		t.Fatalf("result %+v", res)
	}
	// More than any channel has free.
	prov.Send(&wire.HoldRequest{HoldID: [16]byte{10}, Payer: payer.ID, Max: 50_000_000, Expires: uint64(time.Now().Add(time.Minute).Unix())})
	if res := chantest.Expect[*wire.HoldResult](prov); res.Code != wire.ChanOverCapacity {
		t.Fatalf("result %+v", res)
	}
}

// deviceClose runs the device side of a cooperative close and returns the
// broadcast transaction's id from ChannelClosed.
func deviceClose(t *testing.T, d *chantest.Device, c *chantest.Channel, script []byte, wantDevice btcutil.Amount) *wire.ChannelClosed {
	t.Helper()
	d.Send(deviceSignClose(t, d, c, script, wantDevice))
	return chantest.Expect[*wire.ChannelClosed](d)
}

// deviceSignClose asks for a cooperative close, checks the proposal pays
// the device wantDevice to script, and returns the device's CloseSign
// without sending it.
func deviceSignClose(t *testing.T, d *chantest.Device, c *chantest.Channel, script []byte, wantDevice btcutil.Amount) *wire.CloseSign {
	t.Helper()
	sess, err := c.Out.NewKeySession(d.Key)
	if err != nil {
		t.Fatal(err)
	}
	d.Send(&wire.CloseRequest{ChanID: c.Op, PkScript: script, DeviceNonce: sess.PublicNonce()})
	prop := chantest.Expect[*wire.CloseProposal](d)
	tx := new(btcwire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(prop.Tx)); err != nil {
		t.Fatal(err)
	}
	// The device checks its own output before signing.
	if len(tx.TxIn) != 1 || tx.TxIn[0].PreviousOutPoint != c.Op || tx.TxOut[0].Value != int64(wantDevice) ||
		!bytes.Equal(tx.TxOut[0].PkScript, script) {
		t.Fatalf("close tx pays the device %d, want %d", tx.TxOut[0].Value, wantDevice)
	}
	fetcher := txscript.NewCannedPrevOutputFetcher(c.Out.PkScript(), int64(c.Out.Params().Capacity))
	h, err := channel.KeySpendSigHash(tx, 0, fetcher, nil, txscript.SigHashDefault)
	if err != nil {
		t.Fatal(err)
	}
	psig, err := sess.Sign(h, prop.HubNonce)
	if err != nil {
		t.Fatal(err)
	}
	cs := &wire.CloseSign{ChanID: c.Op}
	psig.S.PutBytes(&cs.DevicePartialSig)
	return cs
}

func TestCooperativeClose(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	payer.Pay(c, 30_000_500, prov.ID) // 30,000.5 sat
	chantest.Expect[*wire.ReceiptNotice](prov)
	script := c.Out.PkScript() // any standard script will do
	closed := deviceClose(t, payer, c, script, 100_000-30_000)
	f.Mu.Lock()
	tx := f.Sent[len(f.Sent)-1]
	f.Mu.Unlock()
	if tx.TxHash() != closed.Txid {
		t.Fatal("broadcast tx is not the one named")
	}
	if len(tx.TxOut) != 2 || tx.TxOut[1].Value <= 0 || tx.TxOut[1].Value >= 30_000 {
		t.Fatalf("hub output %v", tx.TxOut)
	}
	rec, _ := h.Ch.Channel(context.Background(), c.Op)
	if rec.Status != hub.ChannelClosing || rec.CloseTx == nil || *rec.CloseTx != closed.Txid {
		t.Fatalf("channel %s %v", rec.Status, rec.CloseTx)
	}
	// Confirmation moves it to closed.
	f.Mu.Lock()
	f.Confs[closed.Txid] = 1
	f.Mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for rec.Status != hub.ChannelClosed {
		if time.Now().After(deadline) {
			t.Fatalf("status %s after confirmation", rec.Status)
		}
		time.Sleep(10 * time.Millisecond)
		rec, _ = h.Ch.Channel(context.Background(), c.Op)
	}
	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1000, 1000, prov.ID))
	chantest.Refusal(payer, wire.ChanClosed)
}
