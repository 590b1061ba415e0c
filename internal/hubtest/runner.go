package hubtest

import (
	"context"
	"fmt"
	"os"
	"sync"
)

// Runner is a StartTB for Example functions, which get no *testing.T: it
// keeps cleanups and temporary directories and runs them at Close, and
// panics on Fatal (an example that fails to set up has no output to
// compare, and the panic names why).
type Runner struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cleanups []func()
}

var _ StartTB = (*Runner)(nil)

// NewRunner returns a Runner; Close it when the example is done.
func NewRunner() *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{ctx: ctx, cancel: cancel}
}

// Helper does nothing: there is no test log to attribute lines in.
func (r *Runner) Helper() {}

// Fatal panics with args.
func (r *Runner) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// Fatalf panics with the formatted message.
func (r *Runner) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// Skip does nothing: an example always runs what it shows.
func (r *Runner) Skip(...any) {}

// Context is cancelled at Close, before the cleanups run, as a test's is.
func (r *Runner) Context() context.Context { return r.ctx }

// Cleanup registers f to run at Close, last registered first.
func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// TempDir makes a directory removed at Close.
func (r *Runner) TempDir() string {
	dir, err := os.MkdirTemp("", "hubtest-example-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Close cancels the context and runs the cleanups.
func (r *Runner) Close() {
	r.cancel()
	r.mu.Lock()
	cs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
