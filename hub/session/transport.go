package session

import (
	"net"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// Conn is a device connection whose transport handshake (BOLT 8's noise
// acts) is done: framed, encrypted messages from a proven key.
// internal/p2plisten's *Conn satisfies it. One reader and one writer may run
// at once; Close and the deadline setters may be called from any goroutine.
type Conn interface {
	wire.FrameReader
	wire.FrameWriter
	// RemotePub returns the key the device proved in the handshake.
	RemotePub() *btcec.PublicKey
	// EndHandshake tells the transport the device is authenticated: the
	// connection stops counting against the transport's handshake limits.
	EndHandshake()
	RemoteAddr() net.Addr
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	Close() error
}

// Listener hands over connections whose transport handshake is done. Accept
// returns an error only once the listener is closed.
type Listener interface {
	Accept() (Conn, error)
	Close() error
	Addr() net.Addr
}

// NewListener adapts a transport listener whose Accept returns its own
// connection type, such as *p2plisten.Listener, to Listener.
func NewListener[C Conn](l interface {
	Accept() (C, error)
	Close() error
	Addr() net.Addr
}) Listener {
	return listener[C]{l}
}

type listener[C Conn] struct {
	l interface {
		Accept() (C, error)
		Close() error
		Addr() net.Addr
	}
}

func (l listener[C]) Accept() (Conn, error) {
	c, err := l.l.Accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (l listener[C]) Close() error   { return l.l.Close() }
func (l listener[C]) Addr() net.Addr { return l.l.Addr() }
