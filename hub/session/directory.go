package session

import (
	"sync"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// Directory holds the live sessions by device id. The server adds and
// removes them; the subsystems that message devices on their own initiative
// (the channel manager, the cosigners) look them up, and the registry's
// revocations drop them. It is built before all of them, so none needs the
// server to exist first. Its zero value is not usable; call NewDirectory.
type Directory struct {
	mu       sync.Mutex
	sessions map[string]*Session
	// notify, when set, hears the id of every device whose live session
	// was added or removed (see Notify).
	notify func(deviceID string)
}

// Notify makes fn hear the id of every device whose live session is added
// or removed, after the change, outside the directory's lock: fn looks the
// device up again to learn its state (calls may be reordered, so only the
// state it reads then counts). A cluster router uses it to announce the
// devices this instance holds. Call it before the server starts.
func (d *Directory) Notify(fn func(deviceID string)) {
	d.mu.Lock()
	d.notify = fn
	d.mu.Unlock()
}

func (d *Directory) changed(deviceID string) {
	d.mu.Lock()
	fn := d.notify
	d.mu.Unlock()
	if fn != nil {
		fn(deviceID)
	}
}

// NewDirectory returns an empty directory.
func NewDirectory() *Directory {
	return &Directory{sessions: make(map[string]*Session)}
}

// Session returns the live session of a device, if any.
func (d *Directory) Session(deviceID string) (*Session, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[deviceID]
	return s, ok
}

// Len returns the number of live sessions.
func (d *Directory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions)
}

// Drop closes the live session of deviceID at once, telling the device code
// and reason in a wire.Error (used when a device is revoked: code
// "revoked"). It does nothing when the device has no live session.
func (d *Directory) Drop(deviceID string, code, reason string) {
	if s, ok := d.Session(deviceID); ok {
		s.closeWith(wire.Code(code), reason)
	}
}

// put makes s its device's live session and returns the one it replaces.
func (d *Directory) put(s *Session) (old *Session) {
	d.mu.Lock()
	old = d.sessions[s.device.ID]
	d.sessions[s.device.ID] = s
	d.mu.Unlock()
	d.changed(s.device.ID)
	return old
}

// remove forgets s unless a newer session of its device replaced it.
func (d *Directory) remove(s *Session) {
	d.mu.Lock()
	gone := d.sessions[s.device.ID] == s
	if gone {
		delete(d.sessions, s.device.ID)
	}
	d.mu.Unlock()
	if gone {
		d.changed(s.device.ID)
	}
}

// all returns every live session.
func (d *Directory) all() []*Session {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Session, 0, len(d.sessions))
	for _, s := range d.sessions {
		out = append(out, s)
	}
	return out
}
