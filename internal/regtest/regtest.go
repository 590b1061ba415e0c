// Package regtest runs btcd in regression-test mode as a child process of the
// hub, so that `hubd` with no flags, the demo and the integration tests all
// settle against a real bitcoin node without any outside setup.
//
// The child is tied to its parent's life: it gets SIGKILL from the kernel when
// the parent dies for any reason (Pdeathsig), a pid file lets the next start
// clean up after a crash that somehow left it running, and Stop shuts it down
// with SIGTERM before escalating.
//
// The chain survives restarts, including a kill -9 of the hub. btcd deletes
// its regtest block database every time it starts (removeRegressionDB, with
// no flag to turn it off), so the package keeps its own durable copy: an
// append-only archive of raw blocks in Dir (ArchiveFile), which a goroutine
// keeps in step with the node's best chain, following reorganisations, and
// which Mine updates before it returns; blocks mined by other RPC clients
// are archived as soon as btcd announces them on a websocket (within
// ArchiveInterval should that fail), at once by SyncArchive, and at Stop.
// Start replays the archive into the fresh btcd with submitblock, where every
// block is validated again, before it returns. A record cut short by a crash
// in the middle of an append is dropped with a warning. The mempool is not
// kept: unconfirmed transactions are gone after a restart and must be
// broadcast again.
package regtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/m2mhub/m2mhub/internal/btcrpc"
)

// ActivationHeight is the block count after which segwit and taproot are
// active on btcd's regtest network. Both deployments are BIP 9 with a
// 144-block window and no start time: blocks 0–143 are DEFINED, 144–287
// STARTED, 288–431 LOCKED_IN, so the rules apply from block 432 on.
const ActivationHeight = 432

// Default timeouts. The start timeout is generous because the first
// `go tool -n btcd` on a machine compiles btcd (about 30 s on two cores).
const (
	DefaultStartTimeout = 3 * time.Minute
	DefaultStopGrace    = 15 * time.Second
)

// Errors returned by this package.
var (
	// ErrNoBinary means no btcd executable could be found or built.
	ErrNoBinary = errors.New("regtest: btcd binary not found")

	// ErrExited means the btcd process exited before it was stopped.
	ErrExited = errors.New("regtest: btcd exited")

	// ErrNotReady means btcd did not answer RPC within the start timeout.
	ErrNotReady = errors.New("regtest: btcd did not become ready")

	// ErrArchiveLocked means another node, in this process or another,
	// holds the chain archive in Dir for longer than the start timeout.
	ErrArchiveLocked = errors.New("regtest: chain archive locked by another node")

	// ErrArchiveCorrupt means the chain archive file in Dir is not an
	// archive at all (a damaged tail is repaired, not reported).
	ErrArchiveCorrupt = errors.New("regtest: chain archive corrupt")

	// ErrReplay means btcd refused an archived block or ended on a
	// different tip. Removing ArchiveFile from Dir starts a new chain.
	ErrReplay = errors.New("regtest: chain archive replay failed")

	// ErrArchiveClosed means the archive can no longer be written: the
	// node was stopped or btcd exited.
	ErrArchiveClosed = errors.New("regtest: chain archive closed")
)

// Config configures a regtest node.
type Config struct {
	// Dir holds everything the node writes: the chain archive, btcd's
	// data and logs, the RPC TLS certificate and key, its config file and
	// the pid file. It is created if missing. Reusing it keeps the chain.
	Dir string

	// Binary is the btcd executable. When empty, Start looks for `btcd`
	// next to the running executable, then on PATH, then asks
	// `go tool -n btcd` in the current module.
	Binary string

	// MiningAddr receives the coinbase of blocks mined with Mine. Without
	// it btcd refuses the generate RPC.
	MiningAddr string

	// ExtraArgs are appended to btcd's command line.
	ExtraArgs []string

	// StartTimeout bounds finding the binary and waiting for RPC to
	// answer. Zero means DefaultStartTimeout.
	StartTimeout time.Duration

	// StopGrace is how long Stop waits after SIGTERM before SIGKILL. Zero
	// means DefaultStopGrace.
	StopGrace time.Duration

	// ArchiveInterval is how often the best chain is compared with the
	// archive even without a block notification from btcd, to catch
	// blocks mined by other RPC clients and reorgs should a notification
	// be lost. Zero means DefaultArchiveInterval.
	ArchiveInterval time.Duration

	// Logger receives lifecycle events. Nil means slog.Default().
	Logger *slog.Logger

	// pollOnly turns block notifications off, so tests can check the
	// fallback poll on its own.
	pollOnly bool

	// creds, when set, are the RPC credentials to start with instead of
	// fresh ones: a Supervisor restarts btcd with the credentials its
	// clients already hold.
	creds *rpcCreds
}

// rpcCreds are the user and password of a node's RPC server.
type rpcCreds struct{ user, pass string }

// RPCConfig is what a client needs to reach the node's JSON-RPC server.
type RPCConfig struct {
	// Host is "127.0.0.1:port".
	Host string
	// User and Pass are the RPC credentials, random per start.
	User string
	Pass string
	// Cert is the PEM certificate the server presents; CertPath is where
	// btcd wrote it.
	Cert     []byte
	CertPath string
}

// Node is a running btcd regtest child process.
type Node struct {
	cfg     Config
	log     *slog.Logger
	rpc     RPCConfig
	p2p     string
	client  *rpcclient.Client
	batch   *btcrpc.Client
	pid     int
	pidFile string

	// exited is closed by the process owner goroutine after Wait returns;
	// waitErr is written before that and read only after it.
	exited  chan struct{}
	waitErr error
	wg      sync.WaitGroup

	stopOnce sync.Once
	stopErr  error

	// archMu serialises every use of arch, which is nil once closed. The
	// archive loop is owned through archCancel and archWG.
	archMu     sync.Mutex
	arch       *archive
	archCancel context.CancelFunc
	archWG     sync.WaitGroup

	// replayed and replayTook describe the replay done by Start.
	replayed   int
	replayTook time.Duration
}

// Start launches btcd in regtest mode with data under cfg.Dir, on free
// loopback ports, replays the chain archived in cfg.Dir into it and returns
// once its best block is the archive's tip. If a pid file in cfg.Dir names a
// btcd still running from an earlier crashed run, that process is terminated
// first, since it would hold the database lock.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Dir == "" {
		return nil, errors.New("regtest: Config.Dir is required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.ArchiveInterval == 0 {
		cfg.ArchiveInterval = DefaultArchiveInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	if err := killStale(ctx, cfg.Logger, dir); err != nil {
		return nil, err
	}
	// The archive is opened, locked and repaired before btcd is spawned,
	// so a Dir in use or beyond repair fails without starting anything.
	arch, err := openArchive(ctx, filepath.Join(dir, ArchiveFile), cfg.Logger)
	if err != nil {
		return nil, err
	}
	n, err := startNode(ctx, cfg)
	if err != nil {
		arch.close()
		return nil, err
	}

	n.arch = arch
	if err := n.replay(ctx); err != nil {
		n.closeArchive()
		n.kill()
		os.Remove(n.pidFile)
		return nil, err
	}
	// Without notifications the archive still follows, by polling only.
	wake := make(chan struct{}, 1)
	var ws *rpcclient.Client
	if !cfg.pollOnly {
		if ws, err = n.watchBlocks(ctx, wake); err != nil {
			n.log.Warn("no block notifications, archive polls only", "err", err)
		}
	}
	archCtx, archCancel := context.WithCancel(context.Background())
	n.archCancel = archCancel
	n.archWG.Add(1)
	go n.archiveLoop(archCtx, cfg.ArchiveInterval, ws, wake)
	return n, nil
}

// startNode finds the binary and launches btcd, retrying on a port race.
func startNode(ctx context.Context, cfg Config) (*Node, error) {
	bin, err := findBinary(ctx, cfg.Binary)
	if err != nil {
		return nil, err
	}

	// Free ports are found by binding and releasing them, so another
	// process may grab one before btcd does. btcd then exits at once;
	// retrying with fresh ports covers that race.
	const attempts = 3
	var lastErr error
	for range attempts {
		n, err := launch(ctx, cfg, bin)
		if err == nil {
			return n, nil
		}
		lastErr = err
		if !errors.Is(err, ErrExited) || ctx.Err() != nil {
			break
		}
		cfg.Logger.Warn("btcd exited during startup, retrying", "err", err)
	}
	return nil, lastErr
}

// launch makes one attempt at starting btcd and waiting for it.
func launch(ctx context.Context, cfg Config, bin string) (*Node, error) {
	rpcHost, p2pHost, err := freeHosts()
	if err != nil {
		return nil, err
	}
	creds := cfg.creds
	if creds == nil {
		if creds, err = freshCreds(); err != nil {
			return nil, err
		}
	}
	user, pass := creds.user, creds.pass

	// Credentials go in a 0600 config file rather than on the command
	// line, where any local user could read them from /proc.
	confPath := filepath.Join(cfg.Dir, "btcd.conf")
	conf := fmt.Sprintf("[Application Options]\nrpcuser=%s\nrpcpass=%s\n", user, pass)
	if err := writeFileAtomic(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}

	certPath := filepath.Join(cfg.Dir, "rpc.cert")
	args := []string{
		"--regtest",
		"--configfile=" + confPath,
		"--datadir=" + filepath.Join(cfg.Dir, "data"),
		"--logdir=" + filepath.Join(cfg.Dir, "logs"),
		"--rpccert=" + certPath,
		"--rpckey=" + filepath.Join(cfg.Dir, "rpc.key"),
		"--rpclisten=" + rpcHost,
		"--listen=" + p2pHost,
		"--txindex",
		"--addrindex",
		"--nodnsseed",
		// TLS on the RPC server is btcd's default (there is no
		// --notls=false: go-flags booleans take no value), so the
		// certificate above is always generated and used.
	}
	if cfg.MiningAddr != "" {
		args = append(args, "--miningaddr="+cfg.MiningAddr)
	}
	args = append(args, cfg.ExtraArgs...)

	// btcd logs to its logdir and duplicates to stdout; the copy goes to a
	// file handed straight to the child, so no copying goroutine is needed
	// and a crash leaves its last words on disk.
	outPath := filepath.Join(cfg.Dir, "btcd.out")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	defer out.Close()

	cmd := exec.Command(bin, args...)
	cmd.Dir = cfg.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a Ctrl-C aimed at hubd's terminal does not
		// hit btcd directly; hubd stops it in order.
		Setpgid: true,
		// The kernel sends SIGKILL when the parent *thread* that forked
		// dies, not the parent process. The forking goroutine below
		// locks its OS thread and keeps it until the child is reaped,
		// so that thread lives exactly as long as the child needs it.
		Pdeathsig: syscall.SIGKILL,
	}

	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "btcd"),
		rpc:     RPCConfig{Host: rpcHost, User: user, Pass: pass, CertPath: certPath},
		p2p:     p2pHost,
		pidFile: filepath.Join(cfg.Dir, "btcd.pid"),
		exited:  make(chan struct{}),
	}

	started := make(chan error, 1)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		// Never unlocked: when this goroutine returns, the runtime
		// terminates the thread, which is harmless since the child is
		// already gone by then.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	if err := <-started; err != nil {
		n.wg.Wait()
		return nil, fmt.Errorf("regtest: start %s: %w", bin, err)
	}
	n.pid = cmd.Process.Pid
	if err := writeFileAtomic(n.pidFile, []byte(strconv.Itoa(n.pid)+"\n"), 0o600); err != nil {
		n.kill()
		return nil, err
	}
	n.log.Info("btcd started", "pid", n.pid, "rpc", rpcHost, "p2p", p2pHost, "bin", bin)

	if err := n.waitReady(ctx); err != nil {
		n.kill()
		os.Remove(n.pidFile)
		tail := tailFile(outPath, 2048)
		return nil, fmt.Errorf("%w (output: %s)", err, tail)
	}
	return n, nil
}

// waitReady polls until the RPC server answers getblockcount. A plain TCP dial
// comes first because rpcclient retries refused connections with a backoff of
// many seconds, which would make polling sluggish.
func (n *Node) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w (last: %v)", ErrNotReady, ctx.Err(), lastErr)
		case <-n.exited:
			return fmt.Errorf("%w during startup: %v", ErrExited, n.waitErr)
		case <-tick.C:
		}

		conn, err := net.DialTimeout("tcp", n.rpc.Host, time.Second)
		if err != nil {
			lastErr = err
			continue
		}
		conn.Close()

		if n.client == nil {
			// btcd writes the certificate before it listens, so it
			// exists once the port accepts connections.
			cert, err := os.ReadFile(n.rpc.CertPath)
			if err != nil {
				lastErr = err
				continue
			}
			n.rpc.Cert = cert
			n.batch = btcrpc.New(btcrpc.Config{
				Host: n.rpc.Host, User: n.rpc.User, Pass: n.rpc.Pass, Cert: cert,
			})
			c, err := rpcclient.New(&rpcclient.ConnConfig{
				Host:         n.rpc.Host,
				User:         n.rpc.User,
				Pass:         n.rpc.Pass,
				Certificates: cert,
				HTTPPostMode: true,
			}, nil)
			if err != nil {
				return fmt.Errorf("regtest: rpc client: %w", err)
			}
			n.client = c
		}

		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = n.BlockCount(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
	}
}

// RPC returns the connection parameters of the node's RPC server.
func (n *Node) RPC() RPCConfig { return n.rpc }

// P2PAddr returns the loopback address btcd listens on for peers.
func (n *Node) P2PAddr() string { return n.p2p }

// Params returns the chain parameters of the node, always regtest.
func (n *Node) Params() *chaincfg.Params { return &chaincfg.RegressionNetParams }

// Client returns the node's RPC client (HTTP POST mode, TLS). It stays owned
// by the node and is shut down by Stop.
func (n *Node) Client() *rpcclient.Client { return n.client }

// Pid returns the process id of btcd.
func (n *Node) Pid() int { return n.pid }

// Exited is closed when the btcd process has exited, whether by Stop or not.
func (n *Node) Exited() <-chan struct{} { return n.exited }

// Stop archives any blocks not yet archived, then shuts btcd down: SIGTERM,
// then SIGKILL if it has not exited within the grace period or before ctx is
// done. It always waits until the process is reaped, closes the archive and
// the RPC client and removes the pid file. It is safe to call more than once.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx) })
	return n.stopErr
}

func (n *Node) stop(ctx context.Context) error {
	// A last sync keeps the blocks other clients mined since the previous
	// poll; it needs btcd, so it comes before btcd is told to go.
	n.archCancel()
	n.archWG.Wait()
	select {
	case <-n.exited:
	default:
		syncCtx, cancel := context.WithTimeout(ctx, n.cfg.StopGrace)
		if err := n.syncArchive(syncCtx); err != nil && !errors.Is(err, ErrArchiveClosed) {
			n.log.Warn("final chain archive sync failed", "err", err)
		}
		cancel()
	}
	if err := n.closeArchive(); err != nil {
		n.log.Warn("closing chain archive", "err", err)
	}
	if n.batch != nil {
		n.batch.Close()
	}

	if n.client != nil {
		n.client.Shutdown()
		n.client.WaitForShutdown()
	}
	defer os.Remove(n.pidFile)

	select {
	case <-n.exited:
		n.wg.Wait()
		n.log.Warn("btcd had already exited", "pid", n.pid, "err", n.waitErr)
		return nil
	default:
	}

	_ = syscall.Kill(n.pid, syscall.SIGTERM)
	grace := time.NewTimer(n.cfg.StopGrace)
	defer grace.Stop()
	select {
	case <-n.exited:
		n.wg.Wait()
		n.log.Info("btcd stopped", "pid", n.pid)
		return nil
	case <-grace.C:
		n.log.Warn("btcd ignored SIGTERM, killing", "pid", n.pid)
	case <-ctx.Done():
		n.log.Warn("stop cancelled, killing btcd", "pid", n.pid)
	}
	n.kill()
	return nil
}

// kill sends SIGKILL and waits until the child is reaped.
func (n *Node) kill() {
	_ = syscall.Kill(n.pid, syscall.SIGKILL)
	<-n.exited
	n.wg.Wait()
	if n.client != nil {
		n.client.Shutdown()
		n.client.WaitForShutdown()
	}
}

// call sends one JSON-RPC command and waits for its answer or for ctx.
func (n *Node) call(ctx context.Context, cmd any, result any) error {
	if n.batch == nil {
		return fmt.Errorf("regtest: no rpc client")
	}
	return n.batch.Call(ctx, cmd, result)
}

// BlockCount returns the height of the best block.
func (n *Node) BlockCount(ctx context.Context) (int64, error) {
	var count int64
	if err := n.call(ctx, btcjson.NewGetBlockCountCmd(), &count); err != nil {
		return 0, fmt.Errorf("regtest: getblockcount: %w", err)
	}
	return count, nil
}

// Mine mines n blocks paying Config.MiningAddr and returns their hashes once
// they are in the chain archive, so they survive even a kill -9 right after
// Mine returns. If archiving fails the blocks exist in btcd but Mine returns
// the error; the archive loop retries.
func (n *Node) Mine(ctx context.Context, blocks uint32) ([]chainhash.Hash, error) {
	var hexes []string
	if err := n.call(ctx, btcjson.NewGenerateCmd(blocks), &hexes); err != nil {
		return nil, fmt.Errorf("regtest: generate %d: %w", blocks, err)
	}
	hashes := make([]chainhash.Hash, len(hexes))
	for i, h := range hexes {
		hash, err := chainhash.NewHashFromStr(h)
		if err != nil {
			return nil, fmt.Errorf("regtest: generate: %w", err)
		}
		hashes[i] = *hash
	}
	if err := n.syncArchive(ctx); err != nil {
		return nil, fmt.Errorf("regtest: archive mined blocks: %w", err)
	}
	return hashes, nil
}

// MineToActivation mines until the chain is at ActivationHeight, so that the
// next block, and any transaction in the mempool, is under segwit and taproot
// rules. It does nothing if the chain is already there.
func (n *Node) MineToActivation(ctx context.Context) error {
	count, err := n.BlockCount(ctx)
	if err != nil {
		return err
	}
	if count >= ActivationHeight {
		return nil
	}
	_, err = n.Mine(ctx, uint32(ActivationHeight-count))
	return err
}

// freeHosts returns two distinct free loopback addresses, for RPC and P2P.
func freeHosts() (string, string, error) {
	rpcPort, p2pPort, err := freePorts()
	if err != nil {
		return "", "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(rpcPort)),
		net.JoinHostPort("127.0.0.1", strconv.Itoa(p2pPort)), nil
}

// freshCreds returns random RPC credentials.
func freshCreds() (*rpcCreds, error) {
	user, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	pass, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	return &rpcCreds{user: user, pass: pass}, nil
}

// freePorts returns two distinct free loopback TCP ports. Both listeners are
// held open together so the two numbers cannot coincide.
func freePorts() (int, int, error) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, fmt.Errorf("regtest: free port: %w", err)
	}
	defer a.Close()
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, fmt.Errorf("regtest: free port: %w", err)
	}
	defer b.Close()
	return a.Addr().(*net.TCPAddr).Port, b.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("regtest: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
