// Package gateway is an OCPP 2.0.1 CSMS (Charging Station Management
// System) endpoint that acts as the hub provider for its charging
// stations: it speaks OCPP-J over WebSocket (security profile 2: TLS and
// HTTP basic auth per station), maps idTokens to payer devices, and hands
// each transaction's start, signed meter readings and end to a Billing
// port that asks the hub for the hold, meters and captures.
package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/ocpp"
)

// ErrRefused is wrapped by a Billing error meaning the payer or the hub
// refused the session (the station is told NoCredit).
var ErrRefused = errors.New("gateway: refused")

// ErrNoStation means no connected station runs the transaction.
var ErrNoStation = errors.New("gateway: no station for the transaction")

// ErrStopRejected means the station answered RequestStopTransaction with
// Rejected.
var ErrStopRejected = errors.New("gateway: stop rejected by the station")

// Session is one OCPP transaction as the gateway bills it.
type Session struct {
	// Station is the charging station's identity.
	Station string
	// TransactionID is the station's transactionId.
	TransactionID string
	// EvseID is the EVSE the transaction runs on (0 when not given).
	EvseID int
	// IDToken is the token that authorised the transaction.
	IDToken string
	// Payer is the payer device the token maps to.
	Payer string
}

// Billing is what the gateway needs from the hub, as its stations'
// provider. Calls for one session come in order: Begin, Readings any
// number of times, End.
type Billing interface {
	// Begin asks the payer for the session's hold. An error wrapping
	// ErrRefused means the payer or hub refused it.
	Begin(ctx context.Context, s Session) error
	// Readings hands over the session's signed meter readings, each the
	// signedMeterData of a sampled value (OCMF), in the order they came.
	Readings(ctx context.Context, s Session, signed []string) error
	// End bills the session and ends its hold.
	End(ctx context.Context, s Session) error
}

// Config configures New.
type Config struct {
	// Stations maps each charging station's identity to its basic-auth
	// password (security profile 2).
	Stations map[string]string
	// Tokens maps an idToken to the payer device it stands for.
	Tokens map[string]string
	// Billing is the hub side.
	Billing Billing
	// Schemas validates every message; LoadSchemas when nil.
	Schemas *ocpp.Schemas
	// HeartbeatInterval is told to stations at boot; 300 s when zero.
	HeartbeatInterval time.Duration
	// CallTimeout bounds the wait for a station's answer; 30 s when zero.
	CallTimeout time.Duration
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Gateway is the CSMS endpoint. Serve it with ServeHTTP under a path
// ending in the station identity (".../{stationId}").
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	pwHash   map[string][32]byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[string]*conn
}

// New returns a Gateway; Close stops its connections.
func New(cfg Config) (*Gateway, error) {
	if cfg.Billing == nil || len(cfg.Stations) == 0 {
		return nil, errors.New("gateway: needs billing and at least one station")
	}
	if cfg.Schemas == nil {
		s, err := ocpp.LoadSchemas()
		if err != nil {
			return nil, err
		}
		cfg.Schemas = s
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 300 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, pwHash: map[string][32]byte{}, conns: map[string]*conn{}}
	for id, pw := range cfg.Stations {
		g.pwHash[id] = sha256.Sum256([]byte(pw))
	}
	g.upgrader = websocket.Upgrader{Subprotocols: []string{ocpp.Subprotocol}}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g, nil
}

// Close ends every station connection and waits for their goroutines.
func (g *Gateway) Close() error {
	g.cancel()
	g.mu.Lock()
	for _, c := range g.conns {
		c.ws.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
	return nil
}

// authorized checks the station's basic auth: user is the identity in the
// path, password the configured one.
func (g *Gateway) authorized(r *http.Request, station string) bool {
	user, pw, ok := r.BasicAuth()
	want, known := g.pwHash[station]
	if !ok || !known || user != station {
		return false
	}
	got := sha256.Sum256([]byte(pw))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ServeHTTP authenticates the station before the upgrade (401 without
// valid credentials), requires the ocpp2.0.1 subprotocol, and then runs
// the connection until it closes.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	station := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	if !g.authorized(r, station) {
		w.Header().Set("WWW-Authenticate", `Basic realm="ocpp"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if !offers(r, ocpp.Subprotocol) {
		http.Error(w, "subprotocol "+ocpp.Subprotocol+" required", http.StatusBadRequest)
		return
	}
	ws, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	c := newConn(g, station, ws)
	g.mu.Lock()
	if g.ctx.Err() != nil { // closed: Close may already be waiting
		g.mu.Unlock()
		ws.Close()
		return
	}
	if old := g.conns[station]; old != nil {
		old.ws.Close() // a reconnecting station replaces its old socket
	}
	g.conns[station] = c
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()
	c.run(g.ctx)
	g.mu.Lock()
	if g.conns[station] == c {
		delete(g.conns, station)
	}
	g.mu.Unlock()
}

func offers(r *http.Request, proto string) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == proto {
			return true
		}
	}
	return false
}

// StopPayer sends RequestStopTransaction for every running transaction of
// payer (the hub said: stop service) and waits for the stations' answers.
// It returns the number of transactions asked to stop, and an error
// joining each refusal (ErrStopRejected) or failure.
func (g *Gateway) StopPayer(ctx context.Context, payer string) (int, error) {
	g.mu.Lock()
	var targets []struct {
		c  *conn
		tx string
	}
	for _, c := range g.conns {
		for _, s := range c.sessionsOf(payer) {
			targets = append(targets, struct {
				c  *conn
				tx string
			}{c, s})
		}
	}
	g.mu.Unlock()
	var errs []error
	for _, t := range targets {
		if err := t.c.requestStop(ctx, t.tx); err != nil {
			errs = append(errs, fmt.Errorf("transaction %s: %w", t.tx, err))
		}
	}
	return len(targets), errors.Join(errs...)
}

// StopTransaction sends RequestStopTransaction for one transaction of
// station and waits for the answer.
func (g *Gateway) StopTransaction(ctx context.Context, station, transactionID string) error {
	g.mu.Lock()
	c := g.conns[station]
	g.mu.Unlock()
	if c == nil {
		return ErrNoStation
	}
	return c.requestStop(ctx, transactionID)
}

func marshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the gateway's own structs are marshalled
	}
	return b
}
