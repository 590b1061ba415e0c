package session

import (
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// TestKeepalivePingsAfterQuiet drives the keepalive with an injected clock:
// the hub pings only after PingInterval in which it read nothing from the
// device, and then drops the device with "timeout" if no Pong comes within
// PongTimeout. Each timer the session arms is seen on the clock's tick
// signal, so the test knows what the session decided without sleeping.
func TestKeepalivePingsAfterQuiet(t *testing.T) {
	checkLeaks(t)
	const interval, pongTimeout = 30 * time.Second, 15 * time.Second
	t0 := time.Unix(1_000_000, 0)
	ticks := make(chan time.Duration, 16)
	clk := clock.NewTestClockWithTickSignal(t0, ticks)
	h := startHub(t, func(c *Config) {
		c.Clock = clk
		c.PingInterval, c.PongTimeout = interval, pongTimeout
	})
	c := h.rawSession(t, h.auth.add(t, hub.StatusActive))
	armed := func(want time.Duration) {
		t.Helper()
		select {
		case d := <-ticks:
			if d != want {
				t.Fatalf("session armed a %v timer, want %v", d, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("session armed no %v timer", want)
		}
	}
	next := func() wire.Message {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := wire.ReadMessage(c, wire.MaxMessageSize)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	armed(interval) // at login

	// The device speaks 20 s after login: when the login timer fires 10 s
	// later, the link has been quiet for 10 s only, so the hub waits the
	// 20 s that remain instead of pinging.
	clk.SetTime(t0.Add(20 * time.Second))
	devicePing(t, c)
	if m := next(); m.MsgType() != wire.MsgPong {
		t.Fatalf("hub answered the device's ping with %v", m.MsgType())
	}
	clk.SetTime(t0.Add(interval))
	armed(20 * time.Second)

	// 30 s of quiet: now it pings, and waits PongTimeout for the Pong.
	clk.SetTime(t0.Add(50 * time.Second))
	if m := next(); m.MsgType() != wire.MsgPing {
		t.Fatalf("after %v of quiet the hub sent %v, want a ping", interval, m.MsgType())
	}
	armed(pongTimeout)
	if err := wire.WriteMessage(c, wire.NewPong(nil)); err != nil {
		t.Fatal(err)
	}
	armed(interval) // a full interval of quiet after the Pong

	// Pinged again after the next quiet interval, and dropped with
	// "timeout" when no Pong follows.
	clk.SetTime(t0.Add(80 * time.Second))
	if m := next(); m.MsgType() != wire.MsgPing {
		t.Fatalf("hub sent %v, want a ping", m.MsgType())
	}
	armed(pongTimeout)
	clk.SetTime(t0.Add(95 * time.Second))
	if e := readError(t, c, 5*time.Second); e.Code != wire.CodeTimeout {
		t.Fatalf("silent device closed with %q, want %q", e.Code, wire.CodeTimeout)
	}
}

// devicePing sends a ping asking for one pong byte.
func devicePing(t *testing.T, c *brontide.Conn) {
	t.Helper()
	if err := wire.WriteMessage(c, wire.NewPing(1)); err != nil {
		t.Fatal(err)
	}
}
