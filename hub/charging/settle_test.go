package charging_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// gatedPublisher holds receipt messages until release is closed, telling
// entered when the first one arrives; everything else goes straight to
// the recPublisher.
type gatedPublisher struct {
	*recPublisher
	entered chan struct{}
	release chan struct{}
}

func (p *gatedPublisher) Publish(ctx context.Context, subject string, data []byte) error {
	var m struct{ Kind string }
	if err := json.Unmarshal(data, &m); err == nil && (m.Kind == charging.ProviderMsgReceipt || m.Kind == charging.ProviderMsgReceipts) {
		select {
		case p.entered <- struct{}{}:
		default:
		}
		<-p.release
	}
	return p.recPublisher.Publish(ctx, subject, data)
}

// TestSettleBesideRequests: while the receipt of a paid request is still
// being published (a JetStream write), the flusher goes on asking the
// payer for what it owes since; both charges end paid and receipted.
func TestSettleBesideRequests(t *testing.T) {
	chantest.CheckLeaks(t)
	env := newChargeEnv(t, 100_000_000)
	toll := env.publish("toll")
	pub := &gatedPublisher{recPublisher: env.pub, entered: make(chan struct{}, 1), release: make(chan struct{})}
	chg, err := charging.New(charging.Config{
		Contracts: env.h.Store, Charges: env.h.Store, Devices: env.h.Reg, Channels: env.h.Ch, Freezer: env.h.Reg,
		Publisher: pub, Clock: env.clock, FlushInterval: time.Hour, FlushThreshold: 1, Logger: chantest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	chg.Start()
	released := false
	defer func() {
		if !released {
			close(pub.release)
		}
		chg.Close()
	}()
	env.chg = chg

	pay := func(req *wire.PaymentRequest) {
		t.Helper()
		m := env.payer.PayMsg(env.ch, env.ch.Seq+1, env.ch.Paid+req.Amount, req.Amount, req.Payee)
		id := req.ReqID
		m.ReqID = &id
		env.payer.Send(m)
		chantest.Expect[*wire.PayAck](env.payer)
		env.ch.Seq++
		env.ch.Paid += req.Amount
		chantest.Expect[*wire.ReceiptNotice](env.prov)
	}
	env.charge(env.event(toll, "toll", "t-1"))
	pay(chantest.Expect[*wire.PaymentRequest](env.payer))
	<-pub.entered // t-1's receipt is being published, and stays so

	env.charge(env.event(toll, "toll", "t-2"))
	second := chantest.Expect[*wire.PaymentRequest](env.payer) // fails within 5 s when held up
	close(pub.release)
	released = true
	pay(second)
	chg.Flush(context.Background())

	events := map[string]bool{}
	for _, m := range append(env.pub.take(charging.ProviderMsgReceipt), env.pub.take(charging.ProviderMsgReceipts)...) {
		for _, id := range m.msg.Events {
			events[id] = true
		}
		for _, r := range m.msg.Receipts {
			for _, id := range r.Events {
				events[id] = true
			}
		}
	}
	for _, id := range []string{"t-1", "t-2"} {
		if c := env.stored(id); c.Status != hub.ChargePaid || !events[id] {
			t.Errorf("charge %s is %s, receipted %v", id, c.Status, events[id])
		}
	}
}

// TestChargePaidBesideFlush: the news of a paid request is taken while the
// flusher holds the payment side's lock; the payment telling it holds its
// channel's lock meanwhile, and every other payment on that channel would
// wait too.
func TestChargePaidBesideFlush(t *testing.T) {
	env := newChargeEnv(t, 1_000_000)
	unlock := charging.LockPay(env.chg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		env.chg.ChargePaid(1, []byte{1})
		env.chg.ChargeRefused(2, "refused", "no")
	}()
	select {
	case <-done:
		unlock()
	case <-time.After(10 * time.Second):
		unlock()
		<-done
		t.Fatal("the listener waited for the flusher's lock")
	}
}
