// Package noiseconn is a BOLT 8 (noise) connection that writes each frame
// in one write: brontide's message framing over a net.Conn, as lnd's
// brontide.Conn is, for both ends of the hub's transport. The hub's
// listener (internal/p2plisten) builds one after its responder handshake;
// the Go client builds one with Dial.
//
// lnd's brontide.Conn writes a frame's 18-byte length header and its body
// separately: two TCP segments and two wake-ups of the reader for every
// message. Its fields are unexported, so neither end can change that from
// outside lnd; the noise machine (brontide.Machine) is exported and does
// the cryptography here as it does there.
package noiseconn

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
)

// Conn is a connection that completed the noise handshake. It satisfies
// internal/wire's FrameReader and FrameWriter. Reads and writes are not
// safe for concurrent use with themselves; one reader and one writer may
// run at once, and Close and the deadline setters may be called from any
// goroutine.
type Conn struct {
	conn  net.Conn
	noise *brontide.Machine

	// out is the frame being written, kept for the next one; unsent is
	// the rest of it after a write that timed out part way, for the next
	// Flush; n is its plaintext length.
	out    frame
	unsent []byte
	n      int
}

// New wraps conn, whose handshake noise has completed.
func New(conn net.Conn, noise *brontide.Machine) *Conn {
	return &Conn{conn: conn, noise: noise}
}

// Dial runs the initiator's handshake (acts one to three) on conn with
// the responder whose static key is remote, all within deadline. It closes
// conn when the handshake fails.
func Dial(conn net.Conn, local keychain.SingleKeyECDH, remote *btcec.PublicKey, deadline time.Time) (*Conn, error) {
	c, err := dial(conn, local, remote, deadline)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

func dial(conn net.Conn, local keychain.SingleKeyECDH, remote *btcec.PublicKey, deadline time.Time) (*Conn, error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	noise := brontide.NewBrontideMachine(true, local, remote)
	actOne, err := noise.GenActOne()
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(actOne[:]); err != nil {
		return nil, fmt.Errorf("act one: %w", err)
	}
	var actTwo [brontide.ActTwoSize]byte
	if _, err := io.ReadFull(conn, actTwo[:]); err != nil {
		return nil, fmt.Errorf("act two: %w", err)
	}
	if err := noise.RecvActTwo(actTwo); err != nil {
		return nil, err
	}
	actThree, err := noise.GenActThree()
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(actThree[:]); err != nil {
		return nil, fmt.Errorf("act three: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return New(conn, noise), nil
}

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
// out in one write.
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

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the other end's address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
