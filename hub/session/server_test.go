package session

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// echoHandler records custom messages and answers each with the same payload
// under the next type number.
type echoHandler struct {
	got chan *wire.Custom
}

func (h echoHandler) HandleMessage(ctx context.Context, s *Session, msg wire.Message) error {
	c := msg.(*wire.Custom)
	h.got <- c
	return s.Send(ctx, &wire.Custom{Type: c.Type + 1, Data: c.Data})
}

func TestSessionStaysConnected(t *testing.T) {
	checkLeaks(t)
	handler := echoHandler{got: make(chan *wire.Custom, 1)}
	h := startHub(t, func(c *Config) {
		c.PingInterval = 30 * time.Millisecond
		c.PongTimeout = 100 * time.Millisecond
		c.Handler = handler
	})
	key := h.auth.add(t, hub.StatusActive)
	dev := h.mustDial(t, key, m2mclient.WithPingInterval(30*time.Millisecond))
	id := hub.DeviceID(hub.PubKeyOf(key.PubKey()))

	first, ok := h.Session(id)
	if !ok {
		t.Fatal("no server session after Dial returned")
	}
	if first.Key() != hub.PubKeyOf(key.PubKey()) || first.DeviceID() != id {
		t.Fatalf("session identity %s/%s", first.DeviceID(), first.Key())
	}
	// About twenty ping rounds each way.
	time.Sleep(600 * time.Millisecond)
	now, ok := h.Session(id)
	if !ok || now != first || !dev.Connected() || h.Sessions() != 1 {
		t.Fatalf("session did not survive keepalive: same=%v connected=%v sessions=%d", now == first, dev.Connected(), h.Sessions())
	}

	t.Run("CustomMessagesBothWays", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := dev.Send(ctx, &wire.Custom{Type: wire.TypeBase + 0xF1, Data: []byte("hello")}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-handler.got:
			if string(c.Data) != "hello" {
				t.Fatalf("hub got %q", c.Data)
			}
		case <-ctx.Done():
			t.Fatal("handler not called")
		}
		select {
		case m := <-dev.Messages():
			c, ok := m.(*wire.Custom)
			if !ok || c.Type != wire.TypeBase+0xF2 || string(c.Data) != "hello" {
				t.Fatalf("device got %#v", m)
			}
		case <-ctx.Done():
			t.Fatal("device got no reply")
		}
	})
}

func TestRefusals(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, nil)
	rotated := mustKey(t)
	h.auth.retired[hub.PubKeyOf(rotated.PubKey())] = true

	for _, tc := range []struct {
		name string
		code string
	}{
		{name: m2mclient.CodeUnknownKey, code: m2mclient.CodeUnknownKey},
		{name: m2mclient.CodeRevoked, code: m2mclient.CodeRevoked},
		{name: m2mclient.CodeRotatedOut, code: m2mclient.CodeRotatedOut},
		{name: m2mclient.CodeEnrolRefused, code: m2mclient.CodeEnrolRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := mustKey(t)
			var opts []m2mclient.Option
			switch tc.code {
			case m2mclient.CodeRevoked:
				key = h.auth.add(t, hub.StatusRevoked)
			case m2mclient.CodeRotatedOut:
				key = rotated
			case m2mclient.CodeEnrolRefused:
				opts = append(opts, m2mclient.WithEnrolToken([]byte("forged")))
			}
			start := time.Now()
			_, err := h.dial(t, key, opts...)
			var re *m2mclient.RefusedError
			if !errors.As(err, &re) || re.Code != tc.code || !re.Permanent() {
				t.Fatalf("err = %v, want RefusedError %s", err, tc.code)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("a permanent refusal took %v: the client retried it", time.Since(start))
			}
			if h.Sessions() != 0 {
				t.Fatalf("sessions = %d after a refusal", h.Sessions())
			}
		})
	}
}

func TestEnrolWithToken(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, nil)
	h.auth.tokens["token-1"] = true
	key := mustKey(t)
	dev := h.mustDial(t, key, m2mclient.WithEnrolToken([]byte("token-1")))
	id := hub.DeviceID(hub.PubKeyOf(key.PubKey()))
	if _, ok := h.Session(id); !ok || !dev.Connected() {
		t.Fatal("enrolled device has no session")
	}
	// The token is single-use in memAuth; a second connection presenting
	// it again must pass through Authenticate and ignore the token.
	_ = dev.Close()
	again := h.mustDial(t, key, m2mclient.WithEnrolToken([]byte("token-1")))
	if !again.Connected() {
		t.Fatal("re-presented token broke a registered device's login")
	}
}

func TestHostileConnections(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, func(c *Config) {
		c.MaxMessageSize = 1024
		c.HandshakeTimeout = 300 * time.Millisecond
	})
	legitKey := h.auth.add(t, hub.StatusActive)
	legit := h.mustDial(t, legitKey)
	legitID := hub.DeviceID(hub.PubKeyOf(legitKey.PubKey()))
	legitSess, _ := h.Session(legitID)

	// closedWithin asserts the hub closes a raw TCP connection.
	closedWithin := func(t *testing.T, c net.Conn, d time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(d))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("hub kept the connection open for %v", d)
				}
				return
			}
		}
	}
	tcp := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", h.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	// The group returns only when every parallel attack has finished.
	t.Run("Attacks", func(t *testing.T) {
		t.Run("Garbage", func(t *testing.T) {
			t.Parallel()
			c := tcp(t)
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: hub\r\n\r\n-------------------------------------------------"))
			closedWithin(t, c, 2*time.Second)
		})
		t.Run("TruncatedHandshake", func(t *testing.T) {
			t.Parallel()
			c := tcp(t)
			_, _ = c.Write(make([]byte, 20)) // act one is 50 bytes
			c.(*net.TCPConn).CloseWrite()
			closedWithin(t, c, 7*time.Second)
		})
		t.Run("StalledHandshake", func(t *testing.T) {
			t.Parallel()
			// The act timeout (ActTimeout, 3 s by default) closes it.
			closedWithin(t, tcp(t), 7*time.Second)
		})
		t.Run("NoInitAfterHandshake", func(t *testing.T) {
			t.Parallel()
			c := h.rawDial(t, h.auth.add(t, hub.StatusActive))
			if e := readError(t, c, 2*time.Second); e.Code != wire.CodeTimeout {
				t.Fatalf("code = %q, want timeout", e.Code)
			}
		})
		t.Run("WrongFirstMessage", func(t *testing.T) {
			t.Parallel()
			c := h.rawDial(t, h.auth.add(t, hub.StatusActive))
			_ = wire.WriteMessage(c, wire.NewPing(0))
			if e := readError(t, c, 2*time.Second); e.Code != wire.CodeProtocol {
				t.Fatalf("code = %q, want protocol-violation", e.Code)
			}
		})
		t.Run("OversizedFrameAfterAuth", func(t *testing.T) {
			t.Parallel()
			c := h.rawSession(t, h.auth.add(t, hub.StatusActive))
			_ = wire.WriteMessage(c, &wire.Custom{Type: wire.TypeBase + 0xF1, Data: make([]byte, 4000)})
			if e := readError(t, c, 2*time.Second); e.Code != wire.CodeMessageTooLarge {
				t.Fatalf("code = %q, want message-too-large", e.Code)
			}
		})
		t.Run("GreedyPing", func(t *testing.T) {
			t.Parallel()
			c := h.rawSession(t, h.auth.add(t, hub.StatusActive))
			_ = wire.WriteMessage(c, wire.NewPing(60000))
			if e := readError(t, c, 2*time.Second); e.Code != wire.CodeProtocol {
				t.Fatalf("code = %q, want protocol-violation", e.Code)
			}
		})

	})

	// The hub is still healthy: the first device kept its very session,
	// and a new device gets in.
	if s, ok := h.Session(legitID); !ok || s != legitSess || !legit.Connected() {
		t.Fatal("live session disturbed by hostile connections")
	}
	eventually(t, 2*time.Second, "only the legit session remains", func() bool { return h.Sessions() == 1 })
	h.mustDial(t, h.auth.add(t, hub.StatusActive))
}

func TestKeepaliveDropsSilentDevice(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, func(c *Config) {
		c.PingInterval = 50 * time.Millisecond
		c.PongTimeout = 100 * time.Millisecond
	})
	c := h.rawSession(t, h.auth.add(t, hub.StatusActive))
	_ = c // never read, never answer
	eventually(t, time.Second, "silent device dropped", func() bool { return h.Sessions() == 0 })
}

func TestSlowReaderDropped(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, func(c *Config) {
		c.SendQueue = 4
		c.WriteTimeout = 200 * time.Millisecond
	})
	key := h.auth.add(t, hub.StatusActive)
	_ = h.rawSession(t, key) // authenticated, then never reads
	sess, _ := h.Session(hub.DeviceID(hub.PubKeyOf(key.PubKey())))
	big := &wire.Custom{Type: wire.TypeBase + 0xF1, Data: make([]byte, 60000)}
	var err error
	start := time.Now()
	for i := 0; i < 5000 && err == nil; i++ {
		err = sess.Send(context.Background(), big)
	}
	if !errors.Is(err, ErrSendQueueFull) && !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Send never failed for a device that reads nothing: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("sending blocked for %v", d)
	}
	eventually(t, 2*time.Second, "slow session dropped", func() bool { return h.Sessions() == 0 })
}

func TestReplaceAndDrop(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, nil)
	key := h.auth.add(t, hub.StatusActive)
	id := hub.DeviceID(hub.PubKeyOf(key.PubKey()))

	first := h.mustDial(t, key)
	second := h.mustDial(t, key)

	var re *m2mclient.RefusedError
	eventually(t, time.Second, "first session told it was replaced", func() bool {
		return errors.As(first.Err(), &re) && re.Code == m2mclient.CodeReplaced && !first.Connected()
	})
	if h.Sessions() != 1 || !second.Connected() {
		t.Fatalf("sessions = %d, second connected = %v", h.Sessions(), second.Connected())
	}

	start := time.Now()
	h.Drop(id, string(wire.CodeRevoked), "revoked by operator")
	eventually(t, time.Second, "dropped session closed", func() bool {
		return !second.Connected() && h.Sessions() == 0
	})
	if !errors.As(second.Err(), &re) || re.Code != m2mclient.CodeRevoked {
		t.Fatalf("device saw %v, want revoked", second.Err())
	}
	t.Logf("Drop took effect in %v", time.Since(start))
}

func TestManyDevicesConcurrently(t *testing.T) {
	if testing.Short() {
		t.Skip("500 handshakes")
	}
	checkLeaks(t)
	const n = 500
	h := startHub(t, func(c *Config) {
		c.MaxSessionsPerIP = 2 * n
		c.PingInterval = time.Minute
	})
	keys := make([]*btcec.PrivateKey, n)
	for i := range keys {
		keys[i] = h.auth.add(t, hub.StatusActive)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sessions := make([]*m2mclient.Session, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := m2mclient.Dial(ctx, h.Addr().String(), h.key.PubKey(), keys[i], m2mclient.WithLogger(quietLogger()), m2mclient.WithBackoff(50*time.Millisecond, time.Second))
			sessions[i] = s
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	t.Cleanup(func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	})
	if got := h.Sessions(); got != n {
		t.Fatalf("sessions = %d, want %d", got, n)
	}
	t.Logf("%d devices authenticated concurrently in %v (%.0f/s)", n, elapsed, n/elapsed.Seconds())
}

// TestWarningIsNotFatal sends BOLT 1 warnings before Init, before and after
// Enrol, and on a live session, for the connection and for a channel:
// protocol.md §1.3 says they are logged, never fatal, so the device gets its
// session and the session still answers a Ping afterwards.
func TestWarningIsNotFatal(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, func(c *Config) { c.PingInterval = time.Hour })
	warnings := []*wire.Warning{
		{Data: wire.WarningData("low battery")},
		{ChanID: wire.ChannelID{1}, Data: wire.WarningData("channel: odd state")},
		{},
	}
	send := func(t *testing.T, c interface {
		WriteMessage([]byte) error
		Flush() (int, error)
	}, msgs ...wire.Message) {
		t.Helper()
		for _, m := range msgs {
			if err := wire.WriteMessage(c, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		enrol bool
	}{{"BeforeInit", false}, {"AroundEnrol", true}} {
		t.Run(tc.name, func(t *testing.T) {
			key := h.auth.add(t, hub.StatusActive)
			c := h.rawDial(t, key)
			send(t, c, warnings[0])
			if tc.enrol {
				send(t, c, &wire.Enrol{Token: []byte("unused")}, warnings[1])
			}
			send(t, c, wire.NewInit())
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
			if err != nil {
				t.Fatalf("no answer to init after a warning: %v", err)
			}
			if _, ok := msg.(*wire.Init); !ok {
				t.Fatalf("hub answered init after a warning with %#v", msg)
			}
		})
	}
	t.Run("InSession", func(t *testing.T) {
		key := h.auth.add(t, hub.StatusActive)
		c := h.rawSession(t, key)
		id := hub.DeviceID(hub.PubKeyOf(key.PubKey()))
		first, _ := h.Session(id)
		for range 20 {
			for _, w := range warnings {
				send(t, c, w)
			}
		}
		send(t, c, wire.NewPing(4))
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
		if err != nil {
			t.Fatalf("session closed after a warning: %v", err)
		}
		if p, ok := msg.(*wire.Pong); !ok || len(p.PongBytes) != 4 {
			t.Fatalf("hub answered the ping with %#v", msg)
		}
		if now, ok := h.Session(id); !ok || now != first {
			t.Fatal("the session was replaced or dropped")
		}
	})
}
