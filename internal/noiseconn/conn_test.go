package noiseconn_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"

	"github.com/m2mhub/m2mhub/internal/noiseconn"
)

func mustKey(t *testing.T) *btcec.PrivateKey {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// lndListener is lnd's own responder, the independent end the tests dial.
func lndListener(t *testing.T) (*brontide.Listener, *btcec.PrivateKey) {
	t.Helper()
	key := mustKey(t)
	l, err := brontide.NewListener(&keychain.PrivKeyECDH{PrivKey: key}, "127.0.0.1:0", brontide.DisabledBanClosure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, key
}

// countingConn counts the writes to a connection; short makes the next
// write stop after that many bytes with a timeout, as a write deadline
// does.
type countingConn struct {
	net.Conn
	writes int
	short  int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	if c.short > 0 && c.short < len(p) {
		n, err := c.Conn.Write(p[:c.short])
		c.short = 0
		if err == nil {
			err = os.ErrDeadlineExceeded
		}
		return n, err
	}
	return c.Conn.Write(p)
}

// TestDialWritesOnce dials lnd's listener: the handshake completes with the
// device's key proven to lnd, each message goes out in one write (lnd's
// brontide.Conn makes two: header, then body) and arrives intact, a write
// cut short by a timeout resumes on the next Flush with the frame whole and
// no new message accepted meanwhile, and lnd's answer reads back.
func TestDialWritesOnce(t *testing.T) {
	l, hubKey := lndListener(t)
	dev := mustKey(t)
	accepted := make(chan *brontide.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c.(*brontide.Conn)
	}()

	tcp, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: tcp}
	c, err := noiseconn.Dial(cc, &keychain.PrivKeyECDH{PrivKey: dev}, hubKey.PubKey(), time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hub := <-accepted
	if hub == nil {
		t.Fatal("lnd's listener accepted nothing")
	}
	defer hub.Close()
	if !hub.RemotePub().IsEqual(dev.PubKey()) {
		t.Fatal("lnd's end learnt another key than the device's")
	}

	cc.writes = 0
	send := func(msg string) {
		t.Helper()
		if err := c.WriteMessage([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Flush(); err != nil || n != len(msg) {
			t.Fatalf("Flush = %d, %v; want %d, nil", n, err, len(msg))
		}
	}
	send("first")
	send("second message")
	if cc.writes != 2 {
		t.Fatalf("%d writes for 2 messages, want 2", cc.writes)
	}
	cc.short = 10
	if err := c.WriteMessage([]byte("third, cut short")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Flush(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut-short Flush = %v, want a timeout", err)
	}
	if err := c.WriteMessage([]byte("too early")); !errors.Is(err, brontide.ErrMessageNotFlushed) {
		t.Fatalf("WriteMessage with a frame unsent = %v, want ErrMessageNotFlushed", err)
	}
	if n, err := c.Flush(); err != nil || n != len("third, cut short") {
		t.Fatalf("resumed Flush = %d, %v", n, err)
	}
	for _, want := range []string{"first", "second message", "third, cut short"} {
		got, err := hub.ReadNextMessage()
		if err != nil || string(got) != want {
			t.Fatalf("lnd read %q, %v; want %q", got, err, want)
		}
	}

	if _, err := hub.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	n, err := c.ReadNextHeader()
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.ReadNextBody(make([]byte, n))
	if err != nil || string(body) != "answer" {
		t.Fatalf("device read %q, %v; want %q", body, err, "answer")
	}
}

// TestDialWrongKey dials a responder with another static key than the one
// expected: act two does not authenticate, Dial fails and closes the
// connection.
func TestDialWrongKey(t *testing.T) {
	l, _ := lndListener(t)
	go func() {
		if c, err := l.Accept(); err == nil {
			_ = c.Close()
		}
	}()
	tcp, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := noiseconn.Dial(tcp, &keychain.PrivKeyECDH{PrivKey: mustKey(t)}, mustKey(t).PubKey(), time.Now().Add(5*time.Second))
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial to a responder with another key succeeded")
	}
	if _, err := tcp.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after a failed Dial = %v, want the connection closed", err)
	}
}

// TestDialDeadline dials a peer that never answers act one: Dial returns
// at the deadline with a timeout.
func TestDialDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	silent := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			silent <- c
		}
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = noiseconn.Dial(tcp, &keychain.PrivKeyECDH{PrivKey: mustKey(t)}, mustKey(t).PubKey(), time.Now().Add(50*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Dial to a silent peer = %v, want a timeout", err)
	}
	(<-silent).Close()
}
