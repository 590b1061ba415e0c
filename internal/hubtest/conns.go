package hubtest

import (
	"net"
	"testing"
	"time"
)

// WaitServerClosed blocks until the server has closed at least n of conns
// (a read returns EOF or a reset), and returns how many it closed by then.
// It reads every connection until it closes, so conns must carry nothing
// more the test wants to read; the one-minute limit only keeps a broken
// server from hanging the test.
func WaitServerClosed(tb testing.TB, conns []net.Conn, n int) {
	tb.Helper()
	closed := make(chan struct{}, len(conns))
	for _, c := range conns {
		go func() {
			_, _ = c.Read(make([]byte, 1))
			closed <- struct{}{}
		}()
	}
	limit := time.After(time.Minute)
	for got := 0; got < n; got++ {
		select {
		case <-closed:
		case <-limit:
			tb.Fatalf("server closed %d of %d connections in a minute, want %d", got, len(conns), n)
		}
	}
}
