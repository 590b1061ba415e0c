// Package hubtest runs a real m2mhub hub in-process for tests, benchmarks and
// the load test: a bbolt store in a temporary directory, the registry, the
// BOLT 8 server on a loopback port and the channel manager, on a real btcd
// regtest node mined past taproot activation whose coinbases pay a faucet
// wallet. Nothing in it is a fake: it is the wiring cmd/hubd does, with
// settings that make a test fast (short chain poll, small expiry deltas).
//
// The hub can be stopped and restarted on the same directory, address and
// identity key, so connected clients reconnect to it as they would to a
// restarted hubd.
package hubtest

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/keychain"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
	"github.com/m2mhub/m2mhub/internal/regtest"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// Defaults for Config.
const (
	// DefaultPollInterval is the channel manager's chain poll: short, so
	// a mined funding is seen within a tenth of a second.
	DefaultPollInterval = 100 * time.Millisecond
	// DefaultMinExpiryDelta lets tests open channels that expire a few
	// blocks ahead (the refund tests mine past them).
	DefaultMinExpiryDelta = 10
	// DefaultSafetyMargin must stay below half of DefaultMinExpiryDelta.
	DefaultSafetyMargin = 2
	// DefaultExpiryDelta is how far ahead OpenChannel sets a channel's
	// expiry: far enough that no test mines up to the hub's claim
	// margin by accident.
	DefaultExpiryDelta = 500
	// openTimeout bounds OpenChannel, mining included.
	openTimeout = time.Minute
)

// TB is what the helpers need from a test: *testing.T, *testing.B and
// *rapid.T all satisfy it, so property tests can drive the hub from
// inside their checks (cleanups then run at the end of each check).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(f func())
	Context() context.Context
}

// StartTB is what Start needs of its caller: a *testing.T or *testing.B,
// or a Runner in an Example function.
type StartTB interface {
	TB
	TempDir() string
	Skip(args ...any)
}

// Config adjusts the hub Start runs. The zero value is a working hub.
type Config struct {
	// Channels, when set, adjusts the channel manager's configuration
	// after the harness filled it in. It runs again at every restart.
	Channels func(*channels.Config)
	// Server, when set, adjusts the session server's configuration the
	// same way. Its Listener is the harness's.
	Server func(*session.Config)
	// Listener, when set, adjusts the p2p listener's configuration the
	// same way. Addr and Key are reset afterwards, at restarts, so the
	// hub keeps its address and identity.
	Listener func(*p2plisten.Config)
	// Logger receives the hub's, btcd's and the clients' logs; nil
	// discards them.
	Logger *slog.Logger
	// OperatorKey, when set, verifies enrolment tokens (without it the
	// registry refuses token enrolment).
	OperatorKey *btcec.PublicKey
}

// Hub is a running in-process hub and its chain. Its methods may be called
// from the test goroutine only, except the accessors, which are safe for
// concurrent use but return the instances of the current run: after
// RestartHub, ask again.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	dir    string
	key    *btcec.PrivateKey
	params *chaincfg.Params
	payout []byte

	node   *regtest.Node
	chain  *btcdchain.Client
	wallet *btcdchain.Wallet
	addr   string

	mu    sync.Mutex
	store *boltstore.Store
	reg   *registry.Registry
	srv   *session.Server
	ch    *channels.Manager
}

// Start runs a hub for tb and stops it (and its btcd) in tb's cleanup. It
// skips the test under -short, since btcd takes a second or two to start
// and mine to activation.
func Start(tb StartTB, cfg Config) *Hub {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts btcd")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx := tb.Context()
	dir := tb.TempDir()
	h := &Hub{cfg: cfg, log: cfg.Logger, dir: dir, key: NewKey(tb), params: &chaincfg.RegressionNetParams}
	h.payout = P2TR(tb)

	keyPath := filepath.Join(dir, "faucet.key")
	addr, err := btcdchain.KeyAddress(keyPath, h.params)
	if err != nil {
		tb.Fatal(err)
	}
	h.node, err = regtest.Start(ctx, regtest.Config{
		Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: h.log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.node.Stop(context.Background()) })
	rpc := h.node.RPC()
	h.chain, err = btcdchain.New(btcdchain.Config{
		Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert, Params: h.params, Logger: h.log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.chain.Close() })
	h.wallet, err = btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: keyPath, Chain: h.chain, Logger: h.log})
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.node.MineToActivation(ctx); err != nil {
		tb.Fatal(err)
	}

	if err := h.run("127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	h.addr = h.Server().Addr().String()
	tb.Cleanup(h.stop)
	return h
}

// run opens the store and starts the registry, channel manager and server
// listening on addr.
func (h *Hub) run(addr string) error {
	st, err := boltstore.New(boltstore.Config{Path: filepath.Join(h.dir, "hub"), Logger: h.log})
	if err != nil {
		return err
	}
	// In dependency order, as cmd/hubd builds them: the directory of
	// live sessions, the channel manager, the registry, the server.
	dir := session.NewDirectory()
	ccfg := channels.Config{
		Store: st, Devices: st, Sessions: dir, Chain: btcdchain.HubChain{Client: h.chain}, HubKey: h.key,
		PayoutScript: h.payout, Params: h.params, PollInterval: DefaultPollInterval,
		MinExpiryDelta: DefaultMinExpiryDelta, SafetyMargin: DefaultSafetyMargin, Logger: h.log,
	}
	if h.cfg.Channels != nil {
		h.cfg.Channels(&ccfg)
	}
	ch, err := channels.New(ccfg)
	if err != nil {
		_ = st.Close()
		return err
	}
	reg, err := registry.New(registry.Config{Store: st, OperatorKey: h.cfg.OperatorKey, Logger: h.log})
	if err != nil {
		_ = st.Close()
		return err
	}
	lcfg := p2plisten.Config{Logger: h.log}
	if h.cfg.Listener != nil {
		h.cfg.Listener(&lcfg)
	}
	lcfg.Addr, lcfg.Key = addr, &keychain.PrivKeyECDH{PrivKey: h.key}
	ln, err := p2plisten.Listen(lcfg)
	if err != nil {
		_ = st.Close()
		return err
	}
	scfg := session.Config{Auth: reg, Handler: ch, Directory: dir, Logger: h.log}
	if h.cfg.Server != nil {
		h.cfg.Server(&scfg)
	}
	scfg.Listener = session.NewListener(ln)
	srv, err := session.New(scfg)
	if err != nil {
		_ = st.Close()
		return err
	}
	ch.Start()
	h.mu.Lock()
	h.store, h.reg, h.srv, h.ch = st, reg, srv, ch
	h.mu.Unlock()
	return nil
}

// stop closes the server, the channel manager and the store, in that
// order, so nothing writes to a closed store. It is a no-op when stopped.
func (h *Hub) stop() {
	h.mu.Lock()
	srv, ch, st := h.srv, h.ch, h.store
	h.srv, h.ch, h.store, h.reg = nil, nil, nil, nil
	h.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	_ = ch.Close()
	_ = st.Close()
}

// StopHub stops the hub (server, channel manager, store) and leaves btcd
// running, as a crashed or vanished hub would. Clients keep trying to
// reconnect until they are closed or the hub is restarted.
func (h *Hub) StopHub(tb TB) {
	tb.Helper()
	h.stop()
}

// RestartHub stops the hub, if it runs, and starts it again on the same
// directory, address and identity key: what a device sees as a hub
// restart. Everything in memory (hold requests not yet authorised, capture
// requests waiting for the device, caches) is gone; everything durable is
// reloaded from the store. The old listener's port is taken again; if
// another process grabbed it in between, the test fails.
func (h *Hub) RestartHub(tb TB) {
	tb.Helper()
	h.stop()
	var err error
	// Closing a listener frees its port at once (Go sets SO_REUSEADDR),
	// but retry briefly in case the kernel has not caught up.
	for range 50 {
		if err = h.run(h.addr); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("hubtest: restart on %s: %v", h.addr, err)
}

// Addr is the hub's listen address, stable across restarts.
func (h *Hub) Addr() string { return h.addr }

// Key is the hub's identity key. Tests use it to pin the hub (its public
// half) and to co-sign claims the way the hub would.
func (h *Hub) Key() *btcec.PrivateKey { return h.key }

// PubKey is the public half of Key, the key devices pin.
func (h *Hub) PubKey() *btcec.PublicKey { return h.key.PubKey() }

// Params is the chain's network, regtest.
func (h *Hub) Params() *chaincfg.Params { return h.params }

// Store is the current run's store; nil while the hub is stopped.
func (h *Hub) Store() *boltstore.Store {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.store
}

// Registry is the current run's registry; nil while the hub is stopped.
func (h *Hub) Registry() *registry.Registry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reg
}

// Server is the current run's session server; nil while the hub is
// stopped.
func (h *Hub) Server() *session.Server {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.srv
}

// Channels is the current run's channel manager; nil while the hub is
// stopped.
func (h *Hub) Channels() *channels.Manager {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

// Chain is the RPC client of the btcd node.
func (h *Hub) Chain() *btcdchain.Client { return h.chain }

// Node is the btcd regtest node.
func (h *Hub) Node() *regtest.Node { return h.node }

// Wallet is the faucet: the wallet the node's coinbases pay.
func (h *Hub) Wallet() *btcdchain.Wallet { return h.wallet }

// Logger is the logger the hub uses, for clients that want the same.
func (h *Hub) Logger() *slog.Logger { return h.log }

// Mine mines n blocks.
func (h *Hub) Mine(tb TB, n uint32) {
	tb.Helper()
	if _, err := h.node.Mine(tb.Context(), n); err != nil {
		tb.Fatal(err)
	}
}

// Height returns the height of the best block.
func (h *Hub) Height(tb TB) uint32 {
	tb.Helper()
	n, err := h.chain.BlockCount(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	return uint32(n)
}

// LookupTx finds a transaction in the mempool or the chain; it is an
// m2mclient.TxLookup.
func (h *Hub) LookupTx(ctx context.Context, txid chainhash.Hash) (*btcwire.MsgTx, error) {
	info, err := h.chain.GetTx(ctx, txid)
	return info.Tx, err
}

// EnrolDevice registers a fresh key with roles and returns it with the
// device id the registry gave it.
func (h *Hub) EnrolDevice(tb TB, roles ...hub.Role) (*btcec.PrivateKey, string) {
	tb.Helper()
	reg := h.Registry()
	if reg == nil {
		tb.Fatal("hubtest: hub stopped")
	}
	key := NewKey(tb)
	d, err := reg.Enrol(tb.Context(), registry.EnrolRequest{Key: hub.PubKeyOf(key.PubKey()), Roles: roles}, "hubtest")
	if err != nil {
		tb.Fatal(err)
	}
	return key, d.ID
}

// Dial opens a session for key, closed in tb's cleanup. It reconnects
// quickly (50 ms to 500 ms backoff) so a restarted hub is found at once;
// opts come after the harness's own and may override them.
func (h *Hub) Dial(tb TB, key *btcec.PrivateKey, opts ...m2mclient.Option) *m2mclient.Session {
	tb.Helper()
	all := append([]m2mclient.Option{
		m2mclient.WithLogger(h.log), m2mclient.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
	}, opts...)
	s, err := m2mclient.Dial(tb.Context(), h.addr, h.key.PubKey(), key, all...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// WaitSession waits until the hub holds a live session for deviceID (after
// a Dial or a restart) and fails the test after ten seconds.
func (h *Hub) WaitSession(tb TB, deviceID string) {
	tb.Helper()
	WaitFor(tb, 10*time.Second, "session of "+deviceID, func() bool {
		srv := h.Server()
		if srv == nil {
			return false
		}
		_, ok := srv.Session(deviceID)
		return ok
	})
}

// NewDevice builds a Device on session s (nil for an offline device) for
// key, closed in tb's cleanup. Unset fields of cfg are filled in: Key, the
// pinned HubKey, Params, Logger, and a fresh Dir when neither Store nor Dir
// is set.
func (h *Hub) NewDevice(tb TB, s *m2mclient.Session, key *btcec.PrivateKey, cfg m2mclient.DeviceConfig) *m2mclient.Device {
	tb.Helper()
	if cfg.Key == nil {
		cfg.Key = key
	}
	if cfg.HubKey == nil {
		cfg.HubKey = h.key.PubKey()
	}
	if cfg.Params == nil {
		cfg.Params = h.params
	}
	if cfg.Logger == nil {
		cfg.Logger = h.log
	}
	if cfg.Store == nil && cfg.Dir == "" {
		// Under the hub's own temporary directory, removed with it.
		dir, err := os.MkdirTemp(h.dir, "device-")
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Dir = dir
	}
	d, err := m2mclient.NewDevice(s, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = d.Close() })
	return d
}

// OpenChannel opens a channel of capacity from dev, expiring
// DefaultExpiryDelta blocks ahead, funds it from the faucet and mines until
// the hub reports it ready.
func (h *Hub) OpenChannel(tb TB, dev *m2mclient.Device, capacity btcutil.Amount) *m2mclient.Channel {
	tb.Helper()
	return h.OpenChannelAt(tb, dev, capacity, h.Height(tb)+DefaultExpiryDelta)
}

// OpenChannelAt is OpenChannel with an explicit expiry height.
func (h *Hub) OpenChannelAt(tb TB, dev *m2mclient.Device, capacity btcutil.Amount, expiry uint32) *m2mclient.Channel {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), openTimeout)
	defer cancel()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		// Mine until the hub has seen the funding at depth. A block
		// every 200 ms keeps the test independent of exactly when the
		// funding reaches the mempool.
		defer wg.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_, _ = h.node.Mine(ctx, 1)
			}
		}
	}()
	c, err := dev.FundAndOpen(ctx, h.wallet, h.LookupTx, capacity, expiry)
	close(stop)
	wg.Wait()
	if err != nil {
		tb.Fatalf("hubtest: open channel of %d sat: %v", capacity, err)
	}
	if c.Status != m2mclient.StatusReady {
		tb.Fatalf("hubtest: channel %v is %s after FundAndOpen", c.ID, c.Status)
	}
	return c
}

// NewKey returns a fresh secp256k1 key.
func NewKey(tb TB) *btcec.PrivateKey {
	tb.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// P2TR returns the pkScript of a fresh key-path-only taproot output.
func P2TR(tb TB) []byte {
	tb.Helper()
	s, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(NewKey(tb).PubKey()))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// OutputPaying returns the value tx pays to pkScript, or -1 when no output
// pays it.
func OutputPaying(tx *btcwire.MsgTx, pkScript []byte) int64 {
	for _, out := range tx.TxOut {
		if bytes.Equal(out.PkScript, pkScript) {
			return out.Value
		}
	}
	return -1
}

// WaitFor polls cond every 10 ms until it holds, failing the test after
// within with what in the message.
func WaitFor(tb TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("hubtest: %s not reached within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
