// Package redistest starts a private redis-server for tests that need a Redis
// with real persistence: append-only file on, fsync on every write, no RDB
// snapshots. The shared Redis on the project machines runs without
// persistence, so durability tests cannot use it.
//
// The server can be killed with SIGKILL and restarted on the same directory
// and port, which is how durability tests simulate a crash.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// defaultBinary is where the project's machines and CI install redis-server.
const defaultBinary = "/usr/bin/redis-server"

// startTimeout bounds how long a start or restart may take before the test
// fails; loading a large AOF after a crash is the slow case.
const startTimeout = 15 * time.Second

// Server is a redis-server child process owned by one test. It is stopped
// when the test ends.
type Server struct {
	t      testing.TB
	binary string
	dir    string
	port   int

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start launches redis-server on a free loopback port with its data in a
// fresh t.TempDir(), waits until it answers PING, and registers a cleanup that
// stops it. A missing redis-server binary fails the test: persistence tests
// must not silently vanish from a run.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if _, statErr := os.Stat(defaultBinary); statErr != nil {
			t.Fatalf("redistest: redis-server not found on PATH or at %s: install redis (e.g. apt-get install redis-server): %v", defaultBinary, err)
		}
		bin = defaultBinary
	}
	s := &Server{t: t, binary: bin, dir: t.TempDir()}
	t.Cleanup(s.stop)

	// Another process may grab the port between our probe and redis-server's
	// bind, so a failed first start is retried on a new port.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v\n%s", lastErr, s.logTail())
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns a redis:// URL for database 0 of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Pid returns the running server's process id, to pause it with SIGSTOP.
func (s *Server) Pid() int {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatalf("redistest: Pid: server is not running")
	}
	return s.cmd.Process.Pid
}

// Dir returns the server's data directory (it holds the AOF).
func (s *Server) Dir() string { return s.dir }

// Kill sends SIGKILL to the server and waits for it to exit, as a crash or
// power loss of the Redis host would end it: nothing is flushed on the way
// out, so only what was already fsynced survives.
func (s *Server) Kill() {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatalf("redistest: Kill: server is not running")
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same directory and port after Kill,
// and waits until it answers PING (which Redis does only after the AOF is
// loaded).
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatalf("redistest: Restart: server is still running; Kill it first")
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart redis-server: %v\n%s", err, s.logTail())
	}
}

// start launches the process and waits for PING. On failure the process is
// gone when it returns.
func (s *Server) start() error {
	cmd := exec.Command(s.binary,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	)
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	// This goroutine is owned by the Server: it ends when the process exits,
	// which Kill and the cleanup both wait for.
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("redis-server exited during start-up (port %d)", s.port)
		default:
		}
		if err := ping(s.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("no PONG within %v: %w", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the process at test cleanup. SIGKILL is enough: the data
// directory is a temporary one that is removed right after.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// logTail returns the end of the server log, to explain a failed start.
func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no redis.log)"
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// ping sends a RESP PING and expects +PONG. Redis answers -LOADING while it
// replays the AOF, which counts as not ready.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
