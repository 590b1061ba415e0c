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
// and reason in an lnwire.Error (used when a device is revoked: code
// "revoked"). It does nothing when the device has no live session.
func (d *Directory) Drop(deviceID string, code, reason string) {
	if s, ok := d.Session(deviceID); ok {
		s.closeWith(wire.Code(code), reason)
	}
}

// put makes s its device's live session and returns the one it replaces.
func (d *Directory) put(s *Session) (old *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old = d.sessions[s.device.ID]
	d.sessions[s.device.ID] = s
	return old
}

// remove forgets s unless a newer session of its device replaced it.
func (d *Directory) remove(s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sessions[s.device.ID] == s {
		delete(d.sessions, s.device.ID)
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
