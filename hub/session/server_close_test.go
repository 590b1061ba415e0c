package session

import (
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// TestCloseReturnsPromptly checks that Close neither waits for an idle
// device to speak nor leaves it uninformed: with production keepalive
// timings a quiet session used to hold Close until the device's next ping
// (30 s), because the server's cancel reached the session before its
// closeWith, which then did nothing.
func TestCloseReturnsPromptly(t *testing.T) {
	checkLeaks(t)
	h := startHub(t, func(c *Config) {
		c.PingInterval = DefaultPingInterval
		c.PongTimeout = DefaultPongTimeout
		c.HandshakeTimeout = DefaultHandshakeTimeout
	})
	quiet := h.rawSession(t, h.auth.add(t, hub.StatusActive))
	eventually(t, 2*time.Second, "session registered", func() bool { return h.Sessions() == 1 })
	// A second device has finished the noise handshake but not sent Init:
	// a device reconnecting at the moment the hub shuts down.
	pending := h.rawDial(t, h.auth.add(t, hub.StatusActive))
	eventually(t, 2*time.Second, "pending connection admitted", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.pending) == 1
	})

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- h.Close() }()
	// The quiet device learns why, before the hub lets go of the socket.
	if e := readError(t, quiet, 3*time.Second); e.Code != wire.CodeShuttingDown {
		t.Errorf("quiet device got %q, want %q", e.Code, wire.CodeShuttingDown)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// Unblock Close so the leak check still runs.
		_ = quiet.Close()
		_ = pending.Close()
		<-done
		t.Fatalf("Close took %v with an idle session and a pending handshake", time.Since(start))
	}
	// closeGrace for the final Error and the linger, plus scheduling.
	if took := time.Since(start); took > 2*closeGrace+time.Second {
		t.Errorf("Close took %v, want at most %v", took, 2*closeGrace+time.Second)
	}
}
