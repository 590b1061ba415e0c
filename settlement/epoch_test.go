package settlement

import (
	"errors"
	"testing"
	"time"
)

func TestEpochCut(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e := FirstEpoch(t0, 100)
	rule := CutRule{Period: time.Hour, Blocks: 6}

	if rule.Due(e, t0.Add(59*time.Minute), 105) {
		t.Fatal("due before the period and the block count")
	}
	if !rule.Due(e, t0.Add(time.Hour), 100) {
		t.Fatal("not due after the period")
	}
	if !rule.Due(e, t0, 106) {
		t.Fatal("not due after 6 blocks")
	}
	if (CutRule{}).Due(e, t0.Add(1000*time.Hour), 1_000_000) {
		t.Fatal("a rule with neither period nor blocks is due (on demand only)")
	}
	if at, ok := rule.NextCut(e); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Fatalf("NextCut = %v, %v", at, ok)
	}

	cutAt := t0.Add(30 * time.Minute) // on demand, before the rule is due
	closed, next, err := e.Cut(cutAt, 103)
	if err != nil {
		t.Fatal(err)
	}
	if closed.Open() || !next.Open() || next.Number != 2 || !next.Start.Equal(cutAt) || next.StartHeight != 103 {
		t.Fatalf("cut: closed %+v next %+v", closed, next)
	}
	// No gap and no overlap: a payment at the cut instant belongs to the
	// next epoch only, one just before to the closed one only.
	for _, c := range []struct {
		at           time.Time
		inOld, inNew bool
	}{
		{cutAt.Add(-time.Nanosecond), true, false},
		{cutAt, false, true},
		{cutAt.Add(time.Hour), false, true},
	} {
		if closed.Contains(c.at) != c.inOld || next.Contains(c.at) != c.inNew {
			t.Errorf("payment at %v: closed %v next %v", c.at, closed.Contains(c.at), next.Contains(c.at))
		}
	}
	if rule.Due(closed, t0.Add(5*time.Hour), 500) {
		t.Fatal("a closed epoch is due")
	}
	if _, _, err := closed.Cut(cutAt, 103); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("second cut: %v", err)
	}
	if _, _, err := next.Cut(cutAt.Add(-time.Second), 103); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("cut before start: %v", err)
	}
}

func TestRunStateMachine(t *testing.T) {
	all := []RunState{RunPlanned, RunSigning, RunSigned, RunBroadcast, RunConfirmed, RunFailed, RunReplaced}
	allowed := map[[2]RunState]bool{
		{RunPlanned, RunSigning}:     true,
		{RunPlanned, RunFailed}:      true,
		{RunSigning, RunSigned}:      true,
		{RunSigning, RunPlanned}:     true, // redo the round with fresh nonces
		{RunSigning, RunFailed}:      true,
		{RunSigned, RunBroadcast}:    true,
		{RunSigned, RunFailed}:       true,
		{RunBroadcast, RunConfirmed}: true,
		{RunBroadcast, RunReplaced}:  true,
		{RunConfirmed, RunBroadcast}: true, // reorg
	}
	t0 := time.Unix(1_800_000_000, 0)
	for _, from := range all {
		for _, to := range all {
			want := allowed[[2]RunState{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("%s → %s: %v, want %v", from, to, got, want)
			}
			r := NewRun(Epoch{Number: 3}, 1, t0)
			r.State = from
			err := r.Transition(to, t0.Add(time.Second))
			switch {
			case want && err != nil:
				t.Errorf("%s → %s: %v", from, to, err)
			case !want && !errors.Is(err, ErrBadTransition):
				t.Errorf("%s → %s: %v, want ErrBadTransition", from, to, err)
			case !want && r.State != from:
				t.Errorf("%s → %s refused but state changed to %s", from, to, r.State)
			case want && (r.State != to || !r.Entered[to].Equal(t0.Add(time.Second))):
				t.Errorf("%s → %s: state %s entered %v", from, to, r.State, r.Entered[to])
			}
		}
	}
	for _, s := range all {
		if s.Final() != (s == RunFailed || s == RunReplaced) {
			t.Errorf("%s.Final() = %v", s, s.Final())
		}
	}

	// The happy path, with one redone round and one reorg.
	r := NewRun(Epoch{Number: 4}, 1, t0)
	for i, s := range []RunState{RunSigning, RunPlanned, RunSigning, RunSigned, RunBroadcast, RunConfirmed, RunBroadcast, RunConfirmed} {
		if err := r.Transition(s, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatalf("step %d → %s: %v", i, s, err)
		}
	}
}
