package boltstore

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// errClosed is returned to writers that reach a closed Store.
var errClosed = errors.New("boltstore: store is closed")

// maxGroup bounds the writes of one commit, so a long queue under overload
// does not turn into one huge transaction whose pages all stay dirty until
// the fsync; the rest wait for the next round.
const maxGroup = 4096

// commitReq is one write waiting for the committer.
type commitReq struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// committer is the group commit of the store's writes: one goroutine takes
// every write queued so far, runs them in one bbolt transaction and pays one
// fsync for all of them, while writes arriving meanwhile queue for the next
// round. Unlike bbolt's DB.Batch it never waits for a timer: a lone write
// commits at once (latency ≈ one fsync), and groups grow by themselves as
// load rises, because the queue fills while the previous fsync runs.
//
// A function may run more than once (when another in its group fails, the
// group is rolled back and rerun without it), so it must only read and
// write through tx, as with DB.Batch.
type committer struct {
	db *bolt.DB

	mu      sync.Mutex
	queue   []commitReq
	closed  bool
	lastErr error         // of the last commit (not of a write's own check); nil once one succeeds
	wake    chan struct{} // capacity 1: a write is queued, or Close began
	wg      sync.WaitGroup
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, wake: make(chan struct{}, 1)}
	c.wg.Add(1)
	go c.run()
	return c
}

// do runs fn in a durable commit shared with the other writes queued at the
// time, and returns fn's error or the commit's. Once do returns nil, fn's
// writes are fsynced.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	// Buffered, so the committer never blocks on a caller.
	r := commitReq{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed
	}
	c.queue = append(c.queue, r)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	// No ctx here: once queued the write may commit, and a caller told
	// "cancelled" must not find it applied.
	return <-r.done
}

// close refuses new writes, lets the committer finish every queued one, and
// waits for it to exit.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.wg.Wait()
}

// failing returns the error of the last commit, nil if it succeeded.
func (c *committer) failing() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *committer) run() {
	defer c.wg.Done()
	var group []commitReq
	for range c.wake {
		for {
			c.mu.Lock()
			n := min(len(c.queue), maxGroup)
			group = append(group[:0], c.queue[:n]...)
			// Shift rather than reslice, so the backing array is reused
			// instead of growing forever.
			rest := copy(c.queue, c.queue[n:])
			clear(c.queue[rest:])
			c.queue = c.queue[:rest]
			closed := c.closed
			c.mu.Unlock()
			if len(group) == 0 {
				if closed {
					return
				}
				break
			}
			c.commit(group)
			clear(group)
		}
	}
}

// commit runs group in one transaction. When a function fails, the whole
// transaction is rolled back, that function is rerun alone (so its caller
// gets its own error, and a failure due to the company it kept is not
// reported), and the others are committed again without it.
func (c *committer) commit(group []commitReq) {
	for len(group) > 0 {
		failed := -1
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, r := range group {
				if err := r.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			// Success, or the commit itself failed (a full disk, an
			// I/O error): the same answer for every write in it.
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			for _, r := range group {
				r.done <- err
			}
			return
		}
		solo := group[failed]
		solo.done <- c.db.Update(solo.fn)
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}
