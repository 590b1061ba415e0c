package hubtest

import (
	"net"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// RawConn is a device connection that speaks internal/wire directly, with
// none of the client library's checks: tests use it to send what an honest
// client never would (replayed, reordered or badly signed states) and to
// read the hub's exact answers. It answers nothing by itself, not even
// pings, so keep its use short.
//
// Opening a RawConn for a key that already has a session replaces that
// session: the hub holds one session per device.
type RawConn struct {
	tb   TB
	conn *brontide.Conn
	in   chan wire.Message
	done chan struct{}
	once sync.Once
}

// RawConn opens a BOLT 8 connection for key, exchanges Init, and waits until
// the hub has registered the session of deviceID. The connection is closed
// by Close or in tb's cleanup.
func (h *Hub) RawConn(tb TB, key *btcec.PrivateKey, deviceID string) *RawConn {
	tb.Helper()
	addr, err := net.ResolveTCPAddr("tcp", h.addr)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: h.key.PubKey(), Address: addr}, 5*time.Second, net.DialTimeout)
	if err != nil {
		tb.Fatalf("hubtest: raw dial: %v", err)
	}
	r := &RawConn{tb: tb, conn: c, in: make(chan wire.Message, 256), done: make(chan struct{})}
	tb.Cleanup(r.Close)
	r.Send(wire.NewInit())
	go r.read()
	if _, ok := r.Next(5 * time.Second).(*wire.Init); !ok {
		tb.Fatal("hubtest: hub did not answer init")
	}
	// The hub registers the session just after it queues the Init reply.
	WaitFor(tb, 5*time.Second, "raw session registered", func() bool {
		srv := h.Server()
		if srv == nil {
			return false
		}
		s, ok := srv.Session(deviceID)
		return ok && s.RemoteAddr().String() == c.LocalAddr().String()
	})
	return r
}

func (r *RawConn) read() {
	defer close(r.done)
	defer close(r.in)
	for {
		m, err := wire.ReadMessage(r.conn, wire.MaxMessageSize)
		if err != nil {
			return
		}
		if _, ok := m.(*wire.Ping); ok {
			continue
		}
		r.in <- m
	}
}

// Send writes m, failing the test if it cannot.
func (r *RawConn) Send(m wire.Message) {
	r.tb.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(r.conn, m); err != nil {
		r.tb.Fatalf("hubtest: raw send %T: %v", m, err)
	}
}

// Next returns the hub's next message, failing the test after within or if
// the hub closes the connection.
func (r *RawConn) Next(within time.Duration) wire.Message {
	r.tb.Helper()
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case m, ok := <-r.in:
		if !ok {
			r.tb.Fatal("hubtest: hub closed the raw connection")
		}
		return m
	case <-t.C:
		r.tb.Fatalf("hubtest: nothing from the hub within %v", within)
	}
	return nil
}

// Refusal reads the next message and requires a ChannelError, which it
// returns. A ChannelState before it (the hub shows its state before
// refusing a stale Pay) is skipped.
func (r *RawConn) Refusal(within time.Duration) *wire.ChannelError {
	r.tb.Helper()
	m := r.Next(within)
	if _, ok := m.(*wire.ChannelState); ok {
		m = r.Next(within)
	}
	ce, ok := m.(*wire.ChannelError)
	if !ok {
		r.tb.Fatalf("hubtest: got %T from the hub, want a ChannelError", m)
	}
	return ce
}

// Close closes the connection and waits for its reader.
func (r *RawConn) Close() {
	r.once.Do(func() {
		_ = r.conn.Close()
		<-r.done
	})
}

// DeviceIDOf returns the registry id of a device enrolled with key.
func DeviceIDOf(key *btcec.PrivateKey) string { return hub.DeviceID(hub.PubKeyOf(key.PubKey())) }
