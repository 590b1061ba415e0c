package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// child is a dependency server (redis-server, nats-server) run as a child
// process on a fixed port and data dir, so that it can be killed with
// SIGKILL and started again where it was.
type child struct {
	name  string
	bin   string
	args  []string
	addr  string // host:port it listens on
	log   string // its output, appended across restarts
	ready func(ctx context.Context, addr string) error

	pid  int
	done chan struct{}
}

// start launches the child and waits until ready answers.
func (c *child) start(ctx context.Context) error {
	out, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = out, out
	// The kernel kills the child when the thread that forked it dies;
	// that goroutine keeps its thread until the child is reaped, so a
	// crashed chaos run leaves no servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("chaos: start %s: %w", c.name, err)
	}
	c.pid, c.done = cmd.Process.Pid, done

	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := c.ready(ctx, c.addr)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("chaos: %s exited during start (see %s)", c.name, c.log)
		case <-ctx.Done():
			c.kill()
			return fmt.Errorf("chaos: %s not ready: %w", c.name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL and waits until the child is reaped.
func (c *child) kill() {
	if c.done == nil {
		return
	}
	_ = syscall.Kill(c.pid, syscall.SIGKILL)
	<-c.done
	c.done = nil
}

// lineReady dials addr, optionally sends probe, and expects the first line
// it reads to start with want.
func lineReady(probe, want string) func(ctx context.Context, addr string) error {
	return func(ctx context.Context, addr string) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if probe != "" {
			if _, err := conn.Write([]byte(probe)); err != nil {
				return err
			}
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("%s answers %q", addr, strings.TrimSpace(line))
		}
		return nil
	}
}

// newRedis is a redis-server with its AOF fsynced on every write, the
// durability hubd requires of an external Redis.
func newRedis(dir string, port int) (*child, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("chaos: redis-server is not on PATH (apt-get install -y redis-server)")
	}
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	return &child{
		name: "redis", bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port), log: filepath.Join(dir, "redis.log"),
		args: []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", data,
			"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"},
		// A Redis still loading its AOF answers -LOADING.
		ready: lineReady("PING\r\n", "+PONG"),
	}, nil
}

// newNATS is a nats-server with JetStream on disk, fsynced on every write,
// and no authorisation (every provider may publish on any usage subject;
// the hub's checks of the batch signatures still apply).
func newNATS(dir, bin string, port int) (*child, error) {
	data := filepath.Join(dir, "nats")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:%d\nmax_payload: 1MB\njetstream { store_dir: %q, sync_interval: always }\n", port, data)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	return &child{
		name: "nats", bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port), log: filepath.Join(dir, "nats.log"),
		args:  []string{"-c", conf},
		ready: lineReady("", "INFO "),
	}, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
