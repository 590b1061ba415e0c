package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// payingPair is a hub with a payer holding one ready channel of 100,000
// sat and a provider, both connected.
func payingPair(t *testing.T, mod func(*hub.ChannelsConfig)) (*harness, *device, *device, *devChannel) {
	t.Helper()
	checkLeaks(t)
	f := newFakeChain(testHeight)
	h := newHarness(t, f, mod)
	payer := h.enrol(hub.RolePayer)
	prov := h.enrol(hub.RoleProvider)
	return h, payer, prov, payer.open(f, 100_000, testHeight+500)
}

// authorizeHold has prov ask payer for a hold of max on c and payer sign it.
func authorizeHold(t *testing.T, payer, prov *device, c *devChannel, id [16]byte, max uint64) {
	t.Helper()
	expires := uint64(time.Now().Add(time.Hour).Unix())
	prov.send(&wire.HoldRequest{HoldID: id, Payer: payer.id, Max: lnwire.MilliSatoshi(max), Expires: expires})
	expect[*wire.HoldRequest](payer)
	sig, err := channel.SignHold(payer.key, id, c.op, prov.id, lnwire.MilliSatoshi(max), expires)
	if err != nil {
		t.Fatal(err)
	}
	payer.send(&wire.HoldAuthorize{HoldID: id, ChanID: c.op, Provider: prov.id, Max: lnwire.MilliSatoshi(max), Expires: expires, Sig: sig})
	if res := expect[*wire.HoldResult](prov); res.Status != wire.HoldAuthorized {
		t.Fatalf("hold result %+v", res)
	}
}

// TestRefusalCodes: each situation that "busy" or "bad-params" used to
// cover is refused with its own code, naming the request, and changes
// nothing.
func TestRefusalCodes(t *testing.T) {
	h, payer, prov, c := payingPair(t, func(c *hub.ChannelsConfig) { c.CaptureTimeout = 100 * time.Millisecond })
	ctx := context.Background()
	closeReq := func() *wire.CloseRequest {
		sess, err := c.out.NewKeySession(payer.key)
		if err != nil {
			t.Fatal(err)
		}
		return &wire.CloseRequest{ChanID: c.op, PkScript: c.out.PkScript(), DeviceNonce: sess.PublicNonce()}
	}

	t.Run("HoldActive", func(t *testing.T) {
		id := [16]byte{0xa1}
		authorizeHold(t, payer, prov, c, id, 5_000)
		payer.send(closeReq())
		if ce := refusal(payer, wire.ChanHoldActive); ce.ChanID == nil || *ce.ChanID != c.op {
			t.Fatalf("hold-active names channel %v", ce.ChanID)
		}

		// The same id again: in use, whether stored or still asked.
		prov.send(&wire.HoldRequest{HoldID: id, Payer: payer.id, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		if res := expect[*wire.HoldResult](prov); res.Status != wire.HoldRefused || res.Code != wire.ChanHoldIDInUse {
			t.Fatalf("reused hold id: %+v", res)
		}
		asked := [16]byte{0xa2}
		prov.send(&wire.HoldRequest{HoldID: asked, Payer: payer.id, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		expect[*wire.HoldRequest](payer) // not answered yet
		prov.send(&wire.HoldRequest{HoldID: asked, Payer: payer.id, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		if res := expect[*wire.HoldResult](prov); res.Status != wire.HoldRefused || res.Code != wire.ChanHoldIDInUse {
			t.Fatalf("hold id of a pending request: %+v", res)
		}
		payer.send(&wire.ChannelError{Code: wire.ChanPolicyRefused, Message: "no", HoldID: &asked})
		expect[*wire.HoldResult](prov)

		// The device does not pay a capture: charged on credit.
		prov.send(&wire.Capture{HoldID: id, Amount: 3_000})
		expect[*wire.PaymentRequest](payer)
		waitOwed(t, h, c, 3_000)
		prov.send(&wire.Release{HoldID: id})
		expect[*wire.HoldClosed](payer)
		expect[*wire.HoldClosed](prov)
	})

	t.Run("CreditOwed", func(t *testing.T) {
		payer.send(closeReq())
		refusal(payer, wire.ChanCreditOwed)
		// Any payment pays the credit down; then the close may go ahead.
		payer.pay(c, 3_000, prov.id)
		expect[*wire.ReceiptNotice](prov)
		waitOwed(t, h, c, 0)
	})

	t.Run("Closing", func(t *testing.T) {
		payer.send(closeReq())
		expect[*wire.CloseProposal](payer)
		payer.send(payer.payMsg(c, c.seq+1, c.paid+1_000, 1_000, prov.id))
		ce := refusal(payer, wire.ChanClosing)
		if ce.Seq == nil || *ce.Seq != c.seq+1 {
			t.Fatalf("closing names seq %v", ce.Seq)
		}
		if rec, _ := h.ch.Channel(ctx, c.op); rec.Seq != c.seq {
			t.Fatalf("refused payment moved the channel to seq %d", rec.Seq)
		}

		// A wrong partial signature ends the attempt; a second CloseSign
		// finds none waiting.
		payer.send(&wire.CloseSign{ChanID: c.op, DevicePartialSig: [32]byte{1}})
		refusal(payer, wire.ChanBadSignature)
		payer.send(&wire.CloseSign{ChanID: c.op, DevicePartialSig: [32]byte{1}})
		refusal(payer, wire.ChanCloseUnknown)
		// With the attempt over, payments go through again.
		payer.pay(c, 1_000, prov.id)
		expect[*wire.ReceiptNotice](prov)
	})

	t.Run("AuthorizeRefused", func(t *testing.T) {
		// A refused authorisation ends the request: the provider hears
		// now, not when the request expires.
		id := [16]byte{0xa4}
		expires := uint64(time.Now().Add(time.Hour).Unix())
		prov.send(&wire.HoldRequest{HoldID: id, Payer: payer.id, Max: 1_000, Expires: expires})
		expect[*wire.HoldRequest](payer)
		payer.send(&wire.HoldAuthorize{HoldID: id, ChanID: c.op, Provider: prov.id, Max: 1_000, Expires: expires, Sig: [64]byte{1}})
		if ce := refusal(payer, wire.ChanBadSignature); ce.HoldID == nil || *ce.HoldID != id || ce.ChanID == nil || ce.Seq != nil {
			t.Fatalf("refusal of the authorisation names %v/%v/%v", ce.HoldID, ce.ChanID, ce.Seq)
		}
		if res := expect[*wire.HoldResult](prov); res.HoldID != id || res.Status != wire.HoldRefused || res.Code != wire.ChanBadSignature {
			t.Fatalf("provider got %+v", res)
		}
		if x, _ := h.ch.Exposure(ctx); x.Reserved != 0 {
			t.Fatalf("refused hold reserves %d", x.Reserved)
		}
	})

	t.Run("PayerOffline", func(t *testing.T) {
		_ = payer.conn.Close()
		<-payer.done
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, ok := h.srv.Session(payer.id); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("payer session still registered")
			}
			time.Sleep(5 * time.Millisecond)
		}
		prov.send(&wire.HoldRequest{HoldID: [16]byte{0xa3}, Payer: payer.id, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		if res := expect[*wire.HoldResult](prov); res.Status != wire.HoldRefused || res.Code != wire.ChanPayerOffline {
			t.Fatalf("hold for an offline payer: %+v", res)
		}
	})
}

// waitOwed waits until the channel's Owed is want.
func waitOwed(t *testing.T, h *harness, c *devChannel, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, err := h.ch.Channel(context.Background(), c.op)
		if err == nil && uint64(rec.Owed) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("owed %d (%v), want %d", rec.Owed, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInternalNamesRequest: a failure inside the hub is answered
// "internal" with the ids of the request, so the device matches it to the
// payment it waits for instead of timing out.
func TestInternalNamesRequest(t *testing.T) {
	h, payer, prov, c := payingPair(t, nil)
	payer.pay(c, 1_000, prov.id) // the payee is looked up and cached
	expect[*wire.ReceiptNotice](prov)
	_ = h.store.Close() // every write fails from now on
	payer.send(payer.payMsg(c, c.seq+1, c.paid+1_000, 1_000, prov.id))
	ce := refusal(payer, wire.ChanInternal)
	if ce.ChanID == nil || *ce.ChanID != c.op || ce.Seq == nil || *ce.Seq != c.seq+1 {
		t.Fatalf("internal names %v/%v, want %v/%d", ce.ChanID, ce.Seq, c.op, c.seq+1)
	}
}
