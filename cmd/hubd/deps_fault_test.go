package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/internal/redistest"
)

var (
	natsBinOnce sync.Once
	natsBinErr  error
)

// natsServerBinary builds nats-server from the module pinned in go.mod, once.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "nats-server")
	natsBinOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsBinErr = fmt.Errorf("build nats-server: %w: %s", err, out)
		}
	})
	if natsBinErr != nil {
		t.Fatal(natsBinErr)
	}
	return bin
}

// natsChild is an external nats-server with JetStream on disk, a child of
// the test, restartable on the same port and store.
type natsChild struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startNATSChild(t *testing.T) *natsChild {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &natsChild{t: t, bin: natsServerBinary(t), dir: t.TempDir(), port: port}
	n.start()
	t.Cleanup(func() {
		if n.cmd != nil {
			n.cmd.Process.Kill()
			<-n.done
		}
	})
	return n
}

func (n *natsChild) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *natsChild) start() {
	n.t.Helper()
	cmd := exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server not listening: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *natsChild) kill() {
	n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// depPause is how long each outage of the dependency fault tests lasts;
// `make chaos-deps` runs them with 30 s.
var depPause = flag.Duration("deppause", 2*time.Second, "how long TestDependencyFaults and TestBtcdFaults hold each dependency paused or dead")

// holdDown probes /healthz for depPause while deps are paused or dead: each
// answer must name deps, and nothing else, down, and come about when the
// checks' deadline (800 ms) says; the bound leaves room for a loaded
// machine.
func holdDown(t *testing.T, addr string, deps ...string) {
	t.Helper()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for start := time.Now(); ; {
		status, body, took := healthOf(t, addr)
		if status != http.StatusServiceUnavailable || took > 2*time.Second {
			t.Fatalf("/healthz with %v down: %d %v in %v, want 503 within the checks' deadline", deps, status, body, took)
		}
		for k, v := range body {
			if want := map[bool]string{true: "down", false: "ok"}[slices.Contains(deps, k)]; v != want {
				t.Fatalf("/healthz with %v down: %v", deps, body)
			}
		}
		if time.Since(start) >= *depPause {
			t.Logf("/healthz with %v down: %d %v in %v (last of %v)", deps, status, body, took, *depPause)
			return
		}
		<-tick.C
	}
}

// pause stops pid with SIGSTOP and waits until the kernel shows it stopped:
// the signal takes effect asynchronously, and a probe sent just after kill
// could still be answered.
func pause(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the parenthesised command name.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'T' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not stopped 10 s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitDep polls /healthz until dependency dep is reported as want, for up
// to two minutes (a btcd restart replays the chain).
func waitDep(t *testing.T, addr, dep, want string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, body, _ := healthOf(t, addr)
		if body[dep] == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %q in /healthz, want %q: %v", dep, body[dep], want, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// With an external NATS (a real nats-server child) and Redis (a real
// redis-server child with its AOF), each paused (SIGSTOP) and then killed
// -9 and restarted: /healthz names exactly that dependency down, within a
// second of asking, and reports it up again once it is back, without a
// hubd restart.
func TestDependencyFaults(t *testing.T) {
	ns := startNATSChild(t)
	rs := redistest.Start(t)
	p := startHubd(t, t.TempDir(), "--nats-url", ns.url(), "--redis-url", rs.URL())
	addr := p.rt.AdminAddr
	if status, body, _ := healthOf(t, addr); status != http.StatusOK || body["shared"] != "ok" {
		t.Fatalf("/healthz before the faults: %d %v, want every check ok, the shared state's included", status, body)
	}
	// The Redis server holds the store and the shared admin state, each
	// on its own connection with its own check: both go down together.
	for _, c := range []struct {
		name        string
		deps        []string
		pid         func() int
		kill, start func()
	}{
		{"store", []string{"store", "shared"}, rs.Pid, rs.Kill, rs.Restart},
		{"nats", []string{"nats"}, func() int { return ns.cmd.Process.Pid }, ns.kill, ns.start},
	} {
		t.Run(c.name+"Paused", func(t *testing.T) {
			pid := c.pid()
			pause(t, pid)
			holdDown(t, addr, c.deps...)
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			for _, d := range c.deps {
				waitDep(t, addr, d, "ok")
			}
		})
		t.Run(c.name+"Killed", func(t *testing.T) {
			c.kill()
			for _, d := range c.deps {
				waitDep(t, addr, d, "down")
			}
			holdDown(t, addr, c.deps...)
			c.start()
			for _, d := range c.deps {
				waitDep(t, addr, d, "ok")
			}
			select {
			case <-p.Done():
				t.Fatal("hubd exited")
			default:
			}
		})
	}
}
