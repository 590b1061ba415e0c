package m2mclient

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// startPay has the device pay amount on chanID in the background and
// returns the Pay the hub received and where Pay's error will arrive.
func (f *settleFixture) startPay(t *testing.T, chanID btcwire.OutPoint, amount msat.Amount) (*wire.Pay, chan error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := f.dev.Pay(context.Background(), chanID, "prov", amount, "")
		errc <- err
	}()
	pay, ok := f.hub.recv(10 * time.Second).(*wire.Pay)
	if !ok {
		t.Fatal("device sent no Pay")
	}
	return pay, errc
}

// payRefused has the device pay amount, refuses the Pay with code as the
// hub does (naming the channel and seq) and returns Pay's error.
func (f *settleFixture) payRefused(t *testing.T, code wire.ChanCode, amount msat.Amount) error {
	t.Helper()
	pay, errc := f.startPay(t, f.st.Funding, amount)
	seq := pay.Seq
	f.hub.send(&wire.ChannelError{Code: code, Message: "test", ChanID: &pay.ChanID, Seq: &seq})
	return <-errc
}

// TestPayRefusalReactions: the client surfaces each refusal as an error
// matching its kind, drops the signed state on every refusal that the hub
// gives before storing anything, and keeps it pending only after
// "internal", whose outcome is unknown.
func TestPayRefusalReactions(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	for _, tc := range []struct {
		code      wire.ChanCode
		is        error
		temporary bool
	}{
		{wire.ChanClosing, ErrClosing, true},
		{wire.ChanBusy, ErrBusy, true},
		{wire.ChanRateLimited, ErrRateLimited, true},
		{wire.ChanOverCapacity, nil, false},
		{wire.ChanHoldActive, ErrHoldActive, false},
	} {
		err := f.payRefused(t, tc.code, 1_000)
		var ce *ChannelError
		if !errors.As(err, &ce) || ce.Code != string(tc.code) {
			t.Fatalf("%s: Pay returned %v", tc.code, err)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: errors.Is(%v) is false", tc.code, tc.is)
		}
		if errors.Is(err, ErrTemporary) != tc.temporary || ce.Temporary() != tc.temporary {
			t.Errorf("%s: temporary %v, want %v", tc.code, ce.Temporary(), tc.temporary)
		}
		for _, other := range []error{ErrClosing, ErrBusy, ErrRateLimited, ErrHoldActive, ErrCreditOwed, ErrPayerOffline} {
			if other != tc.is && errors.Is(err, other) {
				t.Errorf("%s also matches %v", tc.code, other)
			}
		}
		if b, _ := f.dev.Balance(f.st.Funding); b.Unconfirmed != 0 || b.Paid != fxPaid {
			t.Fatalf("%s: after the refusal the device holds %+v", tc.code, b)
		}
	}

	// "internal": the hub may have stored it, so it stays pending and the
	// next Pay sends it again first.
	if err := f.payRefused(t, wire.ChanInternal, 2_000); !errors.Is(err, ErrTemporary) {
		t.Fatalf("internal: %v", err)
	}
	if b, _ := f.dev.Balance(f.st.Funding); b.Unconfirmed != 2_000 {
		t.Fatalf("internal: device holds %+v, want the payment pending", b)
	}
	// The Pay runs to its end before the test does: it saves the
	// device's store as it drops each refused state, and a save racing
	// the test's cleanup of the store's directory fails the cleanup.
	payDone := make(chan error, 1)
	go func() {
		_, err := f.dev.Pay(context.Background(), f.st.Funding, "prov", 3_000, "")
		payDone <- err
	}()
	again, ok := f.hub.recv(10 * time.Second).(*wire.Pay)
	if !ok || again.Seq != f.st.Seq+1 || again.Amount != 2_000 {
		t.Fatalf("the next Pay sent %+v first, want the pending one again", again)
	}
	// Answer it so the Device can close.
	seq := again.Seq
	f.hub.send(&wire.ChannelError{Code: wire.ChanOverCapacity, ChanID: &again.ChanID, Seq: &seq})
	if third, ok := f.hub.recv(10 * time.Second).(*wire.Pay); ok {
		s := third.Seq
		f.hub.send(&wire.ChannelError{Code: wire.ChanOverCapacity, ChanID: &third.ChanID, Seq: &s})
	}
	select {
	case err := <-payDone:
		var ce *ChannelError
		if !errors.As(err, &ce) || ce.Code != string(wire.ChanOverCapacity) {
			t.Fatalf("the next Pay returned %v, want its over-capacity refusal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the next Pay did not return")
	}
}

// TestCloseRefusalReactions: a close refused for active holds or owed
// credit says so in errors.Is terms, and neither is worth retrying as is.
func TestCloseRefusalReactions(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	for code, want := range map[wire.ChanCode]error{wire.ChanHoldActive: ErrHoldActive, wire.ChanCreditOwed: ErrCreditOwed} {
		errc := make(chan error, 1)
		go func() {
			_, err := f.dev.CloseChannel(context.Background(), f.st.Funding, f.out.PkScript())
			errc <- err
		}()
		req, ok := f.hub.recv(10 * time.Second).(*wire.CloseRequest)
		if !ok {
			t.Fatal("device sent no CloseRequest")
		}
		f.hub.send(&wire.ChannelError{Code: code, Message: "test", ChanID: &req.ChanID})
		err := <-errc
		if !errors.Is(err, want) || errors.Is(err, ErrTemporary) {
			t.Fatalf("%s: CloseChannel returned %v", code, err)
		}
		if b, err := f.dev.Balance(f.st.Funding); err != nil || b.Paid != fxPaid {
			t.Fatalf("%s: balance %+v, %v", code, b, err)
		}
	}
}

// TestSettleDoneDuringPay: SettleDone may arrive between a request and its
// answer (docs/protocol.md §3.4). A Pay in flight on the settled channel is
// refused "closed" and dropped, the device follows the notice, and pays on
// the next channel from seq 1.
func TestSettleDoneDuringPay(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	done := f.claimDone()
	next := done.NextOutpoint

	pay, errc := f.startPay(t, f.st.Funding, 1_000)
	// The batch was broadcast just before the Pay arrived (the device was
	// absent from the round): the notice, then the refusal.
	f.hub.send(done)
	seq := pay.Seq
	f.hub.send(&wire.ChannelError{Code: wire.ChanClosed, Message: "channel is closed", ChanID: &pay.ChanID, Seq: &seq})
	var ce *ChannelError
	if err := <-errc; !errors.As(err, &ce) || ce.Code != CodeChannelClosed {
		t.Fatalf("Pay in flight returned %v, want closed", err)
	}
	waitUntil(t, func() bool { _, err := f.dev.Balance(next); return err == nil })
	if b, _ := f.dev.Balance(next); b.Paid != 0 || b.Unconfirmed != 0 {
		t.Fatalf("next channel %+v", b)
	}

	p2, errc := f.startPay(t, next, 1_000)
	if p2.ChanID != next || p2.Seq != 1 || p2.Paid != 1_000 {
		t.Fatalf("payment after the switch: %+v", p2)
	}
	s2 := p2.Seq
	f.hub.send(&wire.ChannelError{Code: wire.ChanOverCapacity, ChanID: &next, Seq: &s2})
	<-errc
}

// TestRequestHoldReactions: a provider draws a fresh id when the hub finds
// its id in use, and reports an offline payer as a temporary refusal.
func TestRequestHoldReactions(t *testing.T) {
	noLeaks(t)
	h := startTestHub(t)
	key, _ := btcec.NewPrivateKey()
	p, err := NewProvider(h.dial(key), ProviderConfig{HubKey: h.key.PubKey(), Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	request := func() (chan HoldID, chan error) {
		ids, errc := make(chan HoldID, 1), make(chan error, 1)
		go func() {
			id, err := p.RequestHold(context.Background(), "payer", 5_000, time.Hour, "")
			ids <- id
			errc <- err
		}()
		return ids, errc
	}

	ids, errc := request()
	first, ok := h.recv(10 * time.Second).(*wire.HoldRequest)
	if !ok {
		t.Fatal("provider sent no HoldRequest")
	}
	h.send(&wire.HoldResult{HoldID: first.HoldID, Status: wire.HoldRefused, Code: wire.ChanHoldIDInUse, Message: "hold id in use"})
	second, ok := h.recv(10 * time.Second).(*wire.HoldRequest)
	if !ok || second.HoldID == first.HoldID || second.Max != first.Max || second.Payer != first.Payer {
		t.Fatalf("after hold-id-in-use the provider sent %+v", second)
	}
	h.send(&wire.HoldResult{HoldID: second.HoldID, Status: wire.HoldAuthorized})
	if id, err := <-ids, <-errc; err != nil || id != HoldID(second.HoldID) {
		t.Fatalf("RequestHold = %v, %v; want %v", id, err, HoldID(second.HoldID))
	}

	ids, errc = request()
	req, ok := h.recv(10 * time.Second).(*wire.HoldRequest)
	if !ok {
		t.Fatal("provider sent no HoldRequest")
	}
	h.send(&wire.HoldResult{HoldID: req.HoldID, Status: wire.HoldRefused, Code: wire.ChanPayerOffline, Message: "payer is not connected"})
	<-ids
	if err := <-errc; !errors.Is(err, ErrHoldRefused) || !errors.Is(err, ErrPayerOffline) || !errors.Is(err, ErrTemporary) {
		t.Fatalf("payer offline: %v", err)
	}
	if m := h.recv(200 * time.Millisecond); m != nil {
		t.Fatalf("provider retried a refusal on its own: %T", m)
	}
}

// TestCloseProposalChecks: the device signs a close only in the layout
// docs/protocol.md §2.7 gives; in particular no lock time and no relative
// lock can keep its share out of reach.
func TestCloseProposalChecks(t *testing.T) {
	d := &Device{cfg: DeviceConfig{MaxCloseFee: 500}}
	var funding btcwire.OutPoint
	funding.Hash[0] = 1
	st := &ChannelState{Funding: funding, Capacity: 100_000, Paid: 30_000_500}
	dest, hubScript := []byte{0x51, 0x20, 1}, []byte{0x51, 0x20, 2}
	good := func() *btcwire.MsgTx {
		tx := btcwire.NewMsgTx(2)
		tx.AddTxIn(btcwire.NewTxIn(&funding, nil, nil))
		tx.AddTxOut(btcwire.NewTxOut(70_000, dest))
		tx.AddTxOut(btcwire.NewTxOut(29_800, hubScript))
		return tx
	}
	if err := d.checkProposal(good(), st, dest); err != nil {
		t.Fatalf("the specified layout refused: %v", err)
	}
	dropped := good()
	dropped.TxOut = dropped.TxOut[:1]
	dropped.TxOut[0].Value = 69_600 // the hub's share went to the fee, 400 sat short
	if err := d.checkProposal(dropped, st, dest); err != nil {
		t.Fatalf("hub share dropped into the fee refused: %v", err)
	}
	for name, mutate := range map[string]func(*btcwire.MsgTx){
		"LockTime":     func(tx *btcwire.MsgTx) { tx.LockTime = 800_000 },
		"RelativeLock": func(tx *btcwire.MsgTx) { tx.TxIn[0].Sequence = 144 },
		"Version1":     func(tx *btcwire.MsgTx) { tx.Version = 1 },
		"OtherInput":   func(tx *btcwire.MsgTx) { tx.TxIn[0].PreviousOutPoint.Index = 1 },
		"SecondInput":  func(tx *btcwire.MsgTx) { tx.AddTxIn(btcwire.NewTxIn(&funding, nil, nil)) },
		"DeviceShort":  func(tx *btcwire.MsgTx) { tx.TxOut[0].Value-- },
		"ThirdOutput":  func(tx *btcwire.MsgTx) { tx.AddTxOut(btcwire.NewTxOut(1, hubScript)) },
		"NoDeviceOut":  func(tx *btcwire.MsgTx) { tx.TxOut[0].PkScript = hubScript },
		"FeeOverLimit": func(tx *btcwire.MsgTx) { tx.TxOut = tx.TxOut[:1]; tx.TxOut[0].Value = 69_499 },
		"OverCapacity": func(tx *btcwire.MsgTx) { tx.TxOut[1].Value = 30_001 },
	} {
		tx := good()
		mutate(tx)
		if err := d.checkProposal(tx, st, dest); !errors.Is(err, ErrBadProposal) {
			t.Errorf("%s: %v, want ErrBadProposal", name, err)
		}
	}
}

// TestHoldAuthorizeRefusedDuringPay: the hub's refusal of a hold the device
// authorised (hold and channel named, no seq) makes the device forget the
// hold, and is not taken for the answer to a Pay waiting on the same
// channel.
func TestHoldAuthorizeRefusedDuringPay(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{AutoAuthorize: true})
	pay, errc := f.startPay(t, f.st.Funding, 1_000)
	hold := [16]byte{7}
	f.hub.send(&wire.HoldRequest{HoldID: hold, Payer: "dev", Provider: "prov", Max: 5_000,
		Expires: uint64(time.Now().Add(time.Hour).Unix())})
	if _, ok := f.hub.recv(10 * time.Second).(*wire.HoldAuthorize); !ok {
		t.Fatal("device did not authorise the hold")
	}
	if b, _ := f.dev.Balance(f.st.Funding); b.Reserved != 5_000 {
		t.Fatalf("reserved %d after authorising", b.Reserved)
	}
	f.hub.send(&wire.ChannelError{Code: wire.ChanBadSignature, Message: "hold authorisation signature does not verify",
		HoldID: &hold, ChanID: &f.st.Funding})
	seq := pay.Seq
	f.hub.send(&wire.ChannelError{Code: wire.ChanOverCapacity, ChanID: &pay.ChanID, Seq: &seq})
	var ce *ChannelError
	if err := <-errc; !errors.As(err, &ce) || ce.Code != CodeOverCapacity {
		t.Fatalf("Pay returned %v, want its own over-capacity refusal", err)
	}
	waitUntil(t, func() bool { b, _ := f.dev.Balance(f.st.Funding); return b.Reserved == 0 })
}

// TestCloseUnknownReopens: the hub signs last, so when it answers the
// device's CloseSign with close-unknown (it restarted, or the attempt
// lapsed) the device's partial signature spends nothing. The device marks
// the channel ready again, durably, and CloseChannel returns the refusal.
func TestCloseUnknownReopens(t *testing.T) {
	noLeaks(t)
	f := newSettleFixture(t, DeviceConfig{})
	dest := f.out.PkScript()
	errc := make(chan error, 1)
	go func() {
		_, err := f.dev.CloseChannel(context.Background(), f.st.Funding, dest)
		errc <- err
	}()
	req, ok := f.hub.recv(10 * time.Second).(*wire.CloseRequest)
	if !ok {
		t.Fatal("device sent no CloseRequest")
	}
	hs, err := f.out.NewKeySession(f.hubKey)
	if err != nil {
		t.Fatal(err)
	}
	tx := btcwire.NewMsgTx(2)
	tx.AddTxIn(btcwire.NewTxIn(&f.st.Funding, nil, nil))
	owed := fxCapacity - fxPaid.ToSatoshis()
	tx.AddTxOut(btcwire.NewTxOut(int64(owed), dest))
	tx.AddTxOut(btcwire.NewTxOut(int64(fxCapacity-owed)-300, []byte{0x51, 0x20, 2}))
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		t.Fatal(err)
	}
	f.hub.send(&wire.CloseProposal{ChanID: req.ChanID, Tx: raw.Bytes(), HubNonce: hs.PublicNonce()})
	if _, ok := f.hub.recv(10 * time.Second).(*wire.CloseSign); !ok {
		t.Fatal("device sent no CloseSign")
	}
	stored := func() ChannelState {
		fs, err := NewFileStore(f.dir)
		if err != nil {
			t.Fatal(err)
		}
		all, err := fs.Load(context.Background())
		if err != nil || len(all) != 1 {
			t.Fatalf("store holds %d channels: %v", len(all), err)
		}
		return all[0]
	}
	if st := stored(); st.Status != StatusClosing || st.CloseSig == nil || st.CloseTx == nil || *st.CloseTx != tx.TxHash() {
		t.Fatalf("before CloseSign the store says %s, close %v", st.Status, st.CloseTx)
	}
	f.hub.send(&wire.ChannelError{Code: wire.ChanCloseUnknown, Message: "test", ChanID: &req.ChanID})
	var ce *ChannelError
	if err := <-errc; !errors.As(err, &ce) || ce.Code != CodeCloseUnknown {
		t.Fatalf("CloseChannel returned %v, want close-unknown", err)
	}
	if st := stored(); st.Status != StatusReady || st.CloseSig != nil || st.CloseTx != nil || st.Paid != fxPaid {
		t.Fatalf("after close-unknown the store says %s paid %d close %v", st.Status, st.Paid, st.CloseTx)
	}
	if b, err := f.dev.Balance(f.st.Funding); err != nil || b.Paid != fxPaid {
		t.Fatalf("balance %+v, %v", b, err)
	}
}
