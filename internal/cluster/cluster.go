// Package cluster runs one hub as several hubd processes, the way
// docs/scaling.md describes it, for the failover tests and the load test:
// a 3-node nats-server cluster with JetStream (streams R3, fsync always), a
// redis-server with its AOF on appendfsync always, optionally one btcd
// regtest node, and N hubd with the same identity (hub.key, operator.key,
// wallet.key, admin.token), all on free loopback ports. Stop ends them all;
// Kill, Restart, Pause and Resume act on one process.
//
// nats-server is built from the module go.mod pins (not a system package,
// which is older) once per user cache.
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubproc"
	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSServerModule is the nats-server the harness builds: the version
// go.mod requires.
const NATSServerModule = "github.com/nats-io/nats-server/v2"

// Config says what to start.
type Config struct {
	// Hubd is the hubd executable.
	Hubd string
	// Dir holds every process's data and logs (hubd-<i>.log, nats-<j>/,
	// redis/, btcd/).
	Dir string
	// Instances is how many hubd run (at least 1).
	Instances int
	// NATSNodes is the size of the NATS cluster (default 3); streams get
	// min(NATSNodes, 3) replicas.
	NATSNodes int
	// Btcd starts a regtest btcd shared by the instances, mining to the
	// hub's wallet, with segwit and taproot active. Without it hubd gets
	// no chain flags (each would start its own regtest child).
	Btcd bool
	// HubArgs are extra hubd flags for every instance.
	HubArgs []string
	// Env, when set, are extra environment variables (KEY=VALUE) for
	// each instance's first start, by index (a test-only crash point);
	// Restart starts an instance without them.
	Env [][]string
	// Logger receives the harness's own lines; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running set of processes.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	nats   []*natsNode
	redis  *redisServer
	btcd   *regtest.Node
	hubs   []*hubproc.Proc
	listen []string // each instance's fixed device address
	mu     sync.Mutex
}

// Start starts everything and returns when every hubd is ready. On error
// what was started is stopped.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Instances < 1 {
		cfg.Instances = 1
	}
	if cfg.NATSNodes < 1 {
		cfg.NATSNodes = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	bin, err := NATSServerBinary(ctx)
	if err != nil {
		return nil, err
	}
	// A node that exits during start most often found a port taken
	// between freePort and its bind (the machine is shared): start the
	// cluster again on other ports.
	for attempt := 1; ; attempt++ {
		err := c.startNATS(ctx, bin)
		if err == nil {
			break
		}
		for _, n := range c.nats {
			if n != nil {
				n.kill()
				_ = os.RemoveAll(n.dir)
			}
		}
		if attempt == 3 || !errors.Is(err, errExited) {
			return nil, err
		}
		c.log.Warn("nats cluster start failed; retrying on other ports", "err", err)
	}
	if c.redis, err = startRedis(ctx, filepath.Join(cfg.Dir, "redis")); err != nil {
		return nil, err
	}
	ident := filepath.Join(cfg.Dir, "hubd-0")
	if err := os.MkdirAll(ident, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if cfg.Btcd {
		// The wallet key exists before the node so blocks mine to it.
		addr, err := btcdchain.KeyAddress(filepath.Join(ident, datadir.WalletKeyFile), &chaincfg.RegressionNetParams)
		if err != nil {
			return nil, fmt.Errorf("cluster: wallet key: %w", err)
		}
		c.btcd, err = regtest.Start(ctx, regtest.Config{Dir: filepath.Join(cfg.Dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: c.log})
		if err != nil {
			return nil, fmt.Errorf("cluster: btcd: %w", err)
		}
		if err := c.btcd.MineToActivation(ctx); err != nil {
			return nil, fmt.Errorf("cluster: btcd activation: %w", err)
		}
	}
	c.hubs = make([]*hubproc.Proc, cfg.Instances)
	c.listen = make([]string, cfg.Instances)
	for i := range cfg.Instances {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.listen[i] = "127.0.0.1:" + strconv.Itoa(port)
	}
	// The first instance creates the identity; the others copy it.
	if err := c.RestartEnv(ctx, 0, c.firstEnv(0)...); err != nil {
		return nil, err
	}
	for i := 1; i < cfg.Instances; i++ {
		dir := c.DataDir(i)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		for _, f := range []string{datadir.HubKeyFile, datadir.OperatorKeyFile, datadir.WalletKeyFile, datadir.AdminTokenFile} {
			if err := copyFile(filepath.Join(ident, f), filepath.Join(dir, f)); err != nil {
				return nil, err
			}
		}
		if err := c.RestartEnv(ctx, i, c.firstEnv(i)...); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// firstEnv is Config.Env of instance i.
func (c *Cluster) firstEnv(i int) []string {
	if i < len(c.cfg.Env) {
		return c.cfg.Env[i]
	}
	return nil
}

// Instances is how many hubd the cluster runs.
func (c *Cluster) Instances() int { return len(c.hubs) }

// Hub is instance i's running process (nil while it is down).
func (c *Cluster) Hub(i int) *hubproc.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hubs[i]
}

// DataDir is instance i's data dir (instance 0's holds the identity the
// others copied).
func (c *Cluster) DataDir(i int) string { return filepath.Join(c.cfg.Dir, "hubd-"+strconv.Itoa(i)) }

// Addr is instance i's device (BOLT 8) address; it stays the same across
// restarts.
func (c *Cluster) Addr(i int) string { return c.listen[i] }

// DeviceAddrs is every instance's device address, comma-separated, as
// m2mclient.Dial takes them.
func (c *Cluster) DeviceAddrs() string { return strings.Join(c.listen, ",") }

// NATSURLs is the NATS cluster's client URLs, comma-separated.
func (c *Cluster) NATSURLs() string {
	urls := make([]string, len(c.nats))
	for j, n := range c.nats {
		urls[j] = n.url()
	}
	return strings.Join(urls, ",")
}

// RedisURL is the shared Redis.
func (c *Cluster) RedisURL() string { return c.redis.url() }

// Btcd is the shared regtest node, nil without Config.Btcd.
func (c *Cluster) Btcd() *regtest.Node { return c.btcd }

// LogPath is instance i's log file (appended to across restarts).
func (c *Cluster) LogPath(i int) string {
	return filepath.Join(c.cfg.Dir, "hubd-"+strconv.Itoa(i)+".log")
}

// LogTail is the last n bytes of instance i's log, for failure reports.
func (c *Cluster) LogTail(i, n int) string {
	b, _ := os.ReadFile(c.LogPath(i))
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *Cluster) replicas() int { return min(len(c.nats), 3) }

// hubArgs are instance i's flags on the shared services.
func (c *Cluster) hubArgs(i int) []string {
	args := []string{
		"--listen", c.listen[i],
		"--nats-url", c.NATSURLs(), "--nats-replicas", strconv.Itoa(c.replicas()),
		"--redis-url", c.RedisURL(),
	}
	if c.btcd != nil {
		rpc := c.btcd.RPC()
		args = append(args, "--btcd.rpchost", rpc.Host, "--btcd.rpcuser", rpc.User,
			"--btcd.rpcpass", rpc.Pass, "--btcd.rpccert", rpc.CertPath)
	}
	return append(args, c.cfg.HubArgs...)
}

// Restart starts instance i (after Kill or Stop, or the first time) on its
// data dir and device address, and waits until it is ready.
func (c *Cluster) Restart(ctx context.Context, i int) error { return c.RestartEnv(ctx, i) }

// RestartEnv is Restart with env (KEY=VALUE) added to hubd's environment
// for this start only.
func (c *Cluster) RestartEnv(ctx context.Context, i int, env ...string) error {
	if p := c.Hub(i); p != nil {
		select {
		case <-p.Done():
		default:
			return fmt.Errorf("cluster: instance %d is still running", i)
		}
	}
	logf, err := os.OpenFile(c.LogPath(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	p, err := hubproc.Start(ctx, hubproc.Config{Binary: c.cfg.Hubd, DataDir: c.DataDir(i), Args: c.hubArgs(i), Env: env, Output: logf})
	// hubd holds its own descriptor of the log.
	_ = logf.Close()
	if err != nil {
		return fmt.Errorf("cluster: instance %d: %w\n%s", i, err, c.LogTail(i, 4000))
	}
	c.mu.Lock()
	c.hubs[i] = p
	c.mu.Unlock()
	c.log.Info("hubd ready", "instance", i, "addr", c.listen[i], "pid", p.Pid())
	return nil
}

// Kill ends instance i with SIGKILL, as a crash would.
func (c *Cluster) Kill(i int) {
	if p := c.Hub(i); p != nil {
		p.Kill()
	}
}

// StopHub ends instance i with SIGTERM, as a rolling restart does.
func (c *Cluster) StopHub(ctx context.Context, i int) error {
	if p := c.Hub(i); p != nil {
		return p.Stop(ctx)
	}
	return nil
}

// Pause stops instance i with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(i int) error { return c.signalHub(i, syscall.SIGSTOP) }

// Resume continues instance i after Pause.
func (c *Cluster) Resume(i int) error { return c.signalHub(i, syscall.SIGCONT) }

func (c *Cluster) signalHub(i int, sig syscall.Signal) error {
	p := c.Hub(i)
	if p == nil {
		return fmt.Errorf("cluster: instance %d never started", i)
	}
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		return fmt.Errorf("cluster: signal instance %d: %w", i, err)
	}
	return nil
}

// KillNATS ends NATS node j with SIGKILL.
func (c *Cluster) KillNATS(j int) { c.nats[j].kill() }

// RestartNATS starts NATS node j again on its store and ports.
func (c *Cluster) RestartNATS(ctx context.Context, j int) error { return c.nats[j].start(ctx) }

// Stop kills every process: the hubd first, then btcd, Redis and NATS.
func (c *Cluster) Stop() {
	for i := range c.hubs {
		c.Kill(i)
	}
	if c.btcd != nil {
		_ = c.btcd.Stop(context.Background())
	}
	if c.redis != nil {
		c.redis.kill()
	}
	for _, n := range c.nats {
		n.kill()
	}
}

// startNATS starts the nodes with routes to each other and waits until
// JetStream has a meta leader and answers.
func (c *Cluster) startNATS(ctx context.Context, bin string) error {
	c.nats = make([]*natsNode, c.cfg.NATSNodes)
	for j := range c.nats {
		p, err := freePort()
		if err != nil {
			return err
		}
		rp, err := freePort()
		if err != nil {
			return err
		}
		c.nats[j] = &natsNode{bin: bin, name: "n" + strconv.Itoa(j), dir: filepath.Join(c.cfg.Dir, "nats-"+strconv.Itoa(j)), port: p, routePort: rp}
	}
	for _, n := range c.nats {
		var routes []string
		for _, o := range c.nats {
			if o != n {
				routes = append(routes, fmt.Sprintf("\"nats-route://127.0.0.1:%d\"", o.routePort))
			}
		}
		n.routes = routes
		if err := n.start(ctx); err != nil {
			return err
		}
	}
	return waitJetStream(ctx, c.NATSURLs(), len(c.nats), 60*time.Second)
}

// waitJetStream waits until the cluster can place a stream on replicas
// nodes, which is what hubd asks of it at start (its streams are R3 on a
// 3-node cluster). An answered account info is not enough: the meta leader
// is elected by a majority, and until the last node has joined the meta
// group a replicated stream is refused with "no suitable peers for
// placement". So it creates a small in-memory stream with that many
// replicas, retrying, and deletes it.
func waitJetStream(ctx context.Context, urls string, replicas int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		return fmt.Errorf("cluster: nats connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	probe := jetstream.StreamConfig{
		Name:     "CLUSTER_READY",
		Subjects: []string{"cluster.ready"},
		Storage:  jetstream.MemoryStorage,
		Replicas: replicas,
	}
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.CreateOrUpdateStream(actx, probe)
		if err == nil {
			err = js.DeleteStream(actx, probe.Name)
		}
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: jetstream cannot place %d replicas: %w (last: %w)", replicas, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// natsNode is one nats-server of the cluster.
type natsNode struct {
	bin, name, dir  string
	port, routePort int
	routes          []string
	cmd             *exec.Cmd
	done            chan struct{}
}

func (n *natsNode) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *natsNode) start(ctx context.Context) error {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: m2mhub
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, n.name, n.port, filepath.Join(n.dir, "js"), n.routePort, strings.Join(n.routes, ", "))
	confPath := filepath.Join(n.dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(n.dir, "nats.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(n.bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cluster: start nats-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done = cmd, done
	if err := waitListening(ctx, done, "127.0.0.1:"+strconv.Itoa(n.port), "nats-server "+n.name); err != nil {
		b, _ := os.ReadFile(filepath.Join(n.dir, "nats.log"))
		return fmt.Errorf("%w\n%s", err, b[max(0, len(b)-2000):])
	}
	return nil
}

func (n *natsNode) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// redisServer is the shared redis-server: AOF on, fsync on every write,
// no RDB snapshots (as internal/redistest, without a testing.TB so the
// load test can use it).
type redisServer struct {
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
		if _, serr := os.Stat(bin); serr != nil {
			return nil, fmt.Errorf("cluster: redis-server not found: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cluster: start redis-server: %w", err)
	}
	r := &redisServer{port: port, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(r.done)
	}()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := waitListening(ctx, r.done, addr, "redis-server"); err != nil {
		r.kill()
		return nil, err
	}
	// Listening precedes loading the AOF; PING answers only after.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := redisPing(addr)
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.kill()
			return nil, fmt.Errorf("cluster: redis-server: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

func (r *redisServer) kill() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// errExited is a process's exit before it listened.
var errExited = errors.New("exited during start")

// waitListening waits until addr accepts a TCP connection, the process
// exits (done), or 30 s pass.
func waitListening(ctx context.Context, done <-chan struct{}, addr, what string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("cluster: %s %w", what, errExited)
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s not listening on %s: %w", what, addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var (
	natsBinOnce sync.Once
	natsBin     string
	natsBinErr  error
)

// NATSServerBinary builds nats-server from the module go.mod requires into
// the user cache (once per version; later runs reuse it) and returns its
// path. It must run inside the m2mhub module.
func NATSServerBinary(ctx context.Context) (string, error) {
	natsBinOnce.Do(func() {
		out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", NATSServerModule).Output()
		if err != nil {
			natsBinErr = fmt.Errorf("cluster: version of %s: %w", NATSServerModule, err)
			return
		}
		version := strings.TrimSpace(string(out))
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "m2mhub")
		natsBin = filepath.Join(dir, "nats-server-"+version)
		if _, err := os.Stat(natsBin); err == nil {
			return
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			natsBinErr = fmt.Errorf("cluster: %w", err)
			return
		}
		// Build beside the target and rename, so concurrent test
		// binaries never run a half-written file.
		tmp, err := os.CreateTemp(dir, "nats-server-build-")
		if err != nil {
			natsBinErr = fmt.Errorf("cluster: %w", err)
			return
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", tmp.Name(), NATSServerModule).CombinedOutput(); err != nil {
			natsBinErr = fmt.Errorf("cluster: build nats-server: %w: %s", err, out)
			return
		}
		if err := os.Rename(tmp.Name(), natsBin); err != nil {
			natsBinErr = fmt.Errorf("cluster: %w", err)
		}
	})
	return natsBin, natsBinErr
}

// copyFile copies a key file, keeping it private (hubd refuses loose key
// files).
func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("cluster: copy identity: %w", err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cluster: copy identity: %w", err)
	}
	return nil
}

// freePort finds a free loopback port below Linux's ephemeral range
// (32768–60999): a process restarted on the same port must find it free
// again, and a port the kernel hands out for :0 may meanwhile be taken by
// an outgoing connection's local end.
func freePort() (int, error) {
	for range 100 {
		p := fixedPortMin + rand.IntN(fixedPortMax-fixedPortMin)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, errors.New("cluster: no free port below the ephemeral range")
}

// The range fixed ports are drawn from.
const (
	fixedPortMin = 20000
	fixedPortMax = 32700
)
