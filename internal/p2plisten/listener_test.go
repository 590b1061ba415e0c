package p2plisten

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"
	"go.uber.org/goleak"
)

func mustKey(t *testing.T) *btcec.PrivateKey {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func listen(t *testing.T, total, perSource int) (*Listener, *btcec.PrivateKey) {
	t.Helper()
	key := mustKey(t)
	l, err := Listen(Config{
		Addr: "127.0.0.1:0", Key: &keychain.PrivKeyECDH{PrivKey: key},
		MaxHandshakes: total, MaxHandshakesPerSource: perSource,
		ActTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, key
}

// dialFrom opens a TCP connection from 127.0.0.src that sends nothing; nil
// when the listener reset it before connect returned.
func dialFrom(t *testing.T, l *Listener, src byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, src)}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refused reports whether the listener closes c (at once for a refusal;
// the test's act timeout is a minute, so a kept connection stays open).
func refused(c net.Conn) bool {
	if c == nil {
		return true
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// waitHandshakes waits until the listener holds n slots.
func waitHandshakes(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Handshakes() != n {
		if time.Now().After(deadline) {
			t.Fatalf("handshakes = %d, want %d", l.Handshakes(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAdmission(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
	t.Run("PerSourceRefusedAtOnce", func(t *testing.T) {
		l, _ := listen(t, 10, 2)
		dialFrom(t, l, 2)
		dialFrom(t, l, 2)
		waitHandshakes(t, l, 2)
		if !refused(dialFrom(t, l, 2)) {
			t.Fatal("connection over the source's share kept")
		}
		dialFrom(t, l, 3)
		waitHandshakes(t, l, 3)
	})
	t.Run("FairWhenFull", func(t *testing.T) {
		l, _ := listen(t, 3, 3)
		first := dialFrom(t, l, 2)
		waitHandshakes(t, l, 1)
		dialFrom(t, l, 2)
		dialFrom(t, l, 2)
		waitHandshakes(t, l, 3)
		// Full: a newcomer from another source takes the oldest slot of
		// the largest holder.
		newcomer := dialFrom(t, l, 3)
		if !refused(first) {
			t.Fatal("the largest source's oldest connection was not evicted")
		}
		waitHandshakes(t, l, 3)
		// The flood, now holding 2 of 3, cannot take the newcomer's.
		if !refused(dialFrom(t, l, 2)) {
			t.Fatal("a source holding more took a slot from one holding fewer")
		}
		_ = newcomer.SetReadDeadline(time.Now())
		if _, err := newcomer.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the newcomer was closed: %v", err)
		}
	})
	t.Run("HandshakeCompletes", func(t *testing.T) {
		l, key := listen(t, 4, 1)
		dev := mustKey(t)
		done := make(chan error, 1)
		go func() {
			addr := l.Addr().(*net.TCPAddr)
			c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: dev},
				&lnwire.NetAddress{IdentityKey: key.PubKey(), Address: addr}, 5*time.Second, net.DialTimeout)
			if err == nil {
				_, err = c.Write([]byte("hello"))
				defer c.Close()
				_, _ = io.ReadAll(c)
			}
			done <- err
		}()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if !c.RemotePub().IsEqual(dev.PubKey()) {
			t.Fatal("remote key is not the device's")
		}
		n, err := c.ReadNextHeader()
		if err != nil {
			t.Fatal(err)
		}
		body, err := c.ReadNextBody(make([]byte, n))
		if err != nil || string(body) != "hello" {
			t.Fatalf("read %q, %v", body, err)
		}
		if l.Handshakes() != 1 {
			t.Fatalf("handshakes = %d before EndHandshake", l.Handshakes())
		}
		c.EndHandshake()
		c.EndHandshake()
		if l.Handshakes() != 0 {
			t.Fatalf("handshakes = %d after EndHandshake", l.Handshakes())
		}
		_ = c.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("SourceOfIPv6", func(t *testing.T) {
		a := SourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1")})
		b := SourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9")})
		c := SourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1")})
		m := SourceOf(&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1")})
		if a != b || a == c || m != "10.0.0.1" {
			t.Fatalf("sources %q %q %q %q", a, b, c, m)
		}
	})
}
