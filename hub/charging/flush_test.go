package charging_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// stalledChannels is the channel manager with one payer's payment
// requests held until release closes, as a routed request waits for a
// stalled holder (natsroute: up to 3 attempts of 2 s).
type stalledChannels struct {
	charging.Channels
	payer   string
	asked   chan struct{} // closed when the stalled payer's request arrives
	release chan struct{}
}

func (s *stalledChannels) RequestPayment(ctx context.Context, r hub.PaymentRequest) (uint64, error) {
	if r.Payer == s.payer {
		close(s.asked)
		select {
		case <-s.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.Channels.RequestPayment(ctx, r)
}

// notePublisher is recPublisher that also hands every receipt message to
// receipts.
type notePublisher struct {
	recPublisher
	receipts chan charging.ProviderMessage
}

func (p *notePublisher) Publish(ctx context.Context, subject string, data []byte) error {
	if err := p.recPublisher.Publish(ctx, subject, data); err != nil {
		return err
	}
	var m charging.ProviderMessage
	if err := json.Unmarshal(data, &m); err == nil && m.Kind == charging.ProviderMsgReceipt {
		p.receipts <- m
	}
	return nil
}

// TestStalledRequestHoldsUpNoOtherPayer: while one payer's payment request
// waits (its holder is stalled), the flusher still asks the other payer,
// settles its payment and publishes its receipt; the stalled payer is
// paid once its request goes through.
func TestStalledRequestHoldsUpNoOtherPayer(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.CreditLimit = 100_000_000 })
	slow, quick := h.Enrol(hub.RolePayer), h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	slowCh := slow.Open(f, 1_000_000, chantest.TestHeight+500)
	quickCh := quick.Open(f, 1_000_000, chantest.TestHeight+500)
	chans := &stalledChannels{Channels: h.Ch, payer: slow.ID, asked: make(chan struct{}), release: make(chan struct{})}
	pub := &notePublisher{receipts: make(chan charging.ProviderMessage, 4)}
	// FlushThreshold 1: every recorded charge kicks the flusher.
	chg, err := charging.New(charging.Config{
		Contracts: h.Store, Charges: h.Store, Devices: h.Reg, Channels: chans, Freezer: h.Reg,
		Publisher: pub, Clock: clock.NewTestClock(chargeStart), FlushInterval: time.Hour, FlushThreshold: 1,
		Logger: chantest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &chargeEnv{t: t, h: h, chg: chg, prov: prov, payer: slow}
	k := env.publish("toll")
	chg.Start()
	defer chg.Close()

	slowEv, quickEv := env.event(k, "toll", "slow-1"), env.event(k, "toll", "quick-1")
	slowEv.Payer, quickEv.Payer = slow.ID, quick.ID
	if out := env.charge(slowEv); out[0].Status != hub.ChargeOwed {
		t.Fatalf("slow payer's charge %+v", out[0])
	}
	<-chans.asked
	env.charge(quickEv)

	pay := func(d *chantest.Device, c *chantest.Channel, event string) {
		t.Helper()
		req := chantest.Expect[*wire.PaymentRequest](d)
		m := d.PayMsg(c, c.Seq+1, c.Paid+req.Amount, req.Amount, req.Payee)
		m.ReqID = &req.ReqID
		d.Send(m)
		chantest.Expect[*wire.PayAck](d)
		chantest.Expect[*wire.ReceiptNotice](prov)
		select {
		case m := <-pub.receipts:
			if len(m.Events) != 1 || m.Events[0] != event {
				t.Fatalf("receipt for %v, want %s", m.Events, event)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no receipt for %s", event)
		}
	}
	pay(quick, quickCh, "quick-1")
	close(chans.release)
	pay(slow, slowCh, "slow-1")
	chg.Flush(t.Context()) // the receipts are told before the charges are marked paid
	for _, id := range []string{"slow-1", "quick-1"} {
		if c := env.stored(id); c.Status != hub.ChargePaid {
			t.Fatalf("%s is %s", id, c.Status)
		}
	}
}
