package m2mclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// lateTimer is a context whose deadline has passed while its own timer has
// not yet marked it done: the moment in which a socket deadline set from
// it fires first.
type lateTimer struct{ context.Context }

func (lateTimer) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }
func (lateTimer) Err() error                  { return nil }

// TestCutShort pins what connectRetry counts as an attempt cut short by its
// context (which leaves the count of closed handshakes as it was): a
// timeout at the context's deadline is one, even before the context says
// it is done, so a wrong pinned key is still named at the deadline.
func TestCutShort(t *testing.T) {
	timeout := fmt.Errorf("noise handshake: read: %w", os.ErrDeadlineExceeded)
	refused := errors.New("connection refused")
	done, cancel := context.WithCancel(context.Background())
	cancel()
	live, stop := context.WithTimeout(context.Background(), time.Hour)
	defer stop()
	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"ctx done", done, refused, true},
		{"timeout at the deadline, ctx not yet done", lateTimer{context.Background()}, timeout, true},
		{"other error at the deadline", lateTimer{context.Background()}, refused, false},
		{"timeout before the deadline", live, timeout, false},
		{"no deadline", context.Background(), timeout, false},
	} {
		if got := cutShort(c.ctx, c.err); got != c.want {
			t.Errorf("%s: cutShort = %v, want %v", c.name, got, c.want)
		}
	}
}
