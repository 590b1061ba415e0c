package m2mclient

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// handler takes a hub message that is not (only) an answer to a waiting
// call and reports whether it was for it. It runs on the Router's
// goroutine, so it must not block: anything that waits for the hub runs on
// a goroutine of its own.
type handler func(wire.Message) bool

// Router is the single reader of one Session's messages. It hands each
// answer to the call waiting for it and every other message to the Device
// and the Provider attached to it, so that one device identity can pay and
// be paid over one connection (a prosumer: a meter that buys and sells, a
// car that also sells its battery's energy).
//
// NewDevice and NewProvider use the Session's own Router (Session.Router)
// when their config names none, so a prosumer needs no wiring; a caller
// that wants a Router it closes itself creates one with NewRouter and
// passes it to both:
//
//	r := m2mclient.NewRouter(s, logger)
//	defer r.Close()
//	d, _ := m2mclient.NewDevice(s, m2mclient.DeviceConfig{Router: r, ...})
//	p, _ := m2mclient.NewProvider(s, m2mclient.ProviderConfig{Router: r, ...})
//
// Two consumers of one Session without a shared Router would each see only
// some of its messages.
type Router struct {
	s   *Session
	log *slog.Logger
	// w holds the calls waiting for an answer, of the Device and the
	// Provider alike: their keys never collide (request and pending ids
	// are the device's, hold ids are random, channel ids are the
	// device's channels).
	w waiters

	// mu is read-held while handlers run and write-held to change them,
	// so once detach returns its handler never runs again.
	mu       sync.RWMutex
	handlers map[int]handler
	nextID   int

	// dispatched counts the messages dispatched; progress is closed
	// and replaced after each one.
	pmu        sync.Mutex
	dispatched uint64
	progress   chan struct{}

	done   chan struct{} // closed when the read loop ends
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRouter starts reading s's messages; Close stops it. The Router must be
// the only reader of s.Messages(). A nil logger means slog.Default().
func NewRouter(s *Session, log *slog.Logger) *Router {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{
		s: s, log: log, handlers: make(map[int]handler), progress: make(chan struct{}),
		done: make(chan struct{}), ctx: ctx, cancel: cancel,
	}
	r.wg.Add(1)
	go r.run()
	return r
}

// Close stops reading the Session and waits for the read loop. It does not
// close the Session, and the Device and Provider attached stop receiving
// messages; close them first.
func (r *Router) Close() error {
	r.cancel()
	r.wg.Wait()
	return nil
}

// routerFor returns the Router a Device or Provider of s uses: the one the
// config names, which must read s, or else the session's own (Session.Router),
// which the session closes.
func routerFor(s *Session, shared *Router) (r *Router, owned bool, err error) {
	if shared == nil {
		return s.Router(), false, nil
	}
	if shared.s != s {
		return nil, false, errors.New("m2mclient: the router reads another session")
	}
	return shared, false, nil
}

// attach adds h to the handlers and returns the function that removes it.
func (r *Router) attach(h handler) (detach func()) {
	r.mu.Lock()
	id := r.nextID
	r.nextID++
	r.handlers[id] = h
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.handlers, id)
			r.mu.Unlock()
		})
	}
}

func (r *Router) run() {
	defer r.wg.Done()
	defer close(r.done)
	for {
		var msg wire.Message
		var ok bool
		select {
		case <-r.ctx.Done():
			return
		case msg, ok = <-r.s.Messages():
			if !ok {
				return
			}
		}
		r.dispatch(msg)
		r.pmu.Lock()
		r.dispatched++
		close(r.progress)
		r.progress = make(chan struct{})
		r.pmu.Unlock()
	}
}

// caughtUp waits until the Router has dispatched n messages of its
// session (or stopped), bounded by ctx.
func (r *Router) caughtUp(ctx context.Context, n uint64) error {
	for {
		r.pmu.Lock()
		done, progress := r.dispatched >= n, r.progress
		r.pmu.Unlock()
		if done {
			return nil
		}
		select {
		case <-progress:
		case <-r.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// dispatch routes one message: answers to their waiting call, everything
// else (and the notices a waiting call and a handler both need) to the
// handlers.
func (r *Router) dispatch(msg wire.Message) {
	answered, notice := false, false
	switch m := msg.(type) {
	case *wire.ChannelOffer:
		answered = r.w.deliver(waitKey{kind: 'r', req: m.ReqID}, m)
	case *wire.ChannelReady:
		answered = r.w.deliver(waitKey{kind: 'p', pending: m.PendingID}, m)
	case *wire.PayAck:
		answered = r.w.deliver(waitKey{kind: 'c', chanID: m.ChanID}, m)
	case *wire.CloseProposal:
		answered = r.w.deliver(waitKey{kind: 'c', chanID: m.ChanID}, m)
	case *wire.ChannelState:
		// The call under way on the channel (a Pay refused as stale, a
		// Sync) takes it; without one the device applies it itself.
		answered = r.w.deliver(waitKey{kind: 'c', chanID: m.ChanID}, m)
	case *wire.HoldResult:
		answered = r.w.deliver(waitKey{kind: 'h', hold: m.HoldID}, m)
	case *wire.ChannelError:
		// A refused hold authorisation (hold and channel named, no
		// seq) is news to the Device as well as to any call waiting on
		// the channel.
		// So is a close the hub no longer knows (the answer to a
		// CloseSign resent at reconnect, or to the closing call).
		answered = r.w.deliverError(m)
		notice = m.HoldID != nil && m.ChanID != nil && m.Seq == nil && m.ReqID == nil ||
			m.Code == wire.ChanCloseUnknown && m.ChanID != nil
	case *wire.ChannelClosed:
		// The closing call waits for it and the device records it.
		answered, notice = r.w.deliver(waitKey{kind: 'c', chanID: m.ChanID}, m), true
	case *wire.HoldClosed:
		// The provider's hold call may wait for it; the payer forgets
		// the hold.
		answered, notice = r.w.deliver(waitKey{kind: 'h', hold: m.HoldID}, m), true
	}
	if answered && !notice {
		return
	}
	handled := false
	r.mu.RLock()
	for _, h := range r.handlers {
		if h(msg) {
			handled = true
		}
	}
	r.mu.RUnlock()
	if !answered && !handled {
		r.log.Debug("unexpected hub message", "type", msg.MsgType())
	}
}
