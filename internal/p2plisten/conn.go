package p2plisten

import (
	"net"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
)

// Conn is a connection that completed the noise handshake: brontide's
// message framing over the TCP connection, as brontide.Conn is (whose
// fields are unexported, so a listener outside lnd cannot build one). It
// satisfies internal/wire's FrameReader and FrameWriter. Reads and writes
// are not safe for concurrent use with themselves; one reader and one
// writer may run at once, and Close and the deadline setters may be called
// from any goroutine.
type Conn struct {
	conn   net.Conn
	noise  *brontide.Machine
	remote *btcec.PublicKey
	l      *Listener
	slot   *slot

	// out is the frame being written, kept for the next one; unsent is
	// the rest of it after a write that timed out part way, for the next
	// Flush; n is its plaintext length.
	out    frame
	unsent []byte
	n      int
}

// EndHandshake gives the connection's handshake slot back: the caller has
// authenticated the device, and the connection now counts against the
// caller's own session limits. Calling it again does nothing.
func (c *Conn) EndHandshake() { c.l.release(c.slot) }

// RemotePub returns the key the device proved in act three.
func (c *Conn) RemotePub() *btcec.PublicKey { return c.remote }

// ReadNextHeader reads and decrypts the next frame header and returns the
// length of the body that follows, MAC included.
func (c *Conn) ReadNextHeader() (uint32, error) { return c.noise.ReadHeader(c.conn) }

// ReadNextBody reads the body announced by ReadNextHeader into buf, which
// must have that length, and returns the plaintext.
func (c *Conn) ReadNextBody(buf []byte) ([]byte, error) { return c.noise.ReadBody(c.conn, buf) }

// WriteMessage encrypts b into the pending frame; Flush writes it. It
// returns brontide.ErrMessageNotFlushed while a frame is still unsent.
func (c *Conn) WriteMessage(b []byte) error {
	if len(c.unsent) > 0 {
		return brontide.ErrMessageNotFlushed
	}
	return c.noise.WriteMessage(b)
}

// Flush writes the pending frame, resuming after a timed-out partial write,
// and returns its plaintext length as brontide's Flush does. The frame goes
// out in one write: brontide's Flush writes the 18-byte length header and
// the body separately, two segments on the wire and two wake-ups of the
// reader for every message.
func (c *Conn) Flush() (int, error) {
	if len(c.unsent) == 0 {
		c.out = c.out[:0]
		n, err := c.noise.Flush(&c.out)
		if err != nil || len(c.out) == 0 {
			return n, err
		}
		c.unsent, c.n = c.out, n
	}
	w, err := c.conn.Write(c.unsent)
	c.unsent = c.unsent[w:]
	if err != nil {
		return 0, err
	}
	return c.n, nil
}

// frame collects what brontide's Flush writes (header, then body) into one
// buffer. It copies: brontide returns its buffers to a pool once flushed.
type frame []byte

func (f *frame) Write(p []byte) (int, error) {
	*f = append(*f, p...)
	return len(p), nil
}

// Close closes the connection and gives its handshake slot back if it
// still held one.
func (c *Conn) Close() error {
	c.l.release(c.slot)
	return c.conn.Close()
}

// LocalAddr returns the hub's end of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the device's end of the connection.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
