package charging_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/metering"
)

// hold has the provider ask the payer for a hold of max msat, which the
// payer authorises.
func (env *chargeEnv) hold(id [16]byte, max msat.Amount) {
	env.t.Helper()
	expires := uint64(time.Now().Add(time.Hour).Unix())
	env.prov.Send(&wire.HoldRequest{HoldID: id, Payer: env.payer.ID, Max: max, Expires: expires, Memo: "ev session"})
	chantest.Expect[*wire.HoldRequest](env.payer)
	sig, err := channel.SignHold(env.payer.Key, id, env.ch.Op, env.prov.ID, max, expires)
	if err != nil {
		env.t.Fatal(err)
	}
	env.payer.Send(&wire.HoldAuthorize{HoldID: id, ChanID: env.ch.Op, Provider: env.prov.ID, Max: max, Expires: expires, Sig: sig})
	if res := chantest.Expect[*wire.HoldResult](env.prov); res.Status != wire.HoldAuthorized {
		env.t.Fatalf("hold result %+v", res)
	}
}

// payHold flushes the charges, expects a payment request for total
// against hold id and has the payer pay it, returning the hub's ack.
func (env *chargeEnv) payHold(id [16]byte, total msat.Amount) *wire.PayAck {
	env.t.Helper()
	env.chg.Flush(context.Background())
	req := chantest.Expect[*wire.PaymentRequest](env.payer)
	if req.Amount != total || req.HoldID == nil || *req.HoldID != id {
		env.t.Fatalf("payment request %+v, want %d msat against hold %x", req, total, id)
	}
	m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
	reqID := req.ReqID
	m.ReqID, m.HoldID = &reqID, req.HoldID
	env.payer.Send(m)
	ack := chantest.Expect[*wire.PayAck](env.payer)
	env.ch.Seq++
	env.ch.Paid += req.Amount
	return ack
}

// TestChargeAgainstHold: a session's last event naming its hold is
// recorded against the hold (beyond the channel's credit limit, which the
// device-signed hold covers), its payment request names the hold, the
// payment captures it, the rest is released, and the provider gets the
// session's CDR, whose total is what the channel paid, to the msat.
func TestChargeAgainstHold(t *testing.T) {
	chantest.CheckLeaks(t)
	const total = msat.Amount(3_256_000) // the ev_charging example
	env := newChargeEnv(t, 10_000)
	k := env.publish("ev_charging")
	id := [16]byte{7, 7}
	env.hold(id, 5_000_000)
	ev := env.event(k, "ev_charging", "ev-held")
	ev.Hold = &id
	ev.Attributes = map[string]string{contracts.CDRAttrCountryCode: "DE", contracts.CDRAttrPartyID: "ACM",
		contracts.CDRAttrTokenUID: "1F2D3A4B", contracts.CDRAttrLocationID: "LOC1"}
	out := env.charge(ev)
	if !out[0].Charged || out[0].Status != hub.ChargeOwed || out[0].Amount != total {
		t.Fatalf("outcome %+v, want owed %d against the hold", out[0], total)
	}

	paidBefore := env.ch.Paid
	ack := env.payHold(id, total)
	var r channel.Receipt
	if err := r.UnmarshalBinary(ack.Receipt); err != nil {
		t.Fatal(err)
	}
	if r.HoldID != id || r.Contract != k.Hash() || r.Amount != total || !r.CoversEvents([]string{"ev-held"}) {
		t.Fatalf("receipt %+v", r)
	}
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	env.chg.Flush(context.Background())

	for _, d := range []*chantest.Device{env.payer, env.prov} {
		c := chantest.Expect[*wire.HoldClosed](d)
		if c.HoldID != id || c.Captured != total || c.Reason != wire.HoldReleased {
			t.Fatalf("hold closed %+v, want released with %d captured", c, total)
		}
	}
	if _, err := env.h.Ch.Hold(context.Background(), id); err == nil {
		t.Fatal("the hold is still active")
	}
	if c := env.stored("ev-held"); c.Status != hub.ChargePaid {
		t.Fatalf("stored %+v", c)
	}
	if got := env.pub.take(charging.ProviderMsgReceipt); len(got) != 1 {
		t.Fatalf("receipts published: %+v", got)
	}
	cdrs := env.pub.take(charging.ProviderMsgCDR)
	if len(cdrs) != 1 || cdrs[0].subject != "receipts."+env.prov.ID || len(cdrs[0].msg.Events) != 1 || cdrs[0].msg.Events[0] != "ev-held" {
		t.Fatalf("CDRs published: %+v", cdrs)
	}
	var cdr contracts.CDR
	if err := json.Unmarshal(cdrs[0].msg.CDR, &cdr); err != nil {
		t.Fatal(err)
	}
	rec, err := env.h.Store.CDR(context.Background(), cdr.ID)
	if err != nil || rec.Provider != env.prov.ID || rec.Payer != env.payer.ID || rec.TotalMsat != total || string(rec.CDR) != string(cdrs[0].msg.CDR) {
		t.Fatalf("stored CDR %+v, %v", rec, err)
	}
	if cdr.M2MHub.TotalMsat != total || cdr.M2MHub.TotalMsat != r.Paid-paidBefore ||
		cdr.CountryCode != "DE" || cdr.PartyID != "ACM" || cdr.CdrToken.UID != "1F2D3A4B" || cdr.CdrLocation.ID != "LOC1" {
		t.Fatalf("CDR %+v", cdr)
	}
}

// TestChargeAgainstHoldRefusals: an event naming a hold that is unknown,
// or another provider's, is dead-lettered with RejectNoHold and charges
// nothing; a charge the hold cannot cover is owed like any other and the
// hold is released.
func TestChargeAgainstHoldRefusals(t *testing.T) {
	chantest.CheckLeaks(t)
	t.Run("RejectNoHoldUnknown", func(t *testing.T) {
		env := newChargeEnv(t, 100_000_000)
		k := env.publish("ev_charging")
		ev := env.event(k, "ev_charging", "ev-1")
		ev.Hold = &[16]byte{9}
		if out := env.charge(ev); out[0].Rejected != charging.RejectNoHold || out[0].Charged {
			t.Fatalf("outcome %+v", out[0])
		}
		if _, err := env.h.Store.Charge(context.Background(), env.prov.ID, "ev-1"); err == nil {
			t.Fatal("an event naming an unknown hold was recorded")
		}
	})
	t.Run("RejectNoHoldOtherProvider", func(t *testing.T) {
		env := newChargeEnv(t, 100_000_000)
		k := env.publish("ev_charging")
		id := [16]byte{3}
		env.hold(id, 5_000_000)
		other := env.h.Enrol(hub.RoleProvider)
		ev := env.event(k, "ev_charging", "ev-2")
		ev.Provider, ev.Hold = other.ID, &id
		if out := env.charge(ev); out[0].Rejected != charging.RejectNoHold {
			t.Fatalf("outcome %+v", out[0])
		}
		if h, err := env.h.Ch.Hold(context.Background(), id); err != nil || h.Captured != 0 {
			t.Fatalf("hold %+v, %v: another provider's event touched it", h, err)
		}
	})
	t.Run("OverHoldOwedAndReleased", func(t *testing.T) {
		env := newChargeEnv(t, 100_000_000)
		k := env.publish("ev_charging")
		id := [16]byte{4}
		env.hold(id, 1_000_000)
		ev := env.event(k, "ev_charging", "ev-3")
		ev.Hold = &id
		if out := env.charge(ev); out[0].Status != hub.ChargeOwed || out[0].Amount != 3_256_000 {
			t.Fatalf("outcome %+v", out[0])
		}
		for _, d := range []*chantest.Device{env.payer, env.prov} {
			if c := chantest.Expect[*wire.HoldClosed](d); c.HoldID != id || c.Captured != 0 {
				t.Fatalf("hold closed %+v", c)
			}
		}
		env.payRequest(3_256_000)
		if cdrs := env.pub.take(charging.ProviderMsgCDR); len(cdrs) != 0 {
			t.Fatalf("a CDR for a charge not paid against its hold: %+v", cdrs)
		}
	})
}

// TestHoldAttributeMalformed: an event whose hold attribute is not 32 hex
// does not convert (the intake dead-letters it as malformed before
// charging), and no charge is recorded for it.
func TestHoldAttributeMalformed(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	k := env.publish("ev_charging")
	h := k.Hash()
	for i, bad := range []string{"zz", "0707", strings.Repeat("0", 31) + "g", strings.Repeat("07", 17)} {
		id := fmt.Sprintf("ev-bad-%d", i)
		ev := metering.Event{ID: id, Source: env.prov.ID, Subject: env.payer.ID, Time: "2026-06-10T21:30:00Z",
			Data: metering.Data{Contract: hex.EncodeToString(h[:]), Session: "s", Start: "2026-06-10T20:30:00Z", End: "2026-06-10T21:30:00Z",
				Periods:    []metering.Period{{Start: "2026-06-10T20:30:00Z", EnergyKWh: "6", State: "charging"}},
				Attributes: map[string]string{contracts.HoldAttribute: bad}}}
		u, err := metering.ToUsage(&ev)
		if err != nil {
			t.Fatal(err)
		}
		_, err = charging.UsageOf(&ev, u)
		if metering.Reason(err) != charging.RejectMalformed || !strings.Contains(err.Error(), "hold") {
			t.Fatalf("hold %q: UsageOf error %v, want malformed", bad, err)
		}
		if _, err := env.h.Store.Charge(context.Background(), env.prov.ID, id); err == nil {
			t.Fatalf("hold %q: the event was recorded", bad)
		}
	}
}

// TestChargeAgainstHoldSplit: an EV session under a contract with a
// revenue split, charged against its hold: the captured charge is split
// as the contract says, and what the channel paid is the provider's
// rest, the site host's share and the hub's fee, to the msat, each
// payee earning its own part once the hold is captured.
func TestChargeAgainstHoldSplit(t *testing.T) {
	chantest.CheckLeaks(t)
	const total = msat.Amount(3_256_000) // the ev_charging example
	env := newChargeEnv(t, 10_000)
	host := env.h.Enrol(hub.RoleProvider)
	k := env.publishSplit("ev_charging", fmt.Sprintf(`[{"payee": %q, "bps": "1500"}]`, host.ID))
	id := [16]byte{7, 8}
	env.hold(id, 5_000_000)
	ev := env.event(k, "ev_charging", "ev-split")
	ev.Hold = &id
	if out := env.charge(ev); !out[0].Charged || out[0].Status != hub.ChargeOwed || out[0].Amount != total {
		t.Fatalf("outcome %+v, want owed %d against the hold", out[0], total)
	}
	env.payHold(id, total)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	env.chg.Flush(context.Background())
	for _, d := range []*chantest.Device{env.payer, env.prov} {
		if c := chantest.Expect[*wire.HoldClosed](d); c.HoldID != id || c.Captured != total {
			t.Fatalf("hold closed %+v, want %d captured", c, total)
		}
	}

	c := env.stored("ev-split")
	share := (c.Amount - c.Fee) * 1500 / 10_000 // floor of 15% of the provider's part
	if c.Status != hub.ChargePaid || c.Amount != total || c.Fee == 0 || share == 0 ||
		len(c.Shares) != 1 || c.Shares[0] != (hub.Share{Payee: host.ID, Msat: share}) {
		t.Fatalf("stored %+v, want paid %d with a share of %d to %s", c, total, share, host.ID)
	}
	if got := c.ProviderPart() + c.SharesTotal() + c.Fee; got != total {
		t.Fatalf("provider part %d + shares %d + fee %d = %d, want the %d captured", c.ProviderPart(), c.SharesTotal(), c.Fee, got, total)
	}
	var earned msat.Amount
	for id, part := range map[string]msat.Amount{env.prov.ID: c.ProviderPart(), host.ID: share} {
		in, err := env.chg.Income(context.Background(), id, chargeStart.Add(-24*time.Hour), chargeStart.Add(time.Hour))
		if err != nil || in.Owed != 0 || in.Earned != part {
			t.Fatalf("%s: income %+v, %v; want earned %d", id, in, err, part)
		}
		earned += in.Earned
	}
	if earned+c.Fee != total {
		t.Fatalf("earned %d + fee %d, want the %d captured", earned, c.Fee, total)
	}
	if n := env.pub.take(charging.ProviderMsgShare); len(n) != 1 || n[0].subject != "receipts."+host.ID {
		t.Fatalf("share notices %+v, want one to the host", n)
	}
}
