package m2mclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/keychain"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
)

// exampleRegistry is an in-memory Authenticator for the example only; a real
// hub asks its registry.
type exampleRegistry map[hub.PubKey]hub.Device

func (r exampleRegistry) Authenticate(_ context.Context, key hub.PubKey) (hub.Device, error) {
	d, ok := r[key]
	if !ok {
		return hub.Device{}, hub.ErrUnknownKey
	}
	return d, nil
}

func (r exampleRegistry) EnrolWithToken(context.Context, hub.PubKey, []byte) (hub.Device, error) {
	return hub.Device{}, hub.ErrBadSignature
}

// ExampleDial connects a registered device to a hub running in this process,
// then shows what an unregistered device gets.
func ExampleDial() {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hubKey, _ := btcec.NewPrivateKey()
	deviceKey, _ := btcec.NewPrivateKey()
	pk := hub.PubKeyOf(deviceKey.PubKey())
	reg := exampleRegistry{pk: {ID: "dev-charger-7", Key: pk, Status: hub.StatusActive}}

	srv, err := startExampleHub(hubKey, reg, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := m2mclient.Dial(ctx, srv.Addr().String(), hubKey.PubKey(), deviceKey, m2mclient.WithLogger(quiet))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("connected:", sess.Connected(), "sessions on hub:", srv.Sessions())
	sess.Close()

	stranger, _ := btcec.NewPrivateKey()
	_, err = m2mclient.Dial(ctx, srv.Addr().String(), hubKey.PubKey(), stranger, m2mclient.WithLogger(quiet))
	if refused, ok := errors.AsType[*m2mclient.RefusedError](err); ok {
		fmt.Println("refused:", refused.Code, "permanent:", refused.Permanent())
	}
	// Output:
	// connected: true sessions on hub: 1
	// refused: unknown-key permanent: true
}

// ExampleDial_wrongHubKey shows what a device pinning the wrong hub key
// gets: the hub cannot read its handshake and closes it, attempt after
// attempt, and when Dial's context ends it names the likely cause. Here
// the context ends when the hub has refused a fourth handshake, so the
// device has seen three closed (a real device would use a deadline).
func ExampleDial_wrongHubKey() {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hubKey, _ := btcec.NewPrivateKey()
	deviceKey, _ := btcec.NewPrivateKey()
	pk := hub.PubKeyOf(deviceKey.PubKey())
	reg := exampleRegistry{pk: {ID: "dev-charger-7", Key: pk, Status: hub.StatusActive}}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	refusals := &countingHandler{msg: "p2p handshake failed", at: 4, then: cancel}
	srv, err := startExampleHub(hubKey, reg, slog.New(refusals))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	mistyped, _ := btcec.NewPrivateKey() // not the hub's key
	_, err = m2mclient.Dial(ctx, srv.Addr().String(), mistyped.PubKey(), deviceKey,
		m2mclient.WithLogger(quiet), m2mclient.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	fmt.Println("key mismatch:", errors.Is(err, m2mclient.ErrHubKeyMismatch), "cancelled:", errors.Is(err, context.Canceled))
	// Output:
	// key mismatch: true cancelled: true
}

// countingHandler is a slog.Handler that calls then once the record msg
// has been logged at times.
type countingHandler struct {
	msg  string
	at   int
	then func()

	mu sync.Mutex
	n  int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }

func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n++; h.n == h.at {
		h.then()
	}
	return nil
}

// startExampleHub runs a session server for the examples on a loopback port.
func startExampleHub(key *btcec.PrivateKey, auth session.Authenticator, log *slog.Logger) (*session.Server, error) {
	ln, err := p2plisten.Listen(p2plisten.Config{Addr: "127.0.0.1:0", Key: &keychain.PrivKeyECDH{PrivKey: key}, Logger: log})
	if err != nil {
		return nil, err
	}
	return session.New(session.Config{Listener: session.NewListener(ln), Auth: auth, Logger: log})
}
