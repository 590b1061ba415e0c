package loadtest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/nats-io/nats.go"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubproc"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// enrolWorkers bounds concurrent enrolments: each appends to the hub's
// hash-chained audit log, whose writers retry on a moved head and give up
// ("busy") when too many race.
const enrolWorkers = 4

// retryBusy runs call until it succeeds or fails with anything but the
// hub's 503 "busy", pausing between attempts.
func retryBusy(ctx context.Context, call func() error) error {
	for attempt := 1; ; attempt++ {
		err := call()
		var ae *httpapi.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || attempt == 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
		}
	}
}

// setupWorkers bounds concurrent admin calls, dials and channel opens.
const setupWorkers = 32

// fundingChunk is how many channels one funding transaction pays: 250
// taproot outputs are about 11,000 vB, far inside the standard limit.
const fundingChunk = 250

// device is one simulated payer.
type device struct {
	id   string
	key  *btcec.PrivateKey
	sess *m2mclient.Session
	dev  *m2mclient.Device
	pend *m2mclient.PendingChannel
	chID btcwire.OutPoint
}

// provider is one simulated provider.
type provider struct {
	index    int
	id       string
	key      *btcec.PrivateKey
	kind     string
	contract string
	seed     []byte
	nc       *nats.Conn
	meter    *m2mclient.Meter
	payers   []string
}

// fleet is the hub and the simulated devices and providers.
type fleet struct {
	cfg   Config
	say   func(string, ...any)
	log   *slog.Logger
	runID string

	dir     datadir.Dir
	proc    *hubproc.Proc
	tmpDir  string
	rt      datadir.Runtime
	hubKey  *btcec.PublicKey
	admin   *httpapi.Client
	chain   *btcdchain.Client
	devices []*device
	provs   []*provider
}

// startHub starts the hubd child or attaches to the running hub.
func (f *fleet) startHub(ctx context.Context) error {
	if f.cfg.HubDir != "" {
		f.dir = datadir.Dir(f.cfg.HubDir)
		rt, err := f.dir.ReadRuntime()
		if err != nil {
			return err
		}
		f.rt = rt
		f.say("driving the hubd of %s (pid %d)", f.cfg.HubDir, rt.PID)
	} else {
		tmp, err := os.MkdirTemp("", "m2mhub-loadtest-")
		if err != nil {
			return err
		}
		f.tmpDir, f.dir = tmp, datadir.Dir(filepath.Join(tmp, "hub"))
		sessions := f.cfg.Devices + f.cfg.Providers + 64
		args := []string{
			"--loglevel", "warn",
			// Events are charged on credit until the payer's next
			// payment; the default 10 sat would cut a burst short.
			"--channels.credit-limit-msat", "10000000",
			// Channels become ready within a second of their block.
			"--channels.poll-interval", "500ms",
			"--limits.max-sessions", strconv.Itoa(sessions),
			"--limits.max-sessions-per-ip", strconv.Itoa(sessions),
		}
		f.say("starting hubd (embedded NATS, embedded store, btcd regtest child) in %s", f.dir)
		p, err := hubproc.Start(ctx, hubproc.Config{Binary: f.cfg.HubdBinary, DataDir: string(f.dir), Args: args, Output: f.cfg.HubLog})
		if err != nil {
			return err
		}
		f.proc, f.rt = p, p.Runtime()
	}
	b, err := hex.DecodeString(f.rt.PubKey)
	if err != nil {
		return fmt.Errorf("loadtest: hub key: %w", err)
	}
	if f.hubKey, err = btcec.ParsePubKey(b); err != nil {
		return fmt.Errorf("loadtest: hub key: %w", err)
	}
	token, err := f.dir.ReadToken(datadir.AdminTokenFile)
	if err != nil {
		return err
	}
	f.admin = httpapi.NewClient(f.rt.AdminAddr, token)
	if f.rt.Btcd == nil {
		return errors.New("loadtest: the hub runs no regtest btcd of its own; channels are funded on regtest from its wallet")
	}
	f.chain, err = btcdchain.New(btcdchain.Config{
		Host: f.rt.Btcd.Host, User: f.rt.Btcd.User, Pass: f.rt.Btcd.Pass, CertPath: f.rt.Btcd.CertPath,
		Params: &chaincfg.RegressionNetParams, Logger: f.log,
	})
	return err
}

// hubPID is the hub's process id when it runs on this machine.
func (f *fleet) hubPID() int {
	if f.proc != nil {
		return f.proc.Pid()
	}
	return f.rt.PID
}

// parallel runs fn(i) for i in [0, n) on setupWorkers goroutines and
// returns the first error.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	return parallelN(ctx, setupWorkers, n, fn)
}

// parallelN is parallel on workers goroutines.
func parallelN(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil {
		// Without an error of our own, ctx ends only with the caller's.
		first = ctx.Err()
	}
	return first
}

// setup enrols the fleet, connects it and opens a funded channel per
// device.
func (f *fleet) setup(ctx context.Context, st *Setup) error {
	cfg := f.cfg
	kinds := assignKinds(cfg.Providers, cfg.Mix)
	contracts := map[string]string{}
	for _, k := range kinds {
		if _, ok := contracts[k]; ok {
			continue
		}
		rec, err := f.admin.PublishContract(ctx, contractDoc(k, f.runID))
		if err != nil {
			return fmt.Errorf("loadtest: publish %s contract: %w", k, err)
		}
		contracts[k] = hex.EncodeToString(rec.Hash[:])
	}

	f.say("enrolling %d providers and %d devices through the admin API", cfg.Providers, cfg.Devices)
	start := time.Now()
	f.provs = make([]*provider, cfg.Providers)
	err := parallelN(ctx, enrolWorkers, cfg.Providers, func(ctx context.Context, i int) error {
		key, err := btcec.NewPrivateKey()
		if err != nil {
			return err
		}
		var p httpapi.Provider
		err = retryBusy(ctx, func() (err error) {
			p, err = f.admin.AddProvider(ctx, httpapi.AddProviderRequest{
				PubKey: hub.PubKeyOf(key.PubKey()), Owner: "loadtest", Kind: kinds[i],
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("loadtest: enrol provider: %w", err)
		}
		if p.NATS == nil || p.NATS.Seed == "" {
			return errors.New("loadtest: the hub issued no NATS credentials (an external NATS is not supported)")
		}
		f.provs[i] = &provider{index: i, id: p.Device.ID, key: key, kind: kinds[i], contract: contracts[kinds[i]], seed: []byte(p.NATS.Seed)}
		return nil
	})
	if err != nil {
		return err
	}
	f.devices = make([]*device, cfg.Devices)
	err = parallelN(ctx, enrolWorkers, cfg.Devices, func(ctx context.Context, i int) error {
		key, err := btcec.NewPrivateKey()
		if err != nil {
			return err
		}
		var d hub.Device
		err = retryBusy(ctx, func() (err error) {
			d, err = f.admin.AddDevice(ctx, httpapi.AddDeviceRequest{
				PubKey: hub.PubKeyOf(key.PubKey()), Roles: []hub.Role{hub.RolePayer}, Owner: "loadtest", Kind: "sim",
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("loadtest: enrol device: %w", err)
		}
		f.devices[i] = &device{id: d.ID, key: key}
		return nil
	})
	if err != nil {
		return err
	}
	st.EnrolS = time.Since(start).Seconds()

	// Each device meters with one home provider, drawn from the seed.
	perm := rngFor(cfg.Seed, "home", 0).Perm(cfg.Devices)
	for i, d := range f.devices {
		p := f.provs[perm[i]%cfg.Providers]
		p.payers = append(p.payers, d.id)
	}

	f.say("connecting %d devices over BOLT 8 and %d providers to NATS", cfg.Devices, cfg.Providers)
	start = time.Now()
	for _, p := range f.provs {
		nc, err := m2mclient.ConnectNATS(f.rt.NATSURL, p.id, p.seed)
		if err != nil {
			return fmt.Errorf("loadtest: provider NATS: %w", err)
		}
		p.nc = nc
		if p.meter, err = m2mclient.NewMeter(m2mclient.MeterConfig{
			Conn: nc, ProviderID: p.id, Key: p.key, HubKey: f.hubKey, MaxBatch: cfg.Batch, Window: cfg.Window, Logger: f.log,
		}); err != nil {
			return err
		}
	}
	err = parallel(ctx, cfg.Devices, func(ctx context.Context, i int) error {
		d := f.devices[i]
		s, err := m2mclient.Dial(ctx, f.rt.P2PAddr, f.hubKey, d.key, m2mclient.WithLogger(f.log))
		if err != nil {
			return fmt.Errorf("loadtest: dial: %w", err)
		}
		d.sess = s
		d.dev, err = m2mclient.NewDevice(s, m2mclient.DeviceConfig{
			Key: d.key, HubKey: f.hubKey, Params: &chaincfg.RegressionNetParams, Store: newMemStore(), Logger: f.log,
		})
		return err
	})
	if err != nil {
		return err
	}
	st.ConnectS = time.Since(start).Seconds()

	start = time.Now()
	n, err := f.openChannels(ctx)
	st.FundingTxs, st.Channels = n, len(f.devices)
	st.ChannelsS = time.Since(start).Seconds()
	return err
}

// openChannels asks the hub for one channel per device, funds them from
// the hub's regtest wallet in a few many-output transactions, mines, and
// waits until the hub reports every channel ready. It returns the number
// of funding transactions.
func (f *fleet) openChannels(ctx context.Context) (int, error) {
	height, err := f.chain.BlockCount(ctx)
	if err != nil {
		return 0, err
	}
	expiry := uint32(height) + 2000
	f.say("opening %d channels of %d sat", len(f.devices), int64(f.cfg.Capacity))
	err = parallel(ctx, len(f.devices), func(ctx context.Context, i int) error {
		d := f.devices[i]
		pc, err := d.dev.OpenChannel(ctx, f.cfg.Capacity, expiry)
		if err != nil {
			return fmt.Errorf("loadtest: open channel: %w", err)
		}
		d.pend = pc
		return nil
	})
	if err != nil {
		return 0, err
	}
	// The hub mines its regtest blocks to its own wallet; the load test
	// borrows it as a faucet, one transaction per chunk of channels.
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: f.dir.Path(datadir.WalletKeyFile), Chain: f.chain, Logger: f.log,
	})
	if err != nil {
		return 0, err
	}
	txs := 0
	for lo := 0; lo < len(f.devices); lo += fundingChunk {
		chunk := f.devices[lo:min(lo+fundingChunk, len(f.devices))]
		outs := make([]*btcwire.TxOut, len(chunk))
		for i, d := range chunk {
			outs[i] = btcwire.NewTxOut(int64(d.pend.Capacity), d.pend.PkScript)
		}
		txid, err := wallet.SendMany(ctx, outs)
		if err != nil {
			return txs, fmt.Errorf("loadtest: fund channels: %w", err)
		}
		txs++
		for i, d := range chunk {
			d.chID = btcwire.OutPoint{Hash: txid, Index: uint32(i)}
		}
	}
	f.say("funded by %d transactions; mining and waiting for the hub", txs)
	if _, err := f.chain.Mine(ctx, 1); err != nil {
		return txs, err
	}
	// Mine on while waiting, in case the hub wants more depth.
	defer f.chain.MineEvery(ctx, 2*time.Second)()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = parallel(wctx, len(f.devices), func(ctx context.Context, i int) error {
		d := f.devices[i]
		ch, err := d.dev.Funded(ctx, d.pend.PendingID, d.chID)
		if err != nil {
			return fmt.Errorf("loadtest: channel ready: %w", err)
		}
		if ch.Status != m2mclient.StatusReady {
			return fmt.Errorf("loadtest: channel %s is %s", ch.ID, ch.Status)
		}
		return nil
	})
	return txs, err
}

// close stops the fleet and the hub it started.
func (f *fleet) close() {
	for _, p := range f.provs {
		if p == nil {
			continue
		}
		if p.meter != nil {
			_ = p.meter.Close()
		}
		if p.nc != nil {
			p.nc.Close()
		}
	}
	for _, d := range f.devices {
		if d == nil {
			continue
		}
		if d.dev != nil {
			_ = d.dev.Close()
		}
		if d.sess != nil {
			_ = d.sess.Close()
		}
	}
	if f.chain != nil {
		f.chain.Close()
	}
	if f.proc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := f.proc.Stop(ctx); err != nil {
			f.log.Warn("stopping hubd", "err", err)
		}
		cancel()
	}
	if f.tmpDir != "" {
		_ = os.RemoveAll(f.tmpDir)
	}
}

// parseStatusKiB reads a "Name:   1234 kB" line of /proc/<pid>/status.
func parseStatusKiB(status, name string) int64 {
	for line := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(line, name); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				v, _ := strconv.ParseInt(fields[0], 10, 64)
				return v
			}
		}
	}
	return 0
}
