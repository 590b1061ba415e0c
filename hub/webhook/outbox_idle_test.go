package webhook

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestBoltClaimIdleWritesNothing pins that an idle worker's Claim (nothing
// queued, or nothing due yet) is a read: a bbolt write transaction commits
// and fsyncs even when it changes nothing, and every idle worker asks once
// per PollInterval.
func TestBoltClaimIdleWritesNothing(t *testing.T) {
	o, err := OpenBoltOutbox(filepath.Join(t.TempDir(), "outbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx := context.Background()
	now := time.Now()
	claimIdle := func(what string) {
		t.Helper()
		before := writes(o)
		for range 5 {
			if _, ok, _, err := o.Claim(ctx, now, time.Minute); err != nil || ok {
				t.Fatalf("%s: claim ok=%v err=%v, want nothing due", what, ok, err)
			}
		}
		if after := writes(o); after != before {
			t.Fatalf("%s: idle claims wrote %d pages", what, after-before)
		}
	}
	claimIdle("empty outbox")

	later := Entry{ID: "ev-1", Endpoint: "ep-1", Body: []byte(`{}`), NextAt: now.Add(time.Hour)}
	if err := o.Put(ctx, []Entry{later}); err != nil {
		t.Fatal(err)
	}
	claimIdle("one delivery due later")
	_, _, next, err := o.Claim(ctx, now, time.Minute)
	if err != nil || !next.Equal(later.NextAt) {
		t.Fatalf("next due = %v (err %v), want %v", next, err, later.NextAt)
	}
	c, ok, _, err := o.Claim(ctx, later.NextAt, time.Minute)
	if err != nil || !ok || c.Entry.ID != later.ID {
		t.Fatalf("claim when due: ok=%v id=%q err=%v, want %s", ok, c.Entry.ID, err, later.ID)
	}
}

// writes is how many pages the outbox's database has written.
func writes(o *BoltOutbox) int64 {
	st := o.db.Stats()
	return st.TxStats.GetWrite()
}
