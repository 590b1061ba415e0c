package m2mclient_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// copyDir copies the regular files of src into a fresh directory: a backup
// of a device's FileStore, taken while the device is stopped.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// hubState reads the hub's durable record of a channel.
func hubState(t *testing.T, h *hubtest.Hub, ch *m2mclient.Channel) hub.ChannelRecord {
	t.Helper()
	rec, err := h.Store().Channel(t.Context(), ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// deviceChannel returns the device's snapshot of channel id.
func deviceChannel(t *testing.T, d *m2mclient.Device, ch *m2mclient.Channel) *m2mclient.Channel {
	t.Helper()
	for _, c := range d.Channels() {
		if c.ID == ch.ID {
			return c
		}
	}
	t.Fatalf("device has no channel %v", ch.ID)
	return nil
}

// TestRestoredStoreResumes is the device data-loss trial: a device's store
// is copied, the device pays on, the old copy is restored and the device
// restarted; it resumes at the hub's state (learnt at connect, proven by its
// own signature) and pays again, and the payments its old copy did not know
// count against its hourly policy.
func TestRestoredStoreResumes(t *testing.T) {
	h := startE2E(t)
	ctx := t.Context()
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	_, provID, _ := enrol(t, h, hub.RoleProvider)
	dir := t.TempDir()
	policy := m2mclient.Policy{MaxPerHour: 20_000}
	start := func(dir string) (*m2mclient.Session, *m2mclient.Device) {
		s := h.Dial(t, devKey)
		h.WaitSession(t, devID)
		return s, h.NewDevice(t, s, devKey, m2mclient.DeviceConfig{Dir: dir, Policy: policy})
	}

	s1, d1 := start(dir)
	ch := h.OpenChannel(t, d1, 100_000)
	if _, err := d1.Pay(ctx, ch.ID, provID, 1_000, "before the backup"); err != nil {
		t.Fatal(err)
	}
	_ = d1.Close()
	_ = s1.Close()
	backup := copyDir(t, dir)

	s2, d2 := start(dir)
	for range 3 {
		if _, err := d2.Pay(ctx, ch.ID, provID, 3_000, "after the backup"); err != nil {
			t.Fatal(err)
		}
	}
	_ = d2.Close()
	_ = s2.Close()
	want := hubState(t, h, ch)
	if want.Seq != 4 || want.Paid != 10_000 {
		t.Fatalf("hub at seq %d paid %d", want.Seq, uint64(want.Paid))
	}

	// The old copy comes back: it knows seq 1 only.
	// It learns the hub's state by itself at connect, before any payment.
	_, d3 := start(backup)
	hubtest.WaitFor(t, 10*time.Second, "restored device at the hub's state", func() bool {
		got := deviceChannel(t, d3, ch)
		return got.Seq == want.Seq && got.Paid == want.Paid
	})
	if err := d3.Sync(ctx); err != nil {
		t.Fatalf("sync: %v", err)
	}
	// 9,000 msat it did not know of now count as spent this hour: 20,000
	// allows 11,000 more, not 12,000.
	if _, err := d3.Pay(ctx, ch.ID, provID, 12_000, ""); !errors.Is(err, m2mclient.ErrPolicy) {
		t.Fatalf("pay over the reconstructed hourly limit: %v", err)
	}
	r, err := d3.Pay(ctx, ch.ID, provID, 2_000, "after the restore")
	if err != nil {
		t.Fatalf("pay after the restore: %v", err)
	}
	if r.Seq != 5 || r.Paid != 12_000 {
		t.Fatalf("receipt seq %d paid %d", r.Seq, uint64(r.Paid))
	}
	if rec := hubState(t, h, ch); rec.Seq != 5 || rec.Paid != 12_000 {
		t.Fatalf("hub at seq %d paid %d", rec.Seq, uint64(rec.Paid))
	}
	b, err := d3.Balance(ch.ID)
	if err != nil || b.Paid != 12_000 || b.Unconfirmed != 0 {
		t.Fatalf("balance %+v, %v", b, err)
	}
}

// TestRestoredStorePaysWithoutSync: a restored device that pays before the
// answer to its connect-time sync arrived learns the hub's state in that
// Pay (the first Pay on a loaded channel asks for it), adopts it and pays
// on top of it in the same call.
func TestRestoredStorePaysWithoutSync(t *testing.T) {
	h := startE2E(t)
	ctx := t.Context()
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	_, provID, _ := enrol(t, h, hub.RoleProvider)
	dir := t.TempDir()

	s1 := h.Dial(t, devKey)
	d1 := h.NewDevice(t, s1, devKey, m2mclient.DeviceConfig{Dir: dir})
	ch := h.OpenChannel(t, d1, 100_000)
	_ = d1.Close()
	backup := copyDir(t, dir)
	d2 := h.NewDevice(t, s1, devKey, m2mclient.DeviceConfig{Dir: dir})
	for range 2 {
		if _, err := d2.Pay(ctx, ch.ID, provID, 5_000, ""); err != nil {
			t.Fatal(err)
		}
	}
	_ = d2.Close()

	// Offline first, so no sync at start: the first Pay is stale.
	d3 := h.NewDevice(t, nil, devKey, m2mclient.DeviceConfig{Dir: backup})
	_ = d3.Close()
	h.WaitSession(t, devID)
	d4 := h.NewDevice(t, s1, devKey, m2mclient.DeviceConfig{Dir: backup})
	r, err := d4.Pay(ctx, ch.ID, provID, 1_000, "")
	if err != nil || r == nil {
		// Before resynchronisation the device took the hub's
		// "stale-state" for its own payment and returned no receipt.
		t.Fatalf("pay: receipt %v, %v", r, err)
	}
	if r.Seq != 3 || r.Paid != 11_000 {
		t.Fatalf("receipt seq %d paid %d", r.Seq, uint64(r.Paid))
	}
}

// TestForgedHubStateRefused: a "latest state" whose signature is not the
// device's own is not adopted, by Sync or by a Pay it answers; the device
// keeps its record.
func TestForgedHubStateRefused(t *testing.T) {
	h := startE2E(t)
	ctx := t.Context()
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	_, provID, _ := enrol(t, h, hub.RoleProvider)
	s := h.Dial(t, devKey)
	d := h.NewDevice(t, s, devKey, m2mclient.DeviceConfig{})
	ch := h.OpenChannel(t, d, 100_000)
	if _, err := d.Pay(ctx, ch.ID, provID, 1_000, ""); err != nil {
		t.Fatal(err)
	}

	// The hub's store gains a state at seq 2 signed by another key over
	// the right digest, as a dishonest hub would present it.
	rec := hubState(t, h, ch)
	hubChanKey, err := btcec.ParsePubKey(rec.HubKey[:])
	if err != nil {
		t.Fatal(err)
	}
	out, err := channel.NewOutput(channel.Params{
		DeviceKey: devKey.PubKey(), HubKey: hubChanKey, Capacity: rec.Capacity, Expiry: rec.Expiry,
	})
	if err != nil {
		t.Fatal(err)
	}
	forged := channel.State{ChannelID: ch.ID, Seq: 2, Paid: 90_000_000}
	digest, err := out.ClaimSigHash(forged)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := schnorr.Sign(hubtest.NewKey(t), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Store().ApplyPayment(ctx, hub.PaymentUpdate{
		Channel: ch.ID, Seq: 2, Paid: forged.Paid, DeviceSig: [64]byte(sig.Serialize()),
		Amount: forged.Paid - rec.Paid, Time: rec.UpdatedAt,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.RestartHub(t) // the hub's cache reloads the store
	h.WaitSession(t, devID)
	// Until the device has reconnected, Sync fails with a transport
	// error; after, it must refuse the forged state.
	var err2 error
	hubtest.WaitFor(t, 10*time.Second, "sync answered", func() bool {
		err2 = d.Sync(ctx)
		var ce *m2mclient.ChannelError
		return err2 == nil || errors.Is(err2, m2mclient.ErrForgedState) || errors.As(err2, &ce)
	})
	if !errors.Is(err2, m2mclient.ErrForgedState) {
		t.Fatalf("sync: %v, want ErrForgedState", err2)
	}
	if _, err := d.Pay(ctx, ch.ID, provID, 1_000, ""); !errors.Is(err, m2mclient.ErrForgedState) {
		t.Fatalf("pay: %v, want ErrForgedState", err)
	}
	got := deviceChannel(t, d, ch)
	if got.Seq != 1 || got.Paid != msat.Amount(1_000) {
		t.Fatalf("device moved to seq %d paid %d", got.Seq, uint64(got.Paid))
	}
}

// TestLostPendingSameAmountNotMistaken: a device whose store lost the
// pending and acknowledged records of a payment the hub holds (the writes
// a power loss undoes before their fsync) and that pays the same amount
// again, to another provider, does not take the hub's state (same seq,
// same paid) for that new payment: its first Pay on the loaded channel
// learns the hub's state before signing, and the new payment is a real
// one, on top of it, with its own receipt.
func TestLostPendingSameAmountNotMistaken(t *testing.T) {
	h := startE2E(t)
	ctx := t.Context()
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	_, prov1, _ := enrol(t, h, hub.RoleProvider)
	_, prov2, _ := enrol(t, h, hub.RoleProvider)
	dir := t.TempDir()

	s1 := h.Dial(t, devKey)
	d1 := h.NewDevice(t, s1, devKey, m2mclient.DeviceConfig{Dir: dir})
	ch := h.OpenChannel(t, d1, 100_000)
	_ = d1.Close()
	lost := copyDir(t, dir) // the store as it was before the payment
	d2 := h.NewDevice(t, s1, devKey, m2mclient.DeviceConfig{Dir: dir})
	if _, err := d2.Pay(ctx, ch.ID, prov1, 5_000, ""); err != nil {
		t.Fatal(err)
	}
	_ = d2.Close()

	// Offline first, so no connect-time sync: only the Pay can learn.
	d3 := h.NewDevice(t, nil, devKey, m2mclient.DeviceConfig{Dir: lost})
	_ = d3.Close()
	h.WaitSession(t, devID)
	d4 := h.NewDevice(t, s1, devKey, m2mclient.DeviceConfig{Dir: lost})
	r, err := d4.Pay(ctx, ch.ID, prov2, 5_000, "")
	if err != nil || r == nil {
		// Without the sync before signing, the hub's state (seq 1,
		// 5000 msat) matched the new pending payment and was taken for
		// it: no receipt, and prov2 never paid.
		t.Fatalf("pay: receipt %v, %v", r, err)
	}
	if r.Seq != 2 || r.Paid != 10_000 || r.Payee != prov2 {
		t.Fatalf("receipt seq %d paid %d payee %q", r.Seq, uint64(r.Paid), r.Payee)
	}
	if rec := hubState(t, h, ch); rec.Seq != 2 || rec.Paid != 10_000 {
		t.Fatalf("hub at seq %d paid %d", rec.Seq, uint64(rec.Paid))
	}
}
