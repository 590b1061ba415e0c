package m2mclient

import "github.com/m2mhub/m2mhub/internal/msgfault"

// WithFault installs p in the Session: it drops the connection at the
// boundary p is armed at. Only this package's tests can set one.
func WithFault(p *msgfault.Point) Option { return func(o *options) { o.fault = p } }
