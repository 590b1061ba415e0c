package m2mclient

import (
	"context"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// TestRouterProsumer: one Session, one Router, a Device and a Provider of
// the same identity. The device pays and authorises a hold while the
// provider asks for a hold and receives a receipt, all over the one
// connection, each message reaching the side it is for.
func TestRouterProsumer(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	// Rebuild the device next to a provider on the session's own Router,
	// which the fixture's device already reads through.
	if err := f.dev.Close(); err != nil {
		t.Fatal(err)
	}
	s := f.dev.s
	r := s.Router()
	d, err := NewDevice(s, DeviceConfig{Key: f.devKey, HubKey: f.hub.key.PubKey(),
		Params: &chaincfg.RegressionNetParams, Store: f.dev.cfg.Store, Logger: discard(),
		Router: r, AutoAuthorize: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	assumeSynced(d)
	p, err := NewProvider(s, ProviderConfig{HubKey: f.hub.key.PubKey(), Logger: discard(), Router: r})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := NewProvider(s, ProviderConfig{HubKey: f.hub.key.PubKey(), Router: otherRouter(t, f)}); err == nil {
		t.Fatal("a router of another session was accepted")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The device pays: Pay → PayAck with the hub's receipt.
	payErr := make(chan error, 1)
	go func() {
		_, err := d.Pay(ctx, f.st.Funding, "shop", 1_000_000, "")
		payErr <- err
	}()
	pay, ok := f.hub.recv(10 * time.Second).(*wire.Pay)
	if !ok || pay.Seq != f.st.Seq+1 || pay.Paid != fxPaid+1_000_000 {
		t.Fatalf("hub got %#v", pay)
	}
	// Before acknowledging, the hub forwards a receipt for the
	// provider side and a hold request for the payer side.
	earned := &channel.Receipt{Channel: f.st.Funding, Seq: 1, Payer: "car", Payee: "meter",
		Amount: 5000, Paid: 5000, Time: time.UnixMilli(1_700_000_000_000)}
	if err := earned.Sign(f.hub.key); err != nil {
		t.Fatal(err)
	}
	raw, err := earned.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f.hub.send(&wire.ReceiptNotice{Receipt: raw})
	hold := [16]byte{7}
	f.hub.send(&wire.HoldRequest{HoldID: hold, Payer: "me", Max: 2_000_000,
		Expires: uint64(time.Now().Add(time.Hour).Unix()), Provider: "charger"})

	receipt := &channel.Receipt{Channel: f.st.Funding, Seq: pay.Seq, Payer: "me", Payee: "shop",
		Amount: pay.Amount, Paid: pay.Paid, Time: time.UnixMilli(1_700_000_000_000)}
	if err := receipt.Sign(f.hub.key); err != nil {
		t.Fatal(err)
	}
	if raw, err = receipt.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	f.hub.send(&wire.PayAck{ChanID: f.st.Funding, Seq: pay.Seq, Receipt: raw})
	if auth, ok := f.hub.recv(10 * time.Second).(*wire.HoldAuthorize); !ok || auth.HoldID != hold {
		t.Fatalf("hub got %#v, want the hold authorised", auth)
	}
	if err := <-payErr; err != nil {
		t.Fatalf("pay: %v", err)
	}
	select {
	case got := <-p.Receipts():
		if got.ID() != earned.ID() {
			t.Fatal("provider got another receipt")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("provider got no receipt")
	}

	// The provider asks for a hold; its answer reaches it, not the device.
	holdErr := make(chan error, 1)
	go func() {
		_, err := p.RequestHold(ctx, "car", 3000, time.Minute, "")
		holdErr <- err
	}()
	req, ok := f.hub.recv(10 * time.Second).(*wire.HoldRequest)
	if !ok {
		t.Fatalf("hub got %#v", req)
	}
	f.hub.send(&wire.HoldResult{HoldID: req.HoldID, Status: wire.HoldAuthorized})
	if err := <-holdErr; err != nil {
		t.Fatalf("request hold: %v", err)
	}
	b, err := d.Balance(f.st.Funding)
	if err != nil || b.Paid != fxPaid+1_000_000 || b.Reserved != 2_000_000 {
		t.Fatalf("device balance %+v, %v", b, err)
	}
}

// otherRouter returns the router of a second session, to another hub,
// owned by the test.
func otherRouter(t *testing.T, f *settleFixture) *Router {
	t.Helper()
	other := startTestHub(t)
	r := NewRouter(other.dial(f.devKey), discard())
	t.Cleanup(func() { _ = r.Close() })
	return r
}
