package httpapi_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// serveLimited serves an "ok" handler under lim on a loopback port.
func serveLimited(t *testing.T, lim httpapi.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, lln, err := httpapi.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), ln, lim)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

// keepAlive opens a connection, makes one request on it and leaves it
// idle, as a flood of keep-alive probes does.
func keepAlive(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	get(t, c)
	return c
}

func get(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestLimitEvictsIdle fills the cap with idle keep-alive connections and
// checks that a new client is still served, because the idle connection
// held longest is closed to make room.
func TestLimitEvictsIdle(t *testing.T) {
	const capConns = 8
	addr := serveLimited(t, httpapi.Limits{MaxConns: capConns, ReadHeaderTimeout: time.Minute,
		ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: time.Hour})
	var idle []net.Conn
	for range capConns * 3 { // up to the cap and beyond
		idle = append(idle, keepAlive(t, addr))
	}
	fresh, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	get(t, fresh)
	// Every connection was served, so at most the cap of them are still
	// open: the others, idle longest when a new one came, were closed.
	hubtest.WaitServerClosed(t, idle, len(idle)-capConns)
}

// TestLimitTimeouts checks that a connection that never sends a request
// and an idle keep-alive one are both closed by the server after the
// configured timeouts, freeing their slots.
func TestLimitTimeouts(t *testing.T) {
	// A third slot stays free, so nothing is evicted: what closes the two
	// connections is the timeouts.
	addr := serveLimited(t, httpapi.Limits{MaxConns: 3, ReadHeaderTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: 300 * time.Millisecond})
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	idle := keepAlive(t, addr)
	hubtest.WaitServerClosed(t, []net.Conn{silent, idle}, 2)
	// Their slots are free again.
	for range 3 {
		keepAlive(t, addr)
	}
}
