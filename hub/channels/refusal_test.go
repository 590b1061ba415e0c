package channels_test

import (
	"context"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// payingPair is a hub with a payer holding one ready channel of 100,000
// sat and a provider, both connected.
func payingPair(t *testing.T, mod func(*channels.Config)) (*chantest.Harness, *chantest.Device, *chantest.Device, *chantest.Channel) {
	t.Helper()
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, mod)
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	return h, payer, prov, payer.Open(f, 100_000, chantest.TestHeight+500)
}

// authorizeHold has prov ask payer for a hold of max on c and payer sign it.
func authorizeHold(t *testing.T, payer, prov *chantest.Device, c *chantest.Channel, id [16]byte, max uint64) {
	t.Helper()
	expires := uint64(time.Now().Add(time.Hour).Unix())
	prov.Send(&wire.HoldRequest{HoldID: id, Payer: payer.ID, Max: msat.Amount(max), Expires: expires})
	chantest.Expect[*wire.HoldRequest](payer)
	sig, err := channel.SignHold(payer.Key, id, c.Op, prov.ID, msat.Amount(max), expires)
	if err != nil {
		t.Fatal(err)
	}
	payer.Send(&wire.HoldAuthorize{HoldID: id, ChanID: c.Op, Provider: prov.ID, Max: msat.Amount(max), Expires: expires, Sig: sig})
	if res := chantest.Expect[*wire.HoldResult](prov); res.Status != wire.HoldAuthorized {
		t.Fatalf("hold result %+v", res)
	}
}

// TestRefusalCodes: each situation that "busy" or "bad-params" used to
// cover is refused with its own code, naming the request, and changes
// nothing.
func TestRefusalCodes(t *testing.T) {
	h, payer, prov, c := payingPair(t, func(c *channels.Config) { c.CaptureTimeout = 100 * time.Millisecond })
	ctx := context.Background()
	closeReq := func() *wire.CloseRequest {
		sess, err := c.Out.NewKeySession(payer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return &wire.CloseRequest{ChanID: c.Op, PkScript: c.Out.PkScript(), DeviceNonce: sess.PublicNonce()}
	}

	t.Run("HoldActive", func(t *testing.T) {
		id := [16]byte{0xa1}
		authorizeHold(t, payer, prov, c, id, 5_000)
		payer.Send(closeReq())
		if ce := chantest.Refusal(payer, wire.ChanHoldActive); ce.ChanID == nil || *ce.ChanID != c.Op {
			t.Fatalf("hold-active names channel %v", ce.ChanID)
		}

		// The same id again: in use, whether stored or still asked.
		prov.Send(&wire.HoldRequest{HoldID: id, Payer: payer.ID, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		if res := chantest.Expect[*wire.HoldResult](prov); res.Status != wire.HoldRefused || res.Code != wire.ChanHoldIDInUse {
			t.Fatalf("reused hold id: %+v", res)
		}
		asked := [16]byte{0xa2}
		prov.Send(&wire.HoldRequest{HoldID: asked, Payer: payer.ID, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		chantest.Expect[*wire.HoldRequest](payer) // not answered yet
		prov.Send(&wire.HoldRequest{HoldID: asked, Payer: payer.ID, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		if res := chantest.Expect[*wire.HoldResult](prov); res.Status != wire.HoldRefused || res.Code != wire.ChanHoldIDInUse {
			t.Fatalf("hold id of a pending request: %+v", res)
		}
		payer.Send(&wire.ChannelError{Code: wire.ChanPolicyRefused, Message: "no", HoldID: &asked})
		chantest.Expect[*wire.HoldResult](prov)

		// The device does not pay a capture: charged on credit.
		prov.Send(&wire.Capture{HoldID: id, Amount: 3_000})
		chantest.Expect[*wire.PaymentRequest](payer)
		waitOwed(t, h, c, 3_000)
		prov.Send(&wire.Release{HoldID: id})
		chantest.Expect[*wire.HoldClosed](payer)
		chantest.Expect[*wire.HoldClosed](prov)
	})

	t.Run("CreditOwed", func(t *testing.T) {
		payer.Send(closeReq())
		chantest.Refusal(payer, wire.ChanCreditOwed)
		// Any payment pays the credit down; then the close may go ahead.
		payer.Pay(c, 3_000, prov.ID)
		chantest.Expect[*wire.ReceiptNotice](prov)
		waitOwed(t, h, c, 0)
	})

	t.Run("Closing", func(t *testing.T) {
		payer.Send(closeReq())
		chantest.Expect[*wire.CloseProposal](payer)
		payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
		ce := chantest.Refusal(payer, wire.ChanClosing)
		if ce.Seq == nil || *ce.Seq != c.Seq+1 {
			t.Fatalf("closing names seq %v", ce.Seq)
		}
		if rec, _ := h.Ch.Channel(ctx, c.Op); rec.Seq != c.Seq {
			t.Fatalf("refused payment moved the channel to seq %d", rec.Seq)
		}

		// A wrong partial signature ends the attempt; a second CloseSign
		// finds none waiting.
		payer.Send(&wire.CloseSign{ChanID: c.Op, DevicePartialSig: [32]byte{1}})
		chantest.Refusal(payer, wire.ChanBadSignature)
		payer.Send(&wire.CloseSign{ChanID: c.Op, DevicePartialSig: [32]byte{1}})
		chantest.Refusal(payer, wire.ChanCloseUnknown)
		// With the attempt over, payments go through again.
		payer.Pay(c, 1_000, prov.ID)
		chantest.Expect[*wire.ReceiptNotice](prov)
	})

	t.Run("AuthorizeRefused", func(t *testing.T) {
		// A refused authorisation ends the request: the provider hears
		// now, not when the request expires.
		id := [16]byte{0xa4}
		expires := uint64(time.Now().Add(time.Hour).Unix())
		prov.Send(&wire.HoldRequest{HoldID: id, Payer: payer.ID, Max: 1_000, Expires: expires})
		chantest.Expect[*wire.HoldRequest](payer)
		payer.Send(&wire.HoldAuthorize{HoldID: id, ChanID: c.Op, Provider: prov.ID, Max: 1_000, Expires: expires, Sig: [64]byte{1}})
		if ce := chantest.Refusal(payer, wire.ChanBadSignature); ce.HoldID == nil || *ce.HoldID != id || ce.ChanID == nil || ce.Seq != nil {
			t.Fatalf("refusal of the authorisation names %v/%v/%v", ce.HoldID, ce.ChanID, ce.Seq)
		}
		if res := chantest.Expect[*wire.HoldResult](prov); res.HoldID != id || res.Status != wire.HoldRefused || res.Code != wire.ChanBadSignature {
			t.Fatalf("provider got %+v", res)
		}
		if x, _ := h.Ch.Exposure(ctx); x.Reserved != 0 {
			t.Fatalf("refused hold reserves %d", x.Reserved)
		}
	})

	t.Run("PayerOffline", func(t *testing.T) {
		_ = payer.Conn.Close()
		<-payer.Done
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, ok := h.Srv.Session(payer.ID); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("payer session still registered")
			}
			time.Sleep(5 * time.Millisecond)
		}
		prov.Send(&wire.HoldRequest{HoldID: [16]byte{0xa3}, Payer: payer.ID, Max: 1_000, Expires: uint64(time.Now().Add(time.Hour).Unix())})
		if res := chantest.Expect[*wire.HoldResult](prov); res.Status != wire.HoldRefused || res.Code != wire.ChanPayerOffline {
			t.Fatalf("hold for an offline payer: %+v", res)
		}
	})
}

// waitOwed waits until the channel's Owed is want.
func waitOwed(t *testing.T, h *chantest.Harness, c *chantest.Channel, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, err := h.Ch.Channel(context.Background(), c.Op)
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
	payer.Pay(c, 1_000, prov.ID) // the payee is looked up and cached
	chantest.Expect[*wire.ReceiptNotice](prov)
	_ = h.Store.Close() // every write fails from now on
	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	ce := chantest.Refusal(payer, wire.ChanInternal)
	if ce.ChanID == nil || *ce.ChanID != c.Op || ce.Seq == nil || *ce.Seq != c.Seq+1 {
		t.Fatalf("internal names %v/%v, want %v/%d", ce.ChanID, ce.Seq, c.Op, c.Seq+1)
	}
}
