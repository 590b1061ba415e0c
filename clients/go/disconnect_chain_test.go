package m2mclient_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/internal/wire"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/authmsg"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/msgfault"
	"github.com/m2mhub/m2mhub/settlement"
)

// The exchanges that move money on chain or create identities: enrol,
// fund, close and the settlement round.

// enrolCase enrols a fresh key with a token over a connection that drops
// at b (the device's Enrol, or the hub's Init answering it) and checks the
// key ends up enrolled exactly once, with a live session.
func (w *disconnectWorld) enrolCase(t *testing.T, b boundary) {
	t.Helper()
	ctx := t.Context()
	key := hubtest.NewKey(t)
	tok, err := authmsg.SignToken(w.operator, authmsg.Token{
		ID: "enrol " + b.String(), Roles: []string{string(hub.RolePayer)}, Expires: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	pt := new(msgfault.Point)
	var fired atomic.Bool
	if b.hub {
		// The hub's Init to a device it has just enrolled: any device
		// but the world's own two.
		w.setHubHook(func(id string, send bool, msg wire.Message) (bool, bool) {
			if !send || msg.MsgType() != wire.MsgInit || id == w.devID || id == w.provID || !fired.CompareAndSwap(false, true) {
				return false, false
			}
			return b.before, !b.before
		})
		defer w.restoreHubHook()
	} else {
		pt.Arm(b.send, b.k, b.before)
	}
	// Dial retries a dropped first connection with the same token.
	sess := w.h.Dial(t, key, m2mclient.WithEnrolToken(tok), m2mclient.WithFault(pt))
	if !pt.Fired() && !fired.Load() {
		t.Fatalf("enrol/%s: the connection never dropped", b)
	}
	devs, err := w.h.Registry().Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, d := range devs {
		if d.Key == hub.PubKeyOf(key.PubKey()) {
			if id != "" {
				t.Fatalf("enrol/%s: key enrolled twice, as %s and %s", b, id, d.ID)
			}
			id = d.ID
		}
	}
	if id == "" {
		t.Fatalf("enrol/%s: key not enrolled", b)
	}
	w.h.WaitSession(t, id)
	if !sess.Connected() {
		hubtest.WaitFor(t, 5*time.Second, "enrolled device connected", sess.Connected)
	}
	_ = sess.Close()
}

// restoreHubHook puts back the hub-side hook that drops the world's
// device's session.
func (w *disconnectWorld) restoreHubHook() {
	w.setHubHook(func(id string, send bool, msg wire.Message) (bool, bool) {
		if id != w.devID {
			return false, false
		}
		return w.hubFault.At(send, msg)
	})
}

// fundCase opens and funds a channel, confirms the funding, names it to
// the hub over a connection that drops at b, and checks that naming it
// again makes it ready on both sides, and that it pays.
func (w *disconnectWorld) fundCase(t *testing.T, b boundary) {
	t.Helper()
	ctx := t.Context()
	const capacity btcutil.Amount = 100_000
	pc, err := w.dev.OpenChannel(ctx, capacity, w.h.Height(t)+hubtest.DefaultExpiryDelta)
	if err != nil {
		t.Fatal(err)
	}
	txid, err := w.h.Wallet().Send(ctx, pc.Address, capacity)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := w.h.LookupTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	op := btcwire.OutPoint{Hash: txid, Index: uint32(fundingIndex(t, tx, pc.PkScript))}
	// One block is the regtest depth: the hub makes the channel ready
	// as soon as it is named.
	w.h.Mine(t, 1)
	what := w.dropAt(t, "fund", b, func(ctx context.Context) { _, _ = w.dev.Funded(ctx, pc.PendingID, op) })
	w.h.WaitSession(t, w.devID)
	var ch *m2mclient.Channel
	for range 50 {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ch, err = w.dev.Funded(fctx, pc.PendingID, op)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: funded again: %v", what, err)
	}
	rec := hubState(t, w.h, ch)
	if ch.Status != m2mclient.StatusReady || rec.Status != hub.ChannelReady || rec.Capacity != capacity || ch.Capacity != capacity {
		t.Fatalf("%s: device channel %s of %d sat, hub %s of %d sat", what, ch.Status, int64(ch.Capacity), rec.Status, int64(rec.Capacity))
	}
	w.ch = ch
	w.settle(t, what)
}

func fundingIndex(t *testing.T, tx *btcwire.MsgTx, pkScript []byte) int {
	t.Helper()
	for i, out := range tx.TxOut {
		if bytes.Equal(out.PkScript, pkScript) {
			return i
		}
	}
	t.Fatalf("funding %s does not pay the channel", tx.TxHash())
	return 0
}

// closeCase opens a channel, pays on it, closes it cooperatively over a
// connection that drops at b, and checks the close completes: a close the
// drop interrupted before the device signed is asked for again, one the
// device signed it resumes by itself. Both sides then record the same
// close transaction, which pays on chain what the records say.
func (w *disconnectWorld) closeCase(t *testing.T, b boundary) {
	t.Helper()
	ctx := t.Context()
	w.ch = w.h.OpenChannel(t, w.dev, 100_000)
	// A hub share large enough to take its own output.
	w.payAgain(t, "before close "+b.String(), 20_000_000)
	dest := hubtest.P2TR(t)
	what := w.dropAt(t, "close", b, func(ctx context.Context) { _, _ = w.dev.CloseChannel(ctx, w.ch.ID, dest) })
	w.h.WaitSession(t, w.devID)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := deviceChannel(t, w.dev, w.ch)
		if c.Status == m2mclient.StatusClosed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: device channel still %s", what, c.Status)
		}
		if c.Status == m2mclient.StatusReady {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = w.dev.CloseChannel(cctx, w.ch.ID, dest)
			cancel()
			continue
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := deviceChannel(t, w.dev, w.ch)
	rec := hubState(t, w.h, w.ch)
	if rec.Status != hub.ChannelClosing && rec.Status != hub.ChannelClosed || rec.CloseTx == nil || c.CloseTx == nil || *rec.CloseTx != *c.CloseTx {
		t.Fatalf("%s: hub channel %s closed by %v, device by %v", what, rec.Status, rec.CloseTx, c.CloseTx)
	}
	w.agree(t, what)
	w.h.Mine(t, 1)
	tx, err := w.h.LookupTx(ctx, *c.CloseTx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tx.TxIn) != 1 || tx.TxIn[0].PreviousOutPoint != w.ch.ID {
		t.Fatalf("%s: close does not spend the channel alone", what)
	}
	var out int64
	for _, o := range tx.TxOut {
		out += o.Value
	}
	owed := int64(rec.Capacity - rec.Paid.ToSatoshis())
	mine := hubtest.OutputPaying(tx, dest)
	fee := int64(rec.Capacity) - out
	switch {
	case fee <= 0 || fee > 10_000:
		t.Fatalf("%s: close fee %d sat", what, fee)
	case len(tx.TxOut) == 2 && mine != owed:
		t.Fatalf("%s: close pays the device %d sat, owed %d", what, mine, owed)
	case len(tx.TxOut) == 1 && mine+fee != int64(rec.Capacity):
		t.Fatalf("%s: close pays the device %d sat and %d sat of fee of %d", what, mine, fee, int64(rec.Capacity))
	}
}

// settleCase pays on the channel, runs a settlement round while the
// connection drops at b, and checks that the channel moved to its next
// output worth exactly capacity less paid, that both sides follow it, and
// that the device pays on it.
func (w *disconnectWorld) settleCase(t *testing.T, b boundary) {
	t.Helper()
	ctx := t.Context()
	// Enough to be worth settling, and a hub fee that pays the batch's
	// mining fee.
	w.payAgain(t, "before settle "+b.String(), 20_000_000)
	now := time.Now()
	if _, err := w.h.Store().RecordCharges(ctx, []hub.Charge{{
		Provider: w.provID, EventID: "fee " + b.String(), Payer: w.devID, Amount: 2_000_000, Fee: 2_000_000,
		Channel: w.ch.ID, Status: hub.ChargePaid, EventTime: now, Charged: now,
	}}, 1<<40); err != nil {
		t.Fatal(err)
	}
	w.agree(t, "before settle "+b.String())
	old := deviceChannel(t, w.dev, w.ch)
	var r settlement.Run
	var err error
	what := w.dropAt(t, "settle", b, func(context.Context) {
		r, err = w.settler.Settle(ctx)
		w.waitFired(t, b)
	})
	if err != nil {
		t.Fatalf("%s: settle: %v", what, err)
	}
	r = w.st.Confirm(t, w.settler, r.Epoch.Number)
	var next btcwire.OutPoint
	var value int64
	for _, raw := range r.Txs {
		tx := new(btcwire.MsgTx)
		if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
		for i, in := range tx.TxIn {
			if in.PreviousOutPoint == old.ID {
				next, value = btcwire.OutPoint{Hash: tx.TxHash(), Index: uint32(i)}, tx.TxOut[i].Value
			}
		}
	}
	if want := int64(old.Capacity - old.Paid.ToSatoshis()); value != want {
		t.Fatalf("%s: next channel %v worth %d sat, want %d (capacity %d, paid %d msat)",
			what, next, value, want, int64(old.Capacity), uint64(old.Paid))
	}
	var ch *m2mclient.Channel
	hubtest.WaitFor(t, 10*time.Second, what+": device follows the settlement", func() bool {
		for _, c := range w.dev.Channels() {
			if c.ID == next && c.Status == m2mclient.StatusReady {
				ch = c
				return true
			}
		}
		return false
	})
	if ch.Capacity != btcutil.Amount(value) || ch.Seq != 0 {
		t.Fatalf("%s: device's next channel %d sat at seq %d", what, int64(ch.Capacity), ch.Seq)
	}
	w.ch = ch
	if rec := hubState(t, w.h, ch); rec.Capacity != ch.Capacity || rec.Status != hub.ChannelReady {
		t.Fatalf("%s: hub's next channel %s of %d sat", what, rec.Status, int64(rec.Capacity))
	}
	w.settle(t, what)
}
