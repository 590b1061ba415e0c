package channels_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// shiftClock is the wall clock moved forward by what the test asks, so a
// close attempt can lapse without waiting for it while the watcher's
// polling still runs on real time.
type shiftClock struct {
	mu    sync.Mutex
	ahead time.Duration
}

func (c *shiftClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.ahead)
}

func (c *shiftClock) TickAfter(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *shiftClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ahead += d
}

// TestAbandonedCloseSpendsNothing: a device that asks for a close, signs
// its part without sending it, and pays on once the attempt has lapsed must
// hold nothing that spends the channel at the old state. Before the hub
// signed last, the CloseProposal carried the hub's partial signature, so
// such a device could combine a close paying the hub only what it had been
// paid before the later payments, and broadcast it.
func TestAbandonedCloseSpendsNothing(t *testing.T) {
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	clk := &shiftClock{}
	h := chantest.NewHarness(t, f, func(c *channels.Config) { c.Clock = clk })
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	payer.Pay(c, 20_000_000, prov.ID)
	chantest.Expect[*wire.ReceiptNotice](prov)

	// The device signs its part of the close but keeps it.
	cs := deviceSignClose(t, payer, c, hubtest.P2TR(t), 100_000-20_000)
	clk.advance(channels.DefaultCloseTimeout + time.Second)
	payer.Pay(c, 30_000_000, prov.ID)
	chantest.Expect[*wire.ReceiptNotice](prov)

	payer.Send(cs)
	chantest.Refusal(payer, wire.ChanCloseUnknown)
	f.Mu.Lock()
	sent := len(f.Sent)
	f.Mu.Unlock()
	if sent != 0 {
		t.Fatalf("%d transactions broadcast for a lapsed close", sent)
	}
	rec, err := h.Ch.Channel(context.Background(), c.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != hub.ChannelReady || rec.Paid != 50_000_000 || rec.CloseTx != nil {
		t.Fatalf("channel %s paid %d close %v, want ready at 50000000 with no close", rec.Status, rec.Paid, rec.CloseTx)
	}
}

// TestCloseRecordedBeforeBroadcast: with the node refusing broadcasts, a
// completed close is still recorded (channel closing, the signed
// transaction kept) so no payment slips in, and the watcher sends it again
// once the node is back.
func TestCloseRecordedBeforeBroadcast(t *testing.T) {
	f, h, payer, prov, c, closed := closedWithNodeDown(t)
	rec, err := h.Ch.Channel(context.Background(), c.Op)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != hub.ChannelClosing || rec.CloseTx == nil || *rec.CloseTx != closed.Txid || len(rec.CloseRaw) == 0 {
		t.Fatalf("channel %s close %v with %d bytes stored", rec.Status, rec.CloseTx, len(rec.CloseRaw))
	}
	payer.Send(payer.PayMsg(c, c.Seq+1, c.Paid+1_000, 1_000, prov.ID))
	chantest.Refusal(payer, wire.ChanClosed)

	f.Mu.Lock()
	f.SendErr = nil
	f.Mu.Unlock()
	hubtest.WaitFor(t, 10*time.Second, "the recorded close broadcast again", func() bool {
		f.Mu.Lock()
		defer f.Mu.Unlock()
		return len(f.Sent) == 1 && f.Sent[0].TxHash() == closed.Txid
	})
}

// TestRecordedCloseSpentElsewhere: a recorded close the node never took,
// whose channel output another transaction spent (the device's refund), is
// not sent again for ever: the channel moves to closed.
func TestRecordedCloseSpentElsewhere(t *testing.T) {
	f, h, _, _, c, _ := closedWithNodeDown(t)
	f.Mu.Lock()
	delete(f.Outs, c.Op)
	f.Mu.Unlock()
	hubtest.WaitFor(t, 10*time.Second, "the channel closed", func() bool {
		rec, err := h.Ch.Channel(context.Background(), c.Op)
		return err == nil && rec.Status == hub.ChannelClosed
	})
}

// closedWithNodeDown pays 30,000 sat on a 100,000 sat channel and closes it
// cooperatively while the node refuses every broadcast.
func closedWithNodeDown(t *testing.T) (*chantest.FakeChain, *chantest.Harness, *chantest.Device, *chantest.Device, *chantest.Channel, *wire.ChannelClosed) {
	t.Helper()
	chantest.CheckLeaks(t)
	f := chantest.NewFakeChain(chantest.TestHeight)
	h := chantest.NewHarness(t, f, nil)
	payer := h.Enrol(hub.RolePayer)
	prov := h.Enrol(hub.RoleProvider)
	c := payer.Open(f, 100_000, chantest.TestHeight+500)
	payer.Pay(c, 30_000_000, prov.ID)
	chantest.Expect[*wire.ReceiptNotice](prov)
	f.Mu.Lock()
	f.SendErr = errors.New("node down")
	f.Mu.Unlock()
	closed := deviceClose(t, payer, c, hubtest.P2TR(t), 100_000-30_000)
	return f, h, payer, prov, c, closed
}
