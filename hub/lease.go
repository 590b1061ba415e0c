package hub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrNotLeader is returned when an instance that does not hold the
// settlement lease is asked to do the leader's work (a settlement run).
var ErrNotLeader = errors.New("hub: not the settlement leader")

// ErrFenced is returned by a settlement write whose fencing token is not
// the one of the live settlement lease: the writer lost the lease (it
// expired, or another instance took it), so the write is refused whole.
// It wraps ErrNotLeader.
var ErrFenced = fmt.Errorf("%w: fencing token refused", ErrNotLeader)

// Leader is a settlement lease as stored: the instance that holds it, the
// fencing token issued with its acquisition (every acquisition issues a
// larger one) and when it expires unless renewed.
type Leader struct {
	Instance string    `json:"instance"`
	Token    uint64    `json:"token"`
	Expires  time.Time `json:"expires"`
}

// LeaderLease elects the one instance that runs the settlement loop among
// hubs sharing a store. The store's settlement writes made with a context
// from WithFence check the token inside their atomic step (script or
// transaction) and fail with ErrFenced unless the lease is live and holds
// that token.
type LeaderLease interface {
	// Acquire takes the lease for instance when nobody holds it (or it
	// expired, or instance holds it already: a restarted instance
	// fences out its former self) and returns it with a new token. When
	// another instance holds a live lease it returns that lease and an
	// error wrapping ErrNotLeader.
	Acquire(ctx context.Context, instance string, ttl time.Duration) (Leader, error)
	// Renew extends the lease held by l.Instance with l.Token by ttl.
	// It returns an error wrapping ErrNotLeader when the lease expired
	// or moved.
	Renew(ctx context.Context, l Leader, ttl time.Duration) (Leader, error)
	// Release gives the lease up if l still holds it.
	Release(ctx context.Context, l Leader) error
	// Leader returns the live lease, or ErrNotFound when none is held.
	Leader(ctx context.Context) (Leader, error)
}

type fenceKey struct{}

// WithFence returns ctx carrying a fencing token: a store's settlement
// writes made with it are refused with ErrFenced unless token is the
// live lease's.
func WithFence(ctx context.Context, token uint64) context.Context {
	return context.WithValue(ctx, fenceKey{}, token)
}

// Fence returns the fencing token ctx carries, if any. A write without
// one is not fenced (a single hub with no lease configured).
func Fence(ctx context.Context) (uint64, bool) {
	t, ok := ctx.Value(fenceKey{}).(uint64)
	return t, ok
}

// FenceArg is Fence as a string for store scripts: the token in decimal,
// or "" when ctx carries none.
func FenceArg(ctx context.Context) string {
	t, ok := Fence(ctx)
	if !ok {
		return ""
	}
	return strconv.FormatUint(t, 10)
}
