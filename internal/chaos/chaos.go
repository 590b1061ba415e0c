// Package chaos runs devices with durable client stores and providers
// under load against a real hubd child on external Redis and NATS while
// hubd, its btcd, Redis and NATS are killed with SIGKILL at random and
// started again; then it compares the devices' stores, the hub's ledger and
// the chain. cmd/chaos runs it (make chaos).
package chaos

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/nats-io/nats.go"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubproc"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// Config says what to run and for how long.
type Config struct {
	// HubdBinary and NATSBinary are the executables; hubd finds btcd next
	// to itself. redis-server comes from PATH.
	HubdBinary string
	NATSBinary string
	// Dir holds every data dir and log; it is kept for inspection.
	Dir string
	// Duration is how long faults are injected under load.
	Duration time.Duration
	// Devices and Providers size the fleet.
	Devices, Providers int
	// MinGap and MaxGap bound the pause between two faults.
	MinGap, MaxGap time.Duration
	// UniqueIDs makes event ids unique across providers. By default the
	// providers draw ids from the same sequence, as the metering docs
	// allow (an id is unique per provider only).
	UniqueIDs bool
	// Outages, when set, replaces the random faults: each outage in
	// turn, MinGap apart, under the same load (Duration is then unused).
	Outages []Outage
	// Seed draws the faults and amounts; zero takes the clock.
	Seed uint64
	// Say reports progress; nil is quiet.
	Say func(format string, args ...any)
}

// Result is what the comparison found.
type Result struct {
	Faults         int
	FaultsByTarget map[string]int
	// Acked is the number of payments Pay returned with a receipt;
	// Lost and Doubled are defined in cmd/chaos's doc.
	Acked, Lost, Doubled int
	// Accepted is the number of events Meter reported sent; Charged and
	// DeadLettered are those the hub holds; EventsLost the rest.
	Accepted, Charged, DeadLettered, EventsLost int
	// LostSharedID is how many of the lost events share their id with an
	// event another provider sent (ids are unique per provider only).
	LostSharedID int
	// PayErrors counts failed Pay calls by kind (expected during faults).
	PayErrors map[string]int
	// Problems are inconsistencies outside the three counts (chain,
	// recovery) that fail the run too.
	Problems []string
}

// OK reports whether nothing was lost, doubled or inconsistent.
func (r Result) OK() bool {
	return r.Lost == 0 && r.Doubled == 0 && r.EventsLost == 0 && len(r.Problems) == 0
}

// Line is the run's summary line.
func (r Result) Line() string {
	return fmt.Sprintf("faults %d, acknowledged payments lost %d, doubled %d, events lost %d",
		r.Faults, r.Lost, r.Doubled, r.EventsLost)
}

// run is one chaos run's world.
type run struct {
	cfg  Config
	say  func(string, ...any)
	rng  *rand.Rand
	quit *slog.Logger

	redis, nats *child
	hubDir      datadir.Dir
	hubArgs     []string
	hubLog      *os.File
	proc        *hubproc.Proc
	hubKey      *btcec.PublicKey
	p2pAddr     string
	adminAddr   string

	devices []*device
	provs   []*provider

	mu  sync.Mutex
	res Result
}

type device struct {
	id   string
	key  *btcec.PrivateKey
	dir  string
	sess *m2mclient.Session
	dev  *m2mclient.Device
	ch   btcwire.OutPoint

	mu      sync.Mutex
	acked   int
	ackSeq  uint64
	ackPaid msat.Amount
}

type provider struct {
	id       string
	key      *btcec.PrivateKey
	contract string
	nc       *nats.Conn
	meter    *m2mclient.Meter

	mu       sync.Mutex
	accepted []string // event ids Meter reported sent
}

// Run sets the world up, injects faults under load for cfg.Duration,
// drains, and compares.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Devices <= 0 {
		cfg.Devices = 4
	}
	if cfg.Providers <= 0 {
		cfg.Providers = 2
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = 4 * time.Second
	}
	if cfg.MaxGap <= cfg.MinGap {
		cfg.MaxGap = cfg.MinGap + 8*time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	r := &run{
		cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 7)),
		quit: slog.New(slog.NewTextHandler(io.Discard, nil)),
		res:  Result{FaultsByTarget: map[string]int{}, PayErrors: map[string]int{}},
	}
	r.say = cfg.Say
	if r.say == nil {
		r.say = func(string, ...any) {}
	}
	r.say("seed %d, work dir %s", cfg.Seed, cfg.Dir)
	defer r.close()
	if err := r.startDeps(ctx); err != nil {
		return r.res, err
	}
	if err := r.setup(ctx); err != nil {
		return r.res, err
	}
	setupHeight, err := r.blockCount(ctx)
	if err != nil {
		return r.res, err
	}

	if len(cfg.Outages) > 0 {
		r.say("load and %d scripted outages", len(cfg.Outages))
	} else {
		r.say("load and faults for %v", cfg.Duration)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, d := range r.devices {
		wg.Add(1)
		go func() { defer wg.Done(); r.payLoop(loadCtx, d) }()
	}
	for i, p := range r.provs {
		wg.Add(1)
		go func() { defer wg.Done(); r.meterLoop(loadCtx, i, p) }()
	}
	var ferr error
	if len(cfg.Outages) > 0 {
		ferr = r.outages(ctx)
	} else {
		ferr = r.faults(ctx, time.Now().Add(cfg.Duration))
	}
	stopLoad()
	wg.Wait()
	if ferr != nil {
		return r.res, ferr
	}
	r.say("faults over (%d); draining", r.res.Faults)
	if err := r.drain(ctx); err != nil {
		return r.res, err
	}
	if err := r.checkChain(ctx, setupHeight); err != nil {
		return r.res, err
	}
	if err := r.compare(ctx); err != nil {
		return r.res, err
	}
	return r.res, nil
}

// startDeps starts Redis and NATS on fixed ports and picks hubd's.
func (r *run) startDeps(ctx context.Context) error {
	ports := make([]int, 5)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	var err error
	if r.redis, err = newRedis(r.cfg.Dir, ports[0]); err != nil {
		return err
	}
	if r.nats, err = newNATS(r.cfg.Dir, r.cfg.NATSBinary, ports[1]); err != nil {
		return err
	}
	if err := r.redis.start(ctx); err != nil {
		return err
	}
	if err := r.nats.start(ctx); err != nil {
		return err
	}
	r.p2pAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
	r.adminAddr = fmt.Sprintf("127.0.0.1:%d", ports[3])
	r.hubDir = datadir.Dir(filepath.Join(r.cfg.Dir, "hub"))
	r.hubArgs = []string{
		"--listen", r.p2pAddr, "--admin", r.adminAddr, "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[4]),
		"--redis-url", "redis://" + r.redis.addr + "/0",
		"--nats-url", "nats://" + r.nats.addr,
		"--loglevel", "warn",
		"--limits.ping-interval", "1s", "--limits.pong-timeout", "3s",
		"--channels.poll-interval", "200ms", "--channels.min-expiry-delta", "100",
		"--channels.credit-limit-msat", "10000000",
	}
	r.hubLog, err = os.OpenFile(filepath.Join(r.cfg.Dir, "hubd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	return err
}

// startHub starts hubd on its data dir, retrying a start that fails while
// a dependency is still recovering.
func (r *run) startHub(ctx context.Context) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		fmt.Fprintf(r.hubLog, "--- chaos: starting hubd (attempt %d) at %s\n", attempt, time.Now().Format(time.RFC3339Nano))
		var p *hubproc.Proc
		p, err = hubproc.Start(ctx, hubproc.Config{
			Binary: r.cfg.HubdBinary, DataDir: string(r.hubDir), Args: r.hubArgs, Output: r.hubLog, StartTimeout: 3 * time.Minute,
		})
		if err == nil {
			r.proc = p
			k, err := p.HubKey()
			if err != nil {
				return err
			}
			if r.hubKey != nil && !r.hubKey.IsEqual(k) {
				return errors.New("chaos: the hub key changed across a restart")
			}
			r.hubKey = k
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	return fmt.Errorf("chaos: hubd does not start (see %s): %w", r.hubLog.Name(), err)
}

func (r *run) admin() (*httpapi.Client, error) {
	token, err := r.hubDir.ReadToken(datadir.AdminTokenFile)
	if err != nil {
		return nil, err
	}
	return httpapi.NewClient(r.adminAddr, token), nil
}

// chain connects to the btcd of the running hubd, as hubd.json names it.
func (r *run) chain() (*btcdchain.Client, error) {
	rt, err := r.hubDir.ReadRuntime()
	if err != nil {
		return nil, err
	}
	if rt.Btcd == nil {
		return nil, errors.New("chaos: hubd.json names no regtest btcd")
	}
	return btcdchain.New(btcdchain.Config{
		Host: rt.Btcd.Host, User: rt.Btcd.User, Pass: rt.Btcd.Pass, CertPath: rt.Btcd.CertPath,
		Params: &chaincfg.RegressionNetParams, Logger: r.quit,
	})
}

func (r *run) blockCount(ctx context.Context) (int32, error) {
	c, err := r.chain()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.BlockCount(ctx)
}

// tollContract is a toll tariff in msat with a 1 % hub fee and no
// security rules (a chaos run must not freeze its own fleet).
func tollContract(id string) []byte {
	return []byte(`{"kind":"toll","version":1,"id":"` + id + `","currency":"msat","fee":{"bps":"100"},` +
		`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"1000","truck":"4000","motorcycle":"250"}}}`)
}

// setup starts hubd, enrols the fleet, publishes a contract, and opens and
// funds one channel per device from the hub's regtest wallet.
func (r *run) setup(ctx context.Context) error {
	r.say("starting hubd (Redis %s, NATS %s, btcd regtest child)", r.redis.addr, r.nats.addr)
	if err := r.startHub(ctx); err != nil {
		return err
	}
	admin, err := r.admin()
	if err != nil {
		return err
	}
	rec, err := admin.PublishContract(ctx, tollContract("chaos-toll-"+strconv.FormatUint(r.cfg.Seed, 36)))
	if err != nil {
		return fmt.Errorf("chaos: publish contract: %w", err)
	}
	contract := hex.EncodeToString(rec.Hash[:])
	var provIDs []string
	for range r.cfg.Providers {
		key, err := btcec.NewPrivateKey()
		if err != nil {
			return err
		}
		p, err := admin.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(key.PubKey()), Owner: "chaos", Kind: "toll"})
		if err != nil {
			return fmt.Errorf("chaos: add provider: %w", err)
		}
		pr := &provider{id: p.Device.ID, key: key, contract: contract}
		pr.nc, err = nats.Connect("nats://"+r.nats.addr, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.CustomInboxPrefix(metering.InboxPrefix(pr.id)))
		if err != nil {
			return err
		}
		pr.meter, err = m2mclient.NewMeter(m2mclient.MeterConfig{
			Conn: pr.nc, ProviderID: pr.id, Key: key, HubKey: r.hubKey, MaxBatch: 10, Retry: 200 * time.Millisecond, Logger: r.quit,
		})
		if err != nil {
			return err
		}
		r.provs = append(r.provs, pr)
		provIDs = append(provIDs, pr.id)
	}
	for i := range r.cfg.Devices {
		key, err := btcec.NewPrivateKey()
		if err != nil {
			return err
		}
		hd, err := admin.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(key.PubKey()), Roles: []hub.Role{hub.RolePayer}, Owner: "chaos", Kind: "car"})
		if err != nil {
			return fmt.Errorf("chaos: add device: %w", err)
		}
		d := &device{id: hd.ID, key: key, dir: filepath.Join(r.cfg.Dir, "device-"+strconv.Itoa(i))}
		d.sess, err = m2mclient.Dial(ctx, r.p2pAddr, r.hubKey, key,
			m2mclient.WithBackoff(50*time.Millisecond, 500*time.Millisecond), m2mclient.WithLogger(r.quit))
		if err != nil {
			return fmt.Errorf("chaos: dial: %w", err)
		}
		d.dev, err = m2mclient.NewDevice(d.sess, m2mclient.DeviceConfig{
			Key: key, HubKey: r.hubKey, Params: &chaincfg.RegressionNetParams, Dir: d.dir, Logger: r.quit,
			Policy: m2mclient.Policy{MaxPerPayment: 20_000, AllowedProviders: provIDs},
		})
		if err != nil {
			return err
		}
		r.devices = append(r.devices, d)
	}
	r.say("enrolled %d devices and %d providers; funding channels", len(r.devices), len(r.provs))
	return r.fund(ctx)
}

// fund opens each device's channel, funded by the hub's mining wallet (a
// regtest faucet), mining while the devices wait.
func (r *run) fund(ctx context.Context) error {
	chain, err := r.chain()
	if err != nil {
		return err
	}
	defer chain.Close()
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: r.hubDir.Path(datadir.WalletKeyFile), Chain: chain, Logger: r.quit,
	})
	if err != nil {
		return err
	}
	height, err := chain.BlockCount(ctx)
	if err != nil {
		return err
	}
	defer chain.MineEvery(ctx, 300*time.Millisecond)()
	lookup := func(ctx context.Context, id chainhash.Hash) (*btcwire.MsgTx, error) {
		info, err := chain.GetTx(ctx, id)
		return info.Tx, err
	}
	for _, d := range r.devices {
		octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		ch, err := d.dev.FundAndOpen(octx, wallet, lookup, btcutil.Amount(1_000_000), uint32(height)+2000)
		cancel()
		if err != nil {
			return fmt.Errorf("chaos: open channel: %w", err)
		}
		if ch.Status != m2mclient.StatusReady {
			return fmt.Errorf("chaos: channel %v is %s", ch.ID, ch.Status)
		}
		d.ch = ch.ID
	}
	return nil
}

// payLoop pays a random provider small amounts until ctx ends. A failed
// Pay is expected while something is down; the next one resolves a
// payment left pending.
func (r *run) payLoop(ctx context.Context, d *device) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(len(d.id))^uint64(d.key.PubKey().SerializeCompressed()[1])))
	for ctx.Err() == nil {
		p := r.provs[rng.IntN(len(r.provs))]
		amt := msat.Amount(1 + rng.IntN(5_000))
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		rc, err := d.dev.Pay(pctx, d.ch, p.id, amt, "")
		cancel()
		if err == nil {
			d.mu.Lock()
			d.acked++
			if rc.Seq > d.ackSeq {
				d.ackSeq, d.ackPaid = rc.Seq, rc.Paid
			}
			d.mu.Unlock()
			pause(ctx, 20*time.Millisecond)
			continue
		}
		if ctx.Err() == nil {
			r.mu.Lock()
			r.res.PayErrors[payErrorKind(err)]++
			r.mu.Unlock()
		}
		pause(ctx, 200*time.Millisecond)
	}
}

func payErrorKind(err error) string {
	var ce *m2mclient.ChannelError
	switch {
	case errors.As(err, &ce):
		return "refused:" + ce.Code
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, m2mclient.ErrPolicy):
		return "policy"
	case errors.Is(err, m2mclient.ErrNotReady):
		return "not-ready"
	}
	return "other"
}

// meterLoop publishes batches of toll passages by the devices until ctx
// ends, remembering the ids of every batch Meter reported sent.
func (r *run) meterLoop(ctx context.Context, index int, p *provider) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(1000+index)))
	for b := 0; ctx.Err() == nil; b++ {
		n := 1 + rng.IntN(5)
		evs := make([]metering.Event, n)
		ids := make([]string, n)
		now := time.Now().UTC()
		for i := range evs {
			payer := r.devices[rng.IntN(len(r.devices))]
			ids[i] = fmt.Sprintf("chaos-%d-%d", b, i)
			if r.cfg.UniqueIDs {
				ids[i] = fmt.Sprintf("chaos-p%d-%d-%d", index, b, i)
			}
			evs[i] = metering.Event{ID: ids[i], Subject: payer.id, Time: now.Format(time.RFC3339Nano),
				Data: metering.Data{Contract: p.contract, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
		}
		mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := p.meter.Meter(mctx, evs...)
		cancel()
		if err == nil {
			p.mu.Lock()
			p.accepted = append(p.accepted, ids...)
			p.mu.Unlock()
		}
		pause(ctx, 100*time.Millisecond)
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// targets are what a fault kills.
var targets = []string{"hubd", "btcd", "redis", "nats"}

// faults kills one target at a random moment after another until end,
// starting each again (btcd is hubd's child: hubd is expected to restart
// it) before the next fault.
func (r *run) faults(ctx context.Context, end time.Time) error {
	for {
		gap := r.cfg.MinGap + time.Duration(r.rng.Int64N(int64(r.cfg.MaxGap-r.cfg.MinGap)))
		if time.Now().Add(gap).After(end) {
			return nil
		}
		pause(ctx, gap)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		target := targets[r.rng.IntN(len(targets))]
		down := time.Duration(r.rng.Int64N(int64(2 * time.Second)))
		r.mu.Lock()
		r.res.Faults++
		r.res.FaultsByTarget[target]++
		n := r.res.Faults
		r.mu.Unlock()
		r.say("fault %d: kill -9 %s (down %v)", n, target, down.Round(time.Millisecond))
		fmt.Fprintf(r.hubLog, "--- chaos: fault %d: kill -9 %s at %s\n", n, target, time.Now().Format(time.RFC3339Nano))
		var err error
		switch target {
		case "hubd":
			r.proc.Kill()
			pause(ctx, down)
			err = r.startHub(ctx)
		case "redis":
			r.redis.kill()
			pause(ctx, down)
			err = r.redis.start(ctx)
		case "nats":
			r.nats.kill()
			pause(ctx, down)
			err = r.nats.start(ctx)
		case "btcd":
			err = r.killBtcd(ctx)
		}
		if err != nil {
			return err
		}
	}
}

// killBtcd kills hubd's btcd child and waits for hubd to start another.
// A hubd that does not within a minute is a finding (its chain functions
// are dead); it is restarted so that the run can go on.
func (r *run) killBtcd(ctx context.Context) error {
	pidFile := filepath.Join(r.hubDir.Path(datadir.BtcdDir), "btcd.pid")
	old, ok := readPid(pidFile)
	if !ok {
		return fmt.Errorf("chaos: no btcd pid in %s", pidFile)
	}
	_ = syscall.Kill(old, syscall.SIGKILL)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if pid, ok := readPid(pidFile); ok && pid != old && syscall.Kill(pid, 0) == nil {
			if _, err := r.blockCount(ctx); err == nil {
				return nil
			}
		}
		pause(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.res.Problems = append(r.res.Problems, fmt.Sprintf("fault %d: hubd did not restart its killed btcd within a minute; restarted hubd", r.res.Faults))
	r.mu.Unlock()
	r.proc.Kill()
	return r.startHub(ctx)
}

func readPid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(string(trimSpace(b)))
	return pid, err == nil && pid > 0
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func (r *run) close() {
	for _, p := range r.provs {
		_ = p.meter.Close()
		p.nc.Close()
	}
	for _, d := range r.devices {
		if d.dev != nil {
			_ = d.dev.Close()
		}
		if d.sess != nil {
			_ = d.sess.Close()
		}
	}
	if r.proc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = r.proc.Stop(ctx)
		cancel()
	}
	if r.nats != nil {
		r.nats.kill()
	}
	if r.redis != nil {
		r.redis.kill()
	}
	if r.hubLog != nil {
		r.hubLog.Close()
	}
}
