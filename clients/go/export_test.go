package m2mclient

// Fault drops a Session's connection at one message boundary; see
// faultHook. Only this package's tests can make one.
type Fault struct{ h faultHook }

// WithFault installs f in the Session.
func WithFault(f *Fault) Option { return func(o *options) { o.fault = &f.h } }

// Arm makes f drop the connection at the k-th m2mhub message sent (send)
// or received: with the message (before) or right after passing it.
func (f *Fault) Arm(send bool, k int, before bool) { f.h.arm(send, k, before) }

// Fired reports whether the armed fault dropped a connection.
func (f *Fault) Fired() bool { return f.h.hasFired() }
