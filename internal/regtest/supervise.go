package regtest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
)

// Restart backoff of a Supervisor: the first restart comes after
// MinRestartDelay, each one that follows a short-lived run (or a failed
// start) waits twice as long, up to MaxRestartDelay; a node that ran for
// StableRun before it died starts the sequence again.
const (
	MinRestartDelay = 200 * time.Millisecond
	MaxRestartDelay = 15 * time.Second
	StableRun       = time.Minute
)

// Supervisor keeps a regtest node running: when btcd exits without being
// stopped (it crashed, or was killed), it is started again, with backoff,
// on the same Dir, so the chain is replayed from the archive, with the same
// RPC credentials. Clients use the Supervisor's own RPC address, a relay to
// whichever btcd is ready (RPC), so every client (the hub's chain adapter,
// hubctl through the runtime file) reaches the new process without being
// told, and none sees a chain half replayed. The mempool is lost as in any
// restart: unconfirmed transactions must be broadcast again.
//
// A node that is stopped with SIGSTOP has not exited and is left alone;
// its clients' call deadlines cover it, and it answers again once
// continued.
type Supervisor struct {
	cfg  Config
	cert []byte
	log  *slog.Logger

	proxy *rpcProxy

	mu   sync.Mutex
	node *Node // the current node; nil while restarting

	restarts atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// Supervise starts a node as Start does and keeps it running until Stop.
func Supervise(ctx context.Context, cfg Config) (*Supervisor, error) {
	creds, err := freshCreds()
	if err != nil {
		return nil, err
	}
	cfg.creds = creds
	proxy, err := newRPCProxy()
	if err != nil {
		return nil, fmt.Errorf("regtest: rpc relay: %w", err)
	}
	n, err := Start(ctx, cfg)
	if err != nil {
		proxy.close()
		return nil, err
	}
	proxy.setTarget(n.rpc.Host)
	// Restarts use the first node's resolved config (Dir made absolute,
	// defaults filled).
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Supervisor{cfg: n.cfg, cert: n.rpc.Cert, log: n.log, proxy: proxy, node: n, cancel: cancel}
	s.wg.Add(1)
	go s.run(runCtx, n)
	return s, nil
}

// run waits for the current node to exit and starts another, until ctx is
// cancelled by Stop.
func (s *Supervisor) run(ctx context.Context, n *Node) {
	defer s.wg.Done()
	delay := MinRestartDelay
	for {
		started := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-n.Exited():
		}
		s.proxy.setTarget("")
		s.mu.Lock()
		s.node = nil
		s.mu.Unlock()
		// Stop on an exited node only releases what it held (archive,
		// clients, pid file).
		_ = n.Stop(ctx)
		if time.Since(started) >= StableRun {
			delay = MinRestartDelay
		}
		s.log.Warn("btcd exited unexpectedly, restarting", "pid", n.Pid(), "err", n.waitErr, "after", delay)

		for {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(2*delay, MaxRestartDelay)
			next, err := Start(ctx, s.cfg)
			if err == nil {
				n = next
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Error("btcd restart failed, retrying", "err", err, "after", delay)
		}
		s.restarts.Add(1)
		s.mu.Lock()
		s.node = n
		s.mu.Unlock()
		s.proxy.setTarget(n.rpc.Host)
		s.log.Info("btcd restarted", "pid", n.Pid(), "restarts", s.restarts.Load(), "blocks", n.replayed)
	}
}

// Node returns the node running now, or nil while it is being restarted.
func (s *Supervisor) Node() *Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node
}

// current returns the running node or an error saying why there is none.
func (s *Supervisor) current() (*Node, error) {
	if n := s.Node(); n != nil {
		return n, nil
	}
	return nil, ErrExited
}

// Restarts returns how many times btcd has been restarted.
func (s *Supervisor) Restarts() int64 { return s.restarts.Load() }

// RPC returns the connection parameters of the Supervisor's RPC address;
// they stay the same across restarts.
func (s *Supervisor) RPC() RPCConfig {
	return RPCConfig{
		Host: s.proxy.addr(), User: s.cfg.creds.user, Pass: s.cfg.creds.pass,
		// btcd keeps its certificate and key in Dir and makes new ones
		// only when they are missing.
		Cert: s.cert, CertPath: filepath.Join(s.cfg.Dir, "rpc.cert"),
	}
}

// Pid returns the process id of the btcd running now, 0 while restarting.
func (s *Supervisor) Pid() int {
	if n := s.Node(); n != nil {
		return n.Pid()
	}
	return 0
}

// Mine mines blocks on the node running now; see Node.Mine.
func (s *Supervisor) Mine(ctx context.Context, blocks uint32) ([]chainhash.Hash, error) {
	n, err := s.current()
	if err != nil {
		return nil, err
	}
	return n.Mine(ctx, blocks)
}

// MineToActivation mines to ActivationHeight on the node running now; see
// Node.MineToActivation.
func (s *Supervisor) MineToActivation(ctx context.Context) error {
	n, err := s.current()
	if err != nil {
		return err
	}
	return n.MineToActivation(ctx)
}

// Stop ends supervision, waiting for a restart under way to finish or give
// up, then stops the node as Node.Stop does. It is safe to call more than
// once.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		if n := s.Node(); n != nil {
			s.stopErr = n.Stop(ctx)
		}
		s.proxy.close()
	})
	return s.stopErr
}
