// Package natsjwttest starts nats-server processes in operator mode,
// configured with nothing about the hub but an Authority's ServerConfig,
// and connects users to them, for tests.
package natsjwttest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/internal/natsjwt"
)

// Server is a nats-server child process with JetStream on disk, trusting
// an Authority, restartable on the same port, resolver and store.
type Server struct {
	// URL is the client URL.
	URL string

	t        testing.TB
	bin, dir string
	addr     string
	cmd      *exec.Cmd
	done     chan struct{}
	logf     *os.File
}

// Start writes a server config including a.ServerConfig (its full
// resolver and the JetStream store in a temporary directory) and starts
// bin (a nats-server binary) with it on a free port. It returns once the
// port accepts connections; the test's cleanup stops the server and, if
// the test failed, logs the server's output.
func Start(t testing.TB, bin string, a *natsjwt.Authority) *Server {
	t.Helper()
	dir := t.TempDir()
	include, err := a.ServerConfig(filepath.Join(dir, "resolver"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := os.WriteFile(filepath.Join(dir, "authority.conf"), []byte(include), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream: { store_dir: %q }\ninclude ./authority.conf\n", port, filepath.Join(dir, "js"))
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "nats.log"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		URL: "nats://127.0.0.1:" + strconv.Itoa(port),
		t:   t, bin: bin, dir: dir, addr: "127.0.0.1:" + strconv.Itoa(port), logf: logf,
	}
	t.Cleanup(func() {
		s.Stop()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "nats.log"))
			t.Logf("nats-server log:\n%s", b)
		}
	})
	s.start()
	return s
}

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, "-c", filepath.Join(s.dir, "nats.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = s.logf, s.logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nats-server not listening: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit; it is a no-op when the
// server is not running.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart kills the server and starts it again with the same config.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// CredsFile writes u's credentials to a file in a temporary directory and
// returns its path.
func CredsFile(t testing.TB, u natsjwt.User) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(p, u.Creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// SystemConn connects to url as a new system account user of a (the
// connection Authority.RevokeProviders and Push need); the test's cleanup
// closes it.
func SystemConn(t testing.TB, a *natsjwt.Authority, url string) *nats.Conn {
	t.Helper()
	u, err := a.SystemUser()
	if err != nil {
		t.Fatal(err)
	}
	sys, err := nats.Connect(url, nats.UserCredentials(CredsFile(t, u)))
	if err != nil {
		t.Fatalf("system connect: %v", err)
	}
	t.Cleanup(sys.Close)
	return sys
}

// RevokeAndWait revokes providers ids over sys (see SystemConn) and waits
// up to 10 s for closed, closed by a revoked provider connection's
// ClosedHandler.
func RevokeAndWait(t testing.TB, a *natsjwt.Authority, sys *nats.Conn, closed <-chan struct{}, ids ...string) {
	t.Helper()
	if err := a.RevokeProviders(t.Context(), sys, time.Now(), ids...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("revoked provider still connected")
	}
}
