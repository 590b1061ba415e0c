package hub_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/lnwire"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

const testHeight = 1000

func TestPayOK(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, nil)
	payer := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	c := payer.open(f, 100_000, testHeight+500)

	var total lnwire.MilliSatoshi
	for i, amt := range []lnwire.MilliSatoshi{1_500, 250, 1_000_000, 1} {
		ack := payer.pay(c, amt, prov.id)
		total += amt
		var r channel.Receipt
		if err := r.UnmarshalBinary(ack.Receipt); err != nil {
			t.Fatal(err)
		}
		if err := r.Verify(); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if r.HubKey != [33]byte(hub.PubKeyOf(h.hubKey.PubKey())) || r.Amount != amt || r.Paid != total ||
			r.Payer != payer.id || r.Payee != prov.id || r.Seq != uint64(i+1) {
			t.Fatalf("receipt %d: %+v", i, r)
		}
		note := expect[*wire.ReceiptNotice](prov)
		if !bytes.Equal(note.Receipt, ack.Receipt) {
			t.Fatal("payee got another receipt")
		}
	}
	rec, err := h.ch.Channel(context.Background(), c.op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 4 || rec.Paid != total || rec.Status != hub.ChannelReady {
		t.Fatalf("stored %d/%d %s, want 4/%d ready", rec.Seq, rec.Paid, rec.Status, total)
	}
	// The stored signature claims the stored state (I2).
	sig, err := (channel.Claim{State: channel.State{ChannelID: c.op, Seq: rec.Seq, Paid: rec.Paid}, DeviceSig: rec.DeviceSig}).Signature()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.out.VerifyClaim(channel.State{ChannelID: c.op, Seq: rec.Seq, Paid: rec.Paid}, sig); err != nil {
		t.Fatal(err)
	}
	x, err := h.ch.Exposure(context.Background())
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
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, nil)
	payer := h.enrol(hub.RolePayer)
	other := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	good := payer.open(f, 50_000, testHeight+500)
	second := payer.open(f, 50_000, testHeight+500)
	foreign := other.open(f, 50_000, testHeight+500)
	payer.pay(good, 5_000_000, prov.id) // enough for a claim to pay its fee
	expect[*wire.ReceiptNotice](prov)

	max := good.out.Params().MaxPaid()
	cases := []struct {
		name string
		send func() lnwire.Message
		code wire.ChanCode
	}{
		{"MalformedTLV", func() lnwire.Message {
			return &lnwire.Custom{Type: wire.MsgPay, Data: []byte{0x00, 0x20, 0x01}}
		}, wire.ChanMalformed},
		{"UnknownEvenType", func() lnwire.Message {
			return &lnwire.Custom{Type: wire.TypeBase + 0xF0, Data: nil}
		}, wire.ChanMalformed},
		{"UnknownChannel", func() lnwire.Message {
			c := *good
			c.op.Index += 7
			return payer.payMsg(&c, 1, 1000, 1000, prov.id)
		}, wire.ChanUnknownChannel},
		{"NotOwner", func() lnwire.Message {
			return other.payMsg(foreign, 1, 1000, 1000, prov.id)
		}, wire.ChanNotOwner},
		{"StaleState", func() lnwire.Message {
			return payer.payMsg(good, good.seq, good.paid+1000, 1000, prov.id)
		}, wire.ChanStaleState},
		{"SeqGap", func() lnwire.Message {
			return payer.payMsg(good, good.seq+2, good.paid+1000, 1000, prov.id)
		}, wire.ChanSeqGap},
		{"PaidDecreased", func() lnwire.Message {
			return payer.payMsg(good, good.seq+1, good.paid-1, 1, prov.id)
		}, wire.ChanBadAmount},
		{"AmountMismatch", func() lnwire.Message {
			return payer.payMsg(good, good.seq+1, good.paid+1000, 999, prov.id)
		}, wire.ChanBadAmount},
		{"ZeroAmount", func() lnwire.Message {
			return payer.payMsg(good, good.seq+1, good.paid, 0, prov.id)
		}, wire.ChanBadAmount},
		{"OverCapacity", func() lnwire.Message {
			return payer.payMsg(good, good.seq+1, max+1, max+1-good.paid, prov.id)
		}, wire.ChanOverCapacity},
		{"UnknownPayee", func() lnwire.Message {
			return payer.payMsg(good, good.seq+1, good.paid+1000, 1000, "dev-nobody")
		}, wire.ChanUnknownPayee},
		{"PayeeNotProvider", func() lnwire.Message {
			return payer.payMsg(good, good.seq+1, good.paid+1000, 1000, other.id)
		}, wire.ChanUnknownPayee},
		{"BadSignature", func() lnwire.Message {
			m := payer.payMsg(good, good.seq+1, good.paid+1000, 1000, prov.id)
			m.Sig[5] ^= 1
			return m
		}, wire.ChanBadSignature},
		{"SignatureForAnotherState", func() lnwire.Message {
			m := payer.payMsg(good, good.seq+1, good.paid+2000, 2000, prov.id)
			m.Paid, m.Amount = good.paid+3000, 3000
			return m
		}, wire.ChanBadSignature},
		{"SignatureReplayedOnAnotherChannel", func() lnwire.Message {
			// second is at seq 0 like a fresh channel; a signature
			// of the same seq and paid on good must not pay it.
			m := payer.payMsg(good, 1, 1000, 1000, prov.id)
			m.ChanID = second.op
			return m
		}, wire.ChanBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			payer.send(tc.send())
			if tc.code == wire.ChanStaleState || tc.code == wire.ChanSeqGap {
				// Refused (I4), but first answered with the state
				// the hub holds, signed by the device itself.
				expectState(t, payer, good)
			}
			refusal(payer, tc.code)
			// The session stays healthy and the channel usable.
			payer.pay(good, 1000, prov.id)
			expect[*wire.ReceiptNotice](prov)
		})
	}

	t.Run("Frozen", func(t *testing.T) {
		if err := h.ch.Freeze(context.Background(), payer.id); err != nil {
			t.Fatal(err)
		}
		payer.send(payer.payMsg(good, good.seq+1, good.paid+1000, 1000, prov.id))
		refusal(payer, wire.ChanFrozen)
		rec, err := h.ch.Channel(context.Background(), second.op)
		if err != nil || rec.Status != hub.ChannelFrozen {
			t.Fatalf("second channel %s, %v", rec.Status, err)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		// Frozen channels are still claimed: unfreeze is not needed.
		txid, err := h.ch.Claim(context.Background(), good.op)
		if err != nil {
			t.Fatal(err)
		}
		closed := expect[*wire.ChannelClosed](payer)
		if closed.Txid != txid {
			t.Fatal("ChannelClosed names another txid")
		}
		payer.send(payer.payMsg(good, good.seq+1, good.paid+1000, 1000, prov.id))
		refusal(payer, wire.ChanClosed)
	})
	t.Run("RateLimited", func(t *testing.T) {
		// Other's bucket: a burst of valid payments hits the limit.
		h2 := newHarness(t, f, func(c *hub.ChannelsConfig) { c.PayRate, c.PayBurst = 1, 3 })
		p := h2.enrol(hub.RolePayer)
		pv := h2.enrol(hub.RoleProvider)
		c := p.open(f, 50_000, testHeight+500)
		for range 3 {
			p.pay(c, 1000, pv.id)
		}
		p.send(p.payMsg(c, c.seq+1, c.paid+1000, 1000, pv.id))
		refusal(p, wire.ChanRateLimited)
	})
}

// expectState reads the ChannelState the hub sends and checks it is c's
// latest state with the device's own signature over it.
func expectState(t *testing.T, d *device, c *devChannel) {
	t.Helper()
	st := expect[*wire.ChannelState](d)
	if st.ChanID != c.op || st.Seq != c.seq || st.Paid != c.paid || st.Sig == nil {
		t.Fatalf("state %v seq %d paid %d sig %v, want %v seq %d paid %d",
			st.ChanID, st.Seq, uint64(st.Paid), st.Sig != nil, c.op, c.seq, uint64(c.paid))
	}
	sig, err := schnorr.ParseSignature(st.Sig[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.out.VerifyClaim(channel.State{ChannelID: c.op, Seq: st.Seq, Paid: st.Paid}, sig); err != nil {
		t.Fatalf("state signature: %v", err)
	}
}

// TestChannelSync: a device asking for its channel's state gets the
// latest one with its own signature; another device's channel and an
// unknown one are refused.
func TestChannelSync(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, nil)
	payer := h.enrol(hub.RolePayer)
	other := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	c := payer.open(f, 50_000, testHeight+500)

	payer.send(&wire.ChannelSync{ChanID: c.op})
	if st := expect[*wire.ChannelState](payer); st.Seq != 0 || st.Paid != 0 || st.Sig != nil {
		t.Fatalf("fresh channel state seq %d paid %d sig %v", st.Seq, uint64(st.Paid), st.Sig != nil)
	}
	for range 2 {
		payer.pay(c, 3000, prov.id)
		expect[*wire.ReceiptNotice](prov)
	}
	payer.send(&wire.ChannelSync{ChanID: c.op})
	expectState(t, payer, c)

	other.send(&wire.ChannelSync{ChanID: c.op})
	if ce := refusal(other, wire.ChanNotOwner); ce.ChanID == nil || *ce.ChanID != c.op {
		t.Fatalf("refusal names %v", ce.ChanID)
	}
	unknown := c.op
	unknown.Index += 9
	payer.send(&wire.ChannelSync{ChanID: unknown})
	refusal(payer, wire.ChanUnknownChannel)
}

func TestFundingMismatch(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, nil)
	payer := h.enrol(hub.RolePayer)
	for _, tc := range []struct {
		name  string
		value func(btcutil.Amount) btcutil.Amount
		wrong bool
	}{
		{"WrongValue", func(c btcutil.Amount) btcutil.Amount { return c - 1 }, false},
		{"WrongScript", func(c btcutil.Amount) btcutil.Amount { return c }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, _ := payer.offer(40_000, testHeight+500)
			script := off.PkScript
			if tc.wrong {
				script = append([]byte{}, script...)
				script[5] ^= 1
			}
			op := f.fund(tc.value(40_000), script, 6)
			payer.send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
			ce := refusal(payer, wire.ChanFundingMismatch)
			if ce.PendingID == nil || *ce.PendingID != off.PendingID {
				t.Fatal("refusal does not name the offer")
			}
			rec, err := h.ch.Channel(context.Background(), op)
			if err != nil || rec.Status != hub.ChannelFailed {
				t.Fatalf("channel %s, %v; want failed", rec.Status, err)
			}
		})
	}
}

func TestFundingWaitsForDepth(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, func(c *hub.ChannelsConfig) { c.MinDepth = 3 })
	payer := h.enrol(hub.RolePayer)
	off, _ := payer.offer(40_000, testHeight+500)
	op := f.fund(40_000, off.PkScript, 2)
	payer.send(&wire.ChannelFunded{PendingID: off.PendingID, Outpoint: op})
	time.Sleep(200 * time.Millisecond) // several watcher rounds
	if rec, _ := h.ch.Channel(context.Background(), op); rec.Status != hub.ChannelPending {
		t.Fatalf("status %s before min depth", rec.Status)
	}
	select {
	case m := <-payer.in:
		t.Fatalf("hub sent %T before min depth", m)
	default:
	}
	f.mu.Lock()
	o := f.outs[op]
	o.Confirmations = 3
	f.outs[op] = o
	f.mu.Unlock()
	r := expect[*wire.ChannelReady](payer)
	if r.Outpoint != op || r.Capacity != 40_000 {
		t.Fatalf("ready %+v", r)
	}
}

func TestOpenRefusals(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, func(c *hub.ChannelsConfig) { c.MaxPendingOpens = 2 })
	payer := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	for _, m := range []*wire.OpenChannel{
		{ReqID: 7, Capacity: 1_000, Expiry: testHeight + 500},
		{ReqID: 7, Capacity: 50_000, Expiry: testHeight + 1},
	} {
		payer.send(m)
		if ce := refusal(payer, wire.ChanBadParams); ce.ReqID == nil || *ce.ReqID != 7 {
			t.Fatal("refusal does not name the request")
		}
	}
	prov.send(&wire.OpenChannel{ReqID: 1, Capacity: 50_000, Expiry: testHeight + 500})
	refusal(prov, wire.ChanNotOwner)
	payer.offer(50_000, testHeight+500)
	payer.offer(50_000, testHeight+500)
	payer.send(&wire.OpenChannel{ReqID: 3, Capacity: 50_000, Expiry: testHeight + 500})
	refusal(payer, wire.ChanTooManyPending)
}

func TestHoldCaptureAndCredit(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, func(c *hub.ChannelsConfig) {
		c.CaptureTimeout = 150 * time.Millisecond
		c.CreditLimit = 5_000
	})
	payer := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	c := payer.open(f, 50_000, testHeight+500)
	ctx := context.Background()

	holdID := [16]byte{1, 2, 3}
	expires := uint64(time.Now().Add(time.Hour).Unix())
	prov.send(&wire.HoldRequest{HoldID: holdID, Payer: payer.id, Max: 20_000, Expires: expires, Memo: "charging"})
	fwd := expect[*wire.HoldRequest](payer)
	if fwd.Provider != prov.id || fwd.Max != 20_000 {
		t.Fatalf("forwarded %+v", fwd)
	}
	sig, err := channel.SignHold(payer.key, holdID, c.op, prov.id, 20_000, expires)
	if err != nil {
		t.Fatal(err)
	}
	payer.send(&wire.HoldAuthorize{HoldID: holdID, ChanID: c.op, Provider: prov.id, Max: 20_000, Expires: expires, Sig: sig})
	if res := expect[*wire.HoldResult](prov); res.Status != wire.HoldAuthorized {
		t.Fatalf("hold result %+v", res)
	}
	if x, _ := h.ch.Exposure(ctx); x.Reserved != 20_000 {
		t.Fatalf("reserved %d, want 20000", x.Reserved)
	}

	// Capture answered by the device.
	prov.send(&wire.Capture{HoldID: holdID, Amount: 7_000})
	req := expect[*wire.PaymentRequest](payer)
	if req.Amount != 7_000 || req.HoldID == nil || *req.HoldID != holdID || req.Payee != prov.id {
		t.Fatalf("payment request %+v", req)
	}
	m := payer.payMsg(c, c.seq+1, c.paid+7_000, 7_000, prov.id)
	m.HoldID, m.ReqID = &holdID, &req.ReqID
	payer.send(m)
	expect[*wire.PayAck](payer)
	c.seq, c.paid = c.seq+1, c.paid+7_000
	expect[*wire.ReceiptNotice](prov)

	// More than the hold has left.
	prov.send(&wire.Capture{HoldID: holdID, Amount: 13_001})
	refusal(prov, wire.ChanHoldExceeded)

	// The device does not answer: charged on credit after the timeout.
	prov.send(&wire.Capture{HoldID: holdID, Amount: 4_000})
	expect[*wire.PaymentRequest](payer)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, _ := h.ch.Channel(ctx, c.op)
		if rec.Owed == 4_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("owed %d, want 4000", rec.Owed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Past the credit limit the provider is told to stop.
	prov.send(&wire.Capture{HoldID: holdID, Amount: 2_000})
	expect[*wire.PaymentRequest](payer)
	ce := refusal(prov, wire.ChanCreditLimit)
	if ce.HoldID == nil || *ce.HoldID != holdID {
		t.Fatal("credit-limit does not name the hold")
	}
	// Paying the owed credit brings Owed back to zero.
	payer.pay(c, 4_000, prov.id)
	expect[*wire.ReceiptNotice](prov)
	if rec, _ := h.ch.Channel(ctx, c.op); rec.Owed != 0 {
		t.Fatalf("owed %d after paying it", rec.Owed)
	}

	prov.send(&wire.Release{HoldID: holdID})
	for _, d := range []*device{payer, prov} {
		hc := expect[*wire.HoldClosed](d)
		if hc.Reason != wire.HoldReleased || hc.Captured != 11_000 {
			t.Fatalf("hold closed %+v", hc)
		}
	}
	if x, _ := h.ch.Exposure(ctx); x.Reserved != 0 {
		t.Fatalf("reserved %d after release", x.Reserved)
	}
	prov.send(&wire.Capture{HoldID: holdID, Amount: 1})
	refusal(prov, wire.ChanHoldExpired)
}

func TestHoldRefusedByDevice(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, nil)
	payer := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	payer.open(f, 50_000, testHeight+500)
	id := [16]byte{9}
	prov.send(&wire.HoldRequest{HoldID: id, Payer: payer.id, Max: 1_000, Expires: uint64(time.Now().Add(time.Minute).Unix())})
	expect[*wire.HoldRequest](payer)
	payer.send(&wire.ChannelError{Code: wire.ChanPolicyRefused, Message: "over budget", HoldID: &id})
	res := expect[*wire.HoldResult](prov)
	if res.Status != wire.HoldRefused || res.Code != wire.ChanPolicyRefused {
		t.Fatalf("result %+v", res)
	}
	// More than any channel has free.
	prov.send(&wire.HoldRequest{HoldID: [16]byte{10}, Payer: payer.id, Max: 50_000_000, Expires: uint64(time.Now().Add(time.Minute).Unix())})
	if res := expect[*wire.HoldResult](prov); res.Code != wire.ChanOverCapacity {
		t.Fatalf("result %+v", res)
	}
}

// deviceClose runs the device side of a cooperative close and returns the
// broadcast transaction's id from ChannelClosed.
func deviceClose(t *testing.T, d *device, c *devChannel, script []byte, wantDevice btcutil.Amount) *wire.ChannelClosed {
	t.Helper()
	sess, err := c.out.NewKeySession(d.key)
	if err != nil {
		t.Fatal(err)
	}
	d.send(&wire.CloseRequest{ChanID: c.op, PkScript: script, DeviceNonce: sess.PublicNonce()})
	prop := expect[*wire.CloseProposal](d)
	tx := new(btcwire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(prop.Tx)); err != nil {
		t.Fatal(err)
	}
	// The device checks its own output before signing.
	if len(tx.TxIn) != 1 || tx.TxIn[0].PreviousOutPoint != c.op || tx.TxOut[0].Value != int64(wantDevice) ||
		!bytes.Equal(tx.TxOut[0].PkScript, script) {
		t.Fatalf("close tx pays the device %d, want %d", tx.TxOut[0].Value, wantDevice)
	}
	fetcher := txscript.NewCannedPrevOutputFetcher(c.out.PkScript(), int64(c.out.Params().Capacity))
	h, err := channel.KeySpendSigHash(tx, 0, fetcher, nil, txscript.SigHashDefault)
	if err != nil {
		t.Fatal(err)
	}
	psig, err := sess.Sign(h, prop.HubNonce)
	if err != nil {
		t.Fatal(err)
	}
	var hubS btcec.ModNScalar
	hubS.SetBytes(&prop.HubPartialSig)
	if _, err := sess.Combine(&musig2.PartialSignature{S: &hubS}); err != nil {
		t.Fatalf("hub partial signature: %v", err)
	}
	var cs wire.CloseSign
	cs.ChanID = c.op
	psig.S.PutBytes(&cs.DevicePartialSig)
	d.send(&cs)
	return expect[*wire.ChannelClosed](d)
}

func TestCooperativeClose(t *testing.T) {
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, nil)
	payer := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	c := payer.open(f, 100_000, testHeight+500)
	payer.pay(c, 30_000_500, prov.id) // 30,000.5 sat
	expect[*wire.ReceiptNotice](prov)
	script := c.out.PkScript() // any standard script will do
	closed := deviceClose(t, payer, c, script, 100_000-30_000)
	f.mu.Lock()
	tx := f.sent[len(f.sent)-1]
	f.mu.Unlock()
	if tx.TxHash() != closed.Txid {
		t.Fatal("broadcast tx is not the one named")
	}
	if len(tx.TxOut) != 2 || tx.TxOut[1].Value <= 0 || tx.TxOut[1].Value >= 30_000 {
		t.Fatalf("hub output %v", tx.TxOut)
	}
	rec, _ := h.ch.Channel(context.Background(), c.op)
	if rec.Status != hub.ChannelClosing || rec.CloseTx == nil || *rec.CloseTx != closed.Txid {
		t.Fatalf("channel %s %v", rec.Status, rec.CloseTx)
	}
	// Confirmation moves it to closed.
	f.mu.Lock()
	f.confs[closed.Txid] = 1
	f.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for rec.Status != hub.ChannelClosed {
		if time.Now().After(deadline) {
			t.Fatalf("status %s after confirmation", rec.Status)
		}
		time.Sleep(10 * time.Millisecond)
		rec, _ = h.ch.Channel(context.Background(), c.op)
	}
	payer.send(payer.payMsg(c, c.seq+1, c.paid+1000, 1000, prov.id))
	refusal(payer, wire.ChanClosed)
}
