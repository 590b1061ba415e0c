package m2mclient_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// startE2E runs the shared in-process hub: bbolt store, registry, BOLT 8
// server and channel manager on a real btcd regtest node.
func startE2E(t *testing.T) *hubtest.Hub { return hubtest.Start(t, hubtest.Config{}) }

// enrol registers a key with roles and opens its session.
func enrol(t *testing.T, h *hubtest.Hub, roles ...hub.Role) (*btcec.PrivateKey, string, *m2mclient.Session) {
	t.Helper()
	key, id := h.EnrolDevice(t, roles...)
	return key, id, h.Dial(t, key)
}

func TestDeviceAgainstHub(t *testing.T) {
	e := startE2E(t)
	ctx := t.Context()
	devKey, devID, devSess := enrol(t, e, hub.RolePayer)
	_, provID, provSess := enrol(t, e, hub.RoleProvider)

	dir := t.TempDir()
	newDevice := func(s *m2mclient.Session) *m2mclient.Device {
		d, err := m2mclient.NewDevice(s, m2mclient.DeviceConfig{
			Key: devKey, HubKey: e.PubKey(), Params: e.Params(), Dir: dir,
			Policy: m2mclient.Policy{
				MaxPerPayment: 2_000_000, MaxPerHour: 10_000_000,
				AllowedProviders: []string{provID}, MaxHold: 3_000_000,
			},
			AutoAuthorize: true, Logger: e.Logger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := newDevice(devSess)
	t.Cleanup(func() { _ = d.Close() })
	prov, err := m2mclient.NewProvider(provSess, m2mclient.ProviderConfig{HubKey: e.PubKey(), Logger: e.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Close() })

	const capacity = 100_000
	ch := e.OpenChannelAt(t, d, capacity, e.Height(t)+50)
	if ch.Status != m2mclient.StatusReady {
		t.Fatalf("channel %s", ch.Status)
	}

	t.Run("Pay", func(t *testing.T) {
		var paid msat.Amount
		for i, amt := range []msat.Amount{1_500, 250_000, 1_000_000} {
			r, err := d.Pay(ctx, ch.ID, provID, amt, "kWh")
			if err != nil {
				t.Fatalf("pay %d: %v", i, err)
			}
			paid += amt
			if r.Seq != uint64(i+1) || r.Paid != paid || r.Amount != amt || r.Payee != provID {
				t.Fatalf("receipt %d: %+v", i, r)
			}
			select {
			case pr := <-prov.Receipts():
				if pr.ID() != r.ID() {
					t.Fatalf("provider got receipt %x, device %x", pr.ID(), r.ID())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("provider got no receipt")
			}
		}
		b, err := d.Balance(ch.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b.Paid != paid || b.Available != msat.FromSatoshis(capacity-330)-paid {
			t.Fatalf("balance %+v", b)
		}
		hist, err := d.History(ctx, ch.ID)
		if err != nil || len(hist) != 3 {
			t.Fatalf("history: %d receipts, %v", len(hist), err)
		}
	})

	t.Run("ErrPolicy", func(t *testing.T) {
		if _, err := d.Pay(ctx, ch.ID, provID, 2_000_001, ""); !errors.Is(err, m2mclient.ErrPolicy) {
			t.Fatalf("over per-payment: %v", err)
		}
		if _, err := d.Pay(ctx, ch.ID, "dev-stranger", 1, ""); !errors.Is(err, m2mclient.ErrPolicy) {
			t.Fatalf("not allowed: %v", err)
		}
	})

	t.Run("HoldCapture", func(t *testing.T) {
		before, _ := d.Balance(ch.ID)
		id, err := prov.RequestHold(ctx, devID, 2_000_000, time.Hour, "charging")
		if err != nil {
			t.Fatalf("RequestHold: %v", err)
		}
		if err := prov.Capture(ctx, id, 700_000, "7 kWh"); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-prov.Receipts():
			if r.Amount != 700_000 || r.HoldID != id {
				t.Fatalf("capture receipt %+v", r)
			}
		case e := <-prov.Errors():
			t.Fatalf("capture refused: %v", e)
		case <-time.After(10 * time.Second):
			t.Fatal("no receipt for the capture")
		}
		if err := prov.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			b, _ := d.Balance(ch.ID)
			return b.Reserved == 0 && b.Paid == before.Paid+700_000
		})

		// Over MaxHold: the device refuses, the provider hears so.
		if _, err := prov.RequestHold(ctx, devID, 3_000_001, time.Hour, ""); !errors.Is(err, m2mclient.ErrHoldRefused) {
			t.Fatalf("hold over MaxHold: %v", err)
		}
	})

	t.Run("Restart", func(t *testing.T) {
		// A second Device over the same directory sees the same channel.
		before, _ := d.Balance(ch.ID)
		off := newDevice(nil)
		defer off.Close()
		after, err := off.Balance(ch.ID)
		if err != nil || after != before {
			t.Fatalf("reloaded balance %+v (%v), want %+v", after, err, before)
		}
	})

	t.Run("Resync", func(t *testing.T) {
		// What a crash leaves behind: a signed state saved as pending
		// but never sent (a), or sent and acknowledged with the PayAck
		// lost (b). A restarted device resolves it before paying again.
		_ = d.Close()
		store, err := m2mclient.NewFileStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		load := func() m2mclient.ChannelState {
			sts, err := store.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range sts {
				if st.Funding == ch.ID {
					return st
				}
			}
			t.Fatal("channel not stored")
			return m2mclient.ChannelState{}
		}
		st := load()
		out, err := channel.NewOutput(st.Params(devKey.PubKey()))
		if err != nil {
			t.Fatal(err)
		}
		next := channel.State{ChannelID: ch.ID, Seq: st.Seq + 1, Paid: st.Paid + 3_000}
		sig, err := out.SignClaim(devKey, next)
		if err != nil {
			t.Fatal(err)
		}
		st.Pending = &m2mclient.PendingPayment{Seq: next.Seq, Paid: next.Paid, Amount: 3_000, Payee: provID, Sig: [64]byte(sig.Serialize())}
		if err := store.Save(ctx, st); err != nil {
			t.Fatal(err)
		}
		d = newDevice(devSess)
		if b, _ := d.Balance(ch.ID); b.Unconfirmed != 3_000 {
			t.Fatalf("pending not reloaded: %+v", b)
		}
		r, err := d.Pay(ctx, ch.ID, provID, 1_000, "")
		if err != nil {
			t.Fatalf("pay after restart with an unsent state: %v", err)
		}
		if r.Seq != next.Seq+1 || r.Paid != next.Paid+1_000 {
			t.Fatalf("unsent state not resent first: receipt seq %d paid %d", r.Seq, r.Paid)
		}

		// (b): roll the record back one state, with that state pending.
		_ = d.Close()
		acked := load()
		rolled := acked
		rolled.Seq, rolled.Paid = acked.Seq-1, acked.Paid-1_000
		rolled.Pending = &m2mclient.PendingPayment{Seq: acked.Seq, Paid: acked.Paid, Amount: 1_000, Payee: provID, Sig: acked.Sig}
		if err := store.Save(ctx, rolled); err != nil {
			t.Fatal(err)
		}
		d = newDevice(devSess)
		r, err = d.Pay(ctx, ch.ID, provID, 500, "")
		if err != nil {
			t.Fatalf("pay after restart with an acknowledged pending state: %v", err)
		}
		if r.Seq != acked.Seq+1 || r.Paid != acked.Paid+500 {
			t.Fatalf("acknowledged state not adopted: receipt seq %d paid %d", r.Seq, r.Paid)
		}
		for len(prov.Receipts()) > 0 {
			<-prov.Receipts()
		}
	})

	t.Run("Latency", func(t *testing.T) {
		const n = 300
		lat := make([]time.Duration, n)
		for i := range lat {
			t0 := time.Now()
			if _, err := d.Pay(ctx, ch.ID, provID, 1, ""); err != nil {
				t.Fatal(err)
			}
			lat[i] = time.Since(t0)
			select {
			case <-prov.Receipts():
			default:
			}
		}
		slices.Sort(lat)
		t.Logf("Pay round trip over loopback incl. fsyncs, %d payments: p50 %v p99 %v", n, lat[n/2], lat[n*99/100])
	})

	t.Run("CloseChannel", func(t *testing.T) {
		b, _ := d.Balance(ch.ID)
		dest := hubtest.P2TR(t)
		tx, err := d.CloseChannel(ctx, ch.ID, dest)
		if err != nil {
			t.Fatalf("CloseChannel: %v", err)
		}
		if _, err := e.Node().Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		info, err := e.Chain().GetTx(ctx, tx.TxHash())
		if err != nil || info.Confirmations < 1 {
			t.Fatalf("close tx not confirmed: %v %+v", err, info)
		}
		var got int64 = -1
		for _, out := range info.Tx.TxOut {
			if string(out.PkScript) == string(dest) {
				got = out.Value
			}
		}
		if want := int64(capacity - b.Paid.ToSatoshis()); got != want {
			t.Fatalf("device got %d sat on chain, want %d", got, want)
		}
		if _, err := d.Pay(ctx, ch.ID, provID, 1, ""); !errors.Is(err, m2mclient.ErrNotReady) {
			t.Fatalf("pay after close: %v", err)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	hubtest.WaitFor(t, 10*time.Second, "condition", cond)
}

// TestRefundWithHubGone: the device recovers its channel alone after
// expiry, with the hub stopped and no session (invariant I3).
func TestRefundWithHubGone(t *testing.T) {
	e := startE2E(t)
	ctx := t.Context()
	devKey, _, devSess := enrol(t, e, hub.RolePayer)
	_, provID, provSess := enrol(t, e, hub.RoleProvider)
	dir := t.TempDir()
	cfg := m2mclient.DeviceConfig{Key: devKey, HubKey: e.PubKey(), Params: e.Params(), Dir: dir, Logger: e.Logger()}
	d, err := m2mclient.NewDevice(devSess, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const capacity = 50_000
	expiry := e.Height(t) + 12
	ch := e.OpenChannelAt(t, d, capacity, expiry)
	if _, err := d.Pay(ctx, ch.ID, provID, 5_000, ""); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	_ = devSess.Close()
	// Sessions first: a client that redials while the server is closing
	// holds Server.Close up for the handshake timeout.
	_ = provSess.Close()
	e.StopHub(t)

	off, err := m2mclient.NewDevice(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	dest := hubtest.P2TR(t)
	// Before expiry the refund is time-locked: a node either refuses it
	// or (btcd on regtest, which relays non-standard transactions) keeps
	// it in the mempool without mining it.
	txid, err := off.BroadcastRefund(ctx, e.Chain(), ch.ID, dest, 1_000)
	early := err == nil
	if err != nil && !errors.Is(err, btcdchain.ErrRejected) {
		t.Fatalf("refund before expiry: %v", err)
	}
	if early {
		if _, err := e.Node().Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if n, err := e.Chain().Confirmations(ctx, txid); err != nil || n != 0 {
			t.Fatalf("refund mined before expiry: %d confirmations, %v", n, err)
		}
	}
	for e.Height(t) < expiry {
		if _, err := e.Node().Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if !early {
		if txid, err = off.BroadcastRefund(ctx, e.Chain(), ch.ID, dest, 1_000); err != nil {
			t.Fatalf("refund after expiry: %v", err)
		}
	}
	if _, err := e.Node().Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	info, err := e.Chain().GetTx(ctx, txid)
	if err != nil || info.Confirmations < 1 {
		t.Fatalf("refund not confirmed after expiry: %v %+v", err, info)
	}
	if got := info.Tx.TxOut[0].Value; got != capacity-1_000 {
		t.Fatalf("refund pays %d sat, want %d", got, capacity-1_000)
	}
}
