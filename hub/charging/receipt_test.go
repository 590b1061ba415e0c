package charging_test

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// unmarkedCharges is a store that cannot mark charges paid, as a hubd
// killed between publishing a receipt and marking its charges paid
// leaves them.
type unmarkedCharges struct{ hub.ChargeStore }

func (u unmarkedCharges) SetChargeStatus(ctx context.Context, provider string, ids []string, st hub.ChargeStatus, at time.Time) error {
	if st == hub.ChargePaid {
		return errors.New("killed before marking")
	}
	return u.ChargeStore.SetChargeStatus(ctx, provider, ids, st, at)
}

// downPublisher is recPublisher that fails while down is set, as NATS
// does when it is unreachable.
type downPublisher struct {
	*recPublisher
	down atomic.Bool
}

func (p *downPublisher) Publish(ctx context.Context, subject string, data []byte) error {
	if p.down.Load() {
		return errors.New("nats: no servers available")
	}
	return p.recPublisher.Publish(ctx, subject, data)
}

// payTwo charges bw-a and bw-b through env.chg, which asks for them, and
// the payer pays; it returns the payment's receipt.
func (env *chargeEnv) payTwo() []byte {
	env.t.Helper()
	_, req := env.askTwo(env.publish("bandwidth"))
	env.answer(req)
	ack := chantest.Expect[*wire.PayAck](env.payer)
	chantest.Expect[*wire.ReceiptNotice](env.prov)
	env.chg.Flush(context.Background())
	return ack.Receipt
}

// assertPaidOnce checks that bw-a and bw-b are paid, by one payment.
func (env *chargeEnv) assertPaidOnce() {
	env.t.Helper()
	for _, id := range []string{"bw-a", "bw-b"} {
		if st := env.stored(id).Status; st != hub.ChargePaid {
			env.t.Fatalf("%s is %s, want paid", id, st)
		}
	}
	rec, err := env.h.Store.Channel(context.Background(), env.ch.Op)
	if err != nil {
		env.t.Fatal(err)
	}
	if rec.Seq != env.ch.Seq+1 || rec.Owed != 0 {
		env.t.Fatalf("channel at seq %d owed %d, want one payment (seq %d), owed 0", rec.Seq, rec.Owed, env.ch.Seq+1)
	}
	env.payerHearsNothing()
}

// assertReceipts checks that the provider was published n receipt
// messages, each the payment's receipt for bw-a and bw-b.
func (env *chargeEnv) assertReceipts(n int, receipt []byte) {
	env.t.Helper()
	got := env.pub.take(charging.ProviderMsgReceipt)
	if len(got) != n {
		env.t.Fatalf("published %d receipts, want %d", len(got), n)
	}
	for _, m := range got {
		if m.msg.Receipt != hex.EncodeToString(receipt) || !slices.Equal(slices.Sorted(slices.Values(m.msg.Events)), []string{"bw-a", "bw-b"}) {
			env.t.Fatalf("published %+v, want the payment's receipt for bw-a and bw-b", m.msg)
		}
	}
}

// TestChargingKilledAfterPublishingReceipt: the hubd that heard the payment
// publishes the receipt and dies before marking the charges paid. The
// receipt is not lost: another hubd, claiming the owed charges once the
// dead one's claims lapse, finds the payment stored, publishes the same
// receipt again (the same message: JetStream and the provider's Meter
// count it once) and marks the charges paid; the payer is not asked again,
// and a later scan publishes nothing.
func TestChargingKilledAfterPublishingReceipt(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	if err := env.chg.Close(); err != nil {
		t.Fatal(err)
	}
	env.chg = env.newCharging(testInstance, func(c *charging.Config) { c.Charges = unmarkedCharges{env.h.Store} })
	receipt := env.payTwo()
	env.assertReceipts(1, receipt)
	for _, id := range []string{"bw-a", "bw-b"} {
		if st := env.stored(id).Status; st != hub.ChargeOwed {
			t.Fatalf("%s is %s before the other hubd runs, want owed", id, st)
		}
	}
	// The dead hubd's claims lapse: released in the store as expiry would.
	if err := env.h.Store.ReleaseCharges(context.Background(), env.prov.ID, []string{"bw-a", "bw-b"}, testInstance); err != nil {
		t.Fatal(err)
	}
	b := env.newCharging("hubd-other")
	charging.ScanOwed(context.Background(), b)
	env.assertReceipts(1, receipt)
	env.assertPaidOnce()
	charging.ScanOwed(context.Background(), b)
	env.assertReceipts(0, receipt)
}

// TestChargingUnpublishedReceiptLeftToScan: the receipt cannot be
// published (NATS down). The charges are not marked paid and their claims
// are released; once NATS is back, the next scan publishes the stored
// payment's receipt and marks them paid, without asking the payer again.
func TestChargingUnpublishedReceiptLeftToScan(t *testing.T) {
	env := newChargeEnv(t, 100_000_000)
	if err := env.chg.Close(); err != nil {
		t.Fatal(err)
	}
	pub := &downPublisher{recPublisher: env.pub}
	pub.down.Store(true)
	env.chg = env.newCharging(testInstance, func(c *charging.Config) { c.Publisher = pub })
	receipt := env.payTwo()
	for _, id := range []string{"bw-a", "bw-b"} {
		if st := env.stored(id).Status; st != hub.ChargeOwed {
			t.Fatalf("%s is %s with its receipt unpublished, want owed", id, st)
		}
	}
	got, err := env.h.Store.ClaimCharges(context.Background(), env.prov.ID, []string{"bw-a", "bw-b"}, "probe", time.Second)
	if err != nil || !slices.Equal(got, []bool{true, true}) {
		t.Fatalf("claiming the unpublished charges: %v (%v), want both free", got, err)
	}
	if err := env.h.Store.ReleaseCharges(context.Background(), env.prov.ID, []string{"bw-a", "bw-b"}, "probe"); err != nil {
		t.Fatal(err)
	}

	pub.down.Store(false)
	charging.ScanOwed(context.Background(), env.chg)
	env.assertReceipts(1, receipt)
	env.assertPaidOnce()
}
