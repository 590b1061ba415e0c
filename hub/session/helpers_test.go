package session

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"
	"go.uber.org/goleak"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// memAuth is a test-only in-memory Authenticator. The real registry and
// store are tested with this server by the registry's own integration tests.
type memAuth struct {
	mu      sync.Mutex
	byKey   map[hub.PubKey]hub.Device
	retired map[hub.PubKey]bool
	tokens  map[string]bool
}

var _ Authenticator = (*memAuth)(nil)

func newMemAuth() *memAuth {
	return &memAuth{byKey: map[hub.PubKey]hub.Device{}, retired: map[hub.PubKey]bool{}, tokens: map[string]bool{}}
}

func (a *memAuth) Authenticate(_ context.Context, key hub.PubKey) (hub.Device, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.retired[key] {
		return hub.Device{}, fmt.Errorf("key %s: %w", key, hub.ErrRotatedOut)
	}
	d, ok := a.byKey[key]
	if !ok {
		return hub.Device{}, fmt.Errorf("key %s: %w", key, hub.ErrUnknownKey)
	}
	if d.Status == hub.StatusRevoked {
		return hub.Device{}, fmt.Errorf("device %s: %w", d.ID, hub.ErrRevoked)
	}
	return d, nil
}

func (a *memAuth) EnrolWithToken(_ context.Context, key hub.PubKey, token []byte) (hub.Device, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.tokens[string(token)] {
		return hub.Device{}, hub.ErrBadSignature
	}
	delete(a.tokens, string(token))
	d := hub.Device{ID: hub.DeviceID(key), Key: key, Roles: []hub.Role{hub.RolePayer}, Status: hub.StatusActive}
	a.byKey[key] = d
	return d, nil
}

// add registers a fresh key with the given status and returns it.
func (a *memAuth) add(tb testing.TB, status hub.Status) *btcec.PrivateKey {
	tb.Helper()
	k := mustKey(tb)
	pk := hub.PubKeyOf(k.PubKey())
	a.mu.Lock()
	a.byKey[pk] = hub.Device{ID: hub.DeviceID(pk), Key: pk, Roles: []hub.Role{hub.RolePayer}, Status: status}
	a.mu.Unlock()
	return k
}

func mustKey(tb testing.TB) *btcec.PrivateKey {
	tb.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// checkLeaks fails the test if goroutines it started outlive it. Registered
// first, it runs after every other cleanup (servers, clients).
func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testHub struct {
	*Server
	key  *btcec.PrivateKey
	auth *memAuth
}

func startHub(tb testing.TB, mod func(*Config)) *testHub {
	tb.Helper()
	h := &testHub{key: mustKey(tb), auth: newMemAuth()}
	ln, err := p2plisten.Listen(p2plisten.Config{Addr: "127.0.0.1:0", Key: &keychain.PrivKeyECDH{PrivKey: h.key}, Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{
		Listener:         NewListener(ln),
		Auth:             h.auth,
		Logger:           quietLogger(),
		HandshakeTimeout: 2 * time.Second,
		PingInterval:     200 * time.Millisecond,
		PongTimeout:      500 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	h.Server = srv
	return h
}

// dial connects a device through the client library with test-sized timings.
func (h *testHub) dial(tb testing.TB, key *btcec.PrivateKey, opts ...m2mclient.Option) (*m2mclient.Session, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]m2mclient.Option{
		m2mclient.WithLogger(quietLogger()),
		m2mclient.WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		m2mclient.WithDialTimeout(5 * time.Second),
		m2mclient.WithPingInterval(200 * time.Millisecond),
	}, opts...)
	s, err := m2mclient.Dial(ctx, h.Addr().String(), h.key.PubKey(), key, opts...)
	if err == nil {
		tb.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

func (h *testHub) mustDial(tb testing.TB, key *btcec.PrivateKey, opts ...m2mclient.Option) *m2mclient.Session {
	tb.Helper()
	s, err := h.dial(tb, key, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// rawDial completes the noise handshake with key and nothing else, so a test
// can misbehave after it.
func (h *testHub) rawDial(tb testing.TB, key *btcec.PrivateKey) *brontide.Conn {
	tb.Helper()
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: h.key.PubKey(), Address: h.Addr().(*net.TCPAddr)},
		5*time.Second, net.DialTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// rawSession is rawDial plus the Init exchange.
func (h *testHub) rawSession(tb testing.TB, key *btcec.PrivateKey) *brontide.Conn {
	tb.Helper()
	c := h.rawDial(tb, key)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(c, wire.NewInit()); err != nil {
		tb.Fatal(err)
	}
	msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
	if err != nil {
		tb.Fatal(err)
	}
	if _, ok := msg.(*wire.Init); !ok {
		tb.Fatalf("hub answered init with %T", msg)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// readError reads until the hub's Error and returns its decoded form.
func readError(tb testing.TB, c *brontide.Conn, within time.Duration) *wire.CodeError {
	tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	for {
		msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
		if err != nil {
			tb.Fatalf("no error message from hub: %v", err)
		}
		if e, ok := msg.(*wire.Error); ok {
			return wire.ParseError(e)
		}
	}
}

// eventually polls cond every 10 ms until it holds or within passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
