package p2plisten

import (
	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/internal/noiseconn"
)

// Conn is a connection that completed the noise handshake: brontide's
// message framing over the TCP connection, each frame in one write (see
// internal/noiseconn), with the device's proven key and the handshake
// slot it holds until the caller ends the handshake.
type Conn struct {
	*noiseconn.Conn
	remote *btcec.PublicKey
	l      *Listener
	slot   *slot
}

// EndHandshake gives the connection's handshake slot back: the caller has
// authenticated the device, and the connection now counts against the
// caller's own session limits. Calling it again does nothing.
func (c *Conn) EndHandshake() { c.l.release(c.slot) }

// RemotePub returns the key the device proved in act three.
func (c *Conn) RemotePub() *btcec.PublicKey { return c.remote }

// Close closes the connection and gives its handshake slot back if it
// still held one.
func (c *Conn) Close() error {
	c.l.release(c.slot)
	return c.Conn.Close()
}
