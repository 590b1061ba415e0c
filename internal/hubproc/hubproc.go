// Package hubproc starts hubd as a child process and waits until it is
// ready, for the demo, the load test and the end-to-end tests, which all
// drive the real binary the way an operator does.
package hubproc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/internal/datadir"
)

// Config says which hubd to start and how.
type Config struct {
	// Binary is the hubd executable.
	Binary string
	// DataDir is passed as --datadir.
	DataDir string
	// Args are extra flags; the listen addresses default to free ports.
	Args []string
	// Output receives hubd's log; nil discards it.
	Output io.Writer
	// Env are extra environment variables (KEY=VALUE) for hubd, on top of
	// the caller's own, such as a test-only crash point.
	Env []string
	// StartTimeout bounds the wait for readiness; zero means two minutes
	// (a first start may build btcd).
	StartTimeout time.Duration
}

// Proc is a running hubd.
type Proc struct {
	cmd  *exec.Cmd
	dir  datadir.Dir
	rt   datadir.Runtime
	done chan struct{}
	err  error // set before done closes
}

// Start launches hubd and returns once it has published its runtime file.
func Start(ctx context.Context, cfg Config) (*Proc, error) {
	p, err := Launch(cfg)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, cfg.StartTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// Launch starts hubd without waiting for it to be ready, for tests that
// kill it in the middle of its start-up; WaitReady completes what Start
// does.
func Launch(cfg Config) (*Proc, error) {
	args := append([]string{"--datadir", cfg.DataDir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, cfg.Args...)
	cmd := exec.Command(cfg.Binary, args...)
	if len(cfg.Env) > 0 {
		cmd.Env = append(os.Environ(), cfg.Env...)
	}
	if cfg.Output != nil {
		cmd.Stdout, cmd.Stderr = cfg.Output, cfg.Output
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("hubproc: start %s: %w", cfg.Binary, err)
	}
	p := &Proc{cmd: cmd, dir: datadir.Dir(cfg.DataDir), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// WaitReady waits until hubd has published its runtime file, bounded by ctx
// and by timeout (zero means two minutes: a first start may build btcd). It
// kills hubd when the wait times out.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rt, err := p.dir.ReadRuntime()
		if err == nil && rt.PID == p.cmd.Process.Pid {
			p.rt = rt
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("hubproc: hubd exited during start: %v", p.err)
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("hubproc: hubd not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Binary finds an executable named name next to the running program, the
// layout `make build` produces in ./bin.
func Binary(name string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(self), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("hubproc: %s not found next to %s (run make build): %w", name, self, err)
	}
	return p, nil
}

// Runtime is what hubd published about itself; it is zero until Start or
// WaitReady has returned without error.
func (p *Proc) Runtime() datadir.Runtime { return p.rt }

// Pid is hubd's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// HubKey is the hub's identity key, which devices pin.
func (p *Proc) HubKey() (*btcec.PublicKey, error) {
	b, err := hex.DecodeString(p.rt.PubKey)
	if err != nil {
		return nil, err
	}
	return btcec.ParsePubKey(b)
}

// Done is closed when hubd has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits for a clean exit; when ctx ends first it
// kills hubd.
func (p *Proc) Stop(ctx context.Context) error {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			return fmt.Errorf("hubproc: hubd exited: %w", p.err)
		}
		return nil
	case <-ctx.Done():
		p.Kill()
		return fmt.Errorf("hubproc: hubd did not stop: %w", ctx.Err())
	}
}

// Kill sends SIGKILL, as a crash would, and waits until hubd is reaped.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

func (p *Proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}
