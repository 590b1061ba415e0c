package channels_test

import (
	"context"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/storetest"
)

// TestStartReloadsActiveHolds: a manager started on a store that holds
// active holds from an earlier run (found through the store's
// ActiveHolds) expires the ones past their time in its first watcher
// round, on every channel, and leaves the others active.
func TestStartReloadsActiveHolds(t *testing.T) {
	chantest.CheckLeaks(t)
	ctx := context.Background()
	st, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var past, future []hub.Hold
	for i := range 3 {
		c := storetest.NewChannel(t, "dev")
		storetest.MustPutChannel(t, st, c)
		p := storetest.NewHold(t, c.Funding, c.DeviceID, 10_000)
		p.Expires = time.Now().Add(-time.Minute)
		f := storetest.NewHold(t, c.Funding, c.DeviceID, 10_000)
		f.Expires = time.Now().Add(time.Hour)
		for _, h := range []hub.Hold{p, f} {
			if err := st.PutHold(ctx, h); err != nil {
				t.Fatalf("channel %d: %v", i, err)
			}
		}
		past, future = append(past, p), append(future, f)
	}

	m := chantest.StartManager(t, st)
	defer m.Close()
	for i := range past {
		if h, err := st.Hold(ctx, past[i].ID); err != nil || h.Status != hub.HoldExpired {
			t.Fatalf("channel %d: hold past its time is %q after the first round (%v), want expired", i, h.Status, err)
		}
		if h, err := st.Hold(ctx, future[i].ID); err != nil || h.Status != hub.HoldActive {
			t.Fatalf("channel %d: hold within its time is %q (%v), want active", i, h.Status, err)
		}
	}
}
