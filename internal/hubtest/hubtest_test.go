package hubtest_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// TestMain checks that the hub, btcd's client and the sessions the harness
// starts leave no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRestartHub: a restarted hub keeps its address, key, registry and
// channels, so a connected device reconnects by itself and pays on.
func TestRestartHub(t *testing.T) {
	h := hubtest.Start(t, hubtest.Config{})
	ctx := t.Context()
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	_, provID := h.EnrolDevice(t, hub.RoleProvider)
	sess := h.Dial(t, devKey)
	d := h.NewDevice(t, sess, devKey, m2mclient.DeviceConfig{})
	ch := h.OpenChannel(t, d, 50_000)
	if _, err := d.Pay(ctx, ch.ID, provID, 1_500, ""); err != nil {
		t.Fatal(err)
	}
	addr, srv := h.Addr(), h.Server()

	h.RestartHub(t)
	if h.Addr() != addr || h.Server() == srv || h.Server().Addr().String() != addr {
		t.Fatalf("restarted on %s (server %p), was %s (%p)", h.Server().Addr(), h.Server(), addr, srv)
	}
	h.WaitSession(t, devID)
	hubtest.WaitFor(t, 5*time.Second, "client reconnected", sess.Connected)
	rec, err := h.Store().Channel(ctx, ch.ID)
	if err != nil || rec.Seq != 1 || rec.Paid != 1_500 {
		t.Fatalf("stored channel after restart: %+v, %v", rec, err)
	}
	r, err := d.Pay(ctx, ch.ID, provID, 500, "")
	if err != nil || r.Seq != 2 || r.Paid != 2_000 {
		t.Fatalf("pay after restart: %+v, %v", r, err)
	}

	h.StopHub(t)
	if h.Store() != nil || h.Server() != nil {
		t.Fatal("accessors still return the stopped run's instances")
	}
	if _, err := d.Pay(ctx, ch.ID, provID, 500, ""); err == nil {
		t.Fatal("paid with the hub stopped")
	}
}

// TestRawConnReplacesSession: a raw connection of a device's key takes
// over its session and reads the hub's exact answers.
func TestRawConnReplacesSession(t *testing.T) {
	h := hubtest.Start(t, hubtest.Config{})
	key, id := h.EnrolDevice(t, hub.RolePayer)
	sess := h.Dial(t, key)
	rc := h.RawConn(t, key, id)
	hubtest.WaitFor(t, 5*time.Second, "old session replaced", func() bool { return sess.Err() != nil })
	var re *m2mclient.RefusedError
	if !errors.As(sess.Err(), &re) || re.Code != m2mclient.CodeReplaced {
		t.Fatalf("old session ended with %v", sess.Err())
	}
	rc.Close()
}
