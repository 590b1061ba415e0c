// Package webhook delivers provider events (receipts, unpaid/enforcement
// notices, settlement run changes) to providers' HTTP back ends. Operators
// register one or more endpoints per provider (Endpoints); a Dispatcher
// keeps every delivery in a durable outbox until the endpoint answers 2xx
// or the attempts run out, signing each POST as the Standard Webhooks
// specification does (docs/webhooks.md).
package webhook

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
)

// Endpoint is one registered receiver of a provider's events.
type Endpoint struct {
	ID       string    `json:"id"`
	Provider string    `json:"provider"`
	URL      string    `json:"url"`
	Created  time.Time `json:"created"`
	// Secret keys the signatures. Add returns it once; List leaves it
	// empty.
	Secret string `json:"secret,omitempty"`
}

// Endpoints is the registry of webhook endpoints, kept in one small JSON
// file (mode 0600, replaced by atomic rename). A file in the data dir
// rather than the hub's store: the secrets are credentials like the admin
// token beside them, the set is small and changed by hand, and keeping it
// out of hub.Store spares both store implementations a new schema. With
// several hubd instances on one Redis, each needs the same file (see
// docs/webhooks.md).
type Endpoints struct {
	path   string
	clock  clock.Clock
	policy AddressPolicy

	mu   sync.Mutex
	list []Endpoint
}

// OpenEndpoints loads the registry at path, creating none until the first
// Add, which checks URLs against policy. clk times the endpoints' creation;
// nil is the system clock.
func OpenEndpoints(path string, clk clock.Clock, policy AddressPolicy) (*Endpoints, error) {
	if clk == nil {
		clk = clock.NewDefaultClock()
	}
	e := &Endpoints{path: path, clock: clk, policy: policy}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return e, nil
	case err != nil:
		return nil, fmt.Errorf("webhook: endpoints: %w", err)
	}
	if err := json.Unmarshal(b, &e.list); err != nil {
		return nil, fmt.Errorf("webhook: endpoints %s: %w", path, err)
	}
	return e, nil
}

// Add registers url for provider and returns the endpoint with its new
// secret, the only time the secret is shown. A url that is not absolute
// http(s), or whose host the address policy refuses, is refused with an
// error wrapping hub.ErrInvalid.
func (e *Endpoints) Add(ctx context.Context, provider, rawURL string) (Endpoint, error) {
	u, err := e.policy.CheckURL(ctx, rawURL)
	if err != nil {
		return Endpoint{}, err
	}
	if provider == "" {
		return Endpoint{}, fmt.Errorf("%w: webhook without provider", hub.ErrInvalid)
	}
	var id [8]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Endpoint{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Endpoint{}, err
	}
	ep := Endpoint{
		ID: "wh_" + hex.EncodeToString(id[:]), Provider: provider, URL: u.String(),
		Created: e.clock.Now().UTC().Truncate(time.Second), Secret: SecretPrefix + base64.StdEncoding.EncodeToString(secret[:]),
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	next := append(append([]Endpoint(nil), e.list...), ep)
	if err := e.save(next); err != nil {
		return Endpoint{}, err
	}
	e.list = next
	return ep, nil
}

// List returns every endpoint, without secrets, by provider then id.
func (e *Endpoints) List(ctx context.Context) ([]Endpoint, error) {
	e.mu.Lock()
	out := append([]Endpoint(nil), e.list...)
	e.mu.Unlock()
	for i := range out {
		out[i].Secret = ""
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Provider != out[j].Provider {
			return out[i].Provider < out[j].Provider
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Remove deletes an endpoint; pending deliveries to it are dropped when
// their turn comes. An unknown id is an error wrapping hub.ErrNotFound.
func (e *Endpoints) Remove(ctx context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := make([]Endpoint, 0, len(e.list))
	for _, ep := range e.list {
		if ep.ID != id {
			next = append(next, ep)
		}
	}
	if len(next) == len(e.list) {
		return fmt.Errorf("%w: webhook %s", hub.ErrNotFound, id)
	}
	if err := e.save(next); err != nil {
		return err
	}
	e.list = next
	return nil
}

// Endpoint returns an endpoint with its secret, if it exists.
func (e *Endpoints) Endpoint(id string) (Endpoint, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ep := range e.list {
		if ep.ID == id {
			return ep, true
		}
	}
	return Endpoint{}, false
}

// For returns the endpoints of provider ("" for every endpoint), with
// secrets.
func (e *Endpoints) For(provider string) []Endpoint {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Endpoint
	for _, ep := range e.list {
		if provider == "" || ep.Provider == provider {
			out = append(out, ep)
		}
	}
	return out
}

// save writes list to a temporary file, fsyncs it and renames it over the
// registry, so a crash leaves the old or the new set, never half of one.
func (e *Endpoints) save(list []Endpoint) error {
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(e.path), ".webhooks-*.tmp")
	if err != nil {
		return fmt.Errorf("webhook: endpoints: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), e.path)
	}
	if err != nil {
		return fmt.Errorf("webhook: endpoints: %w", err)
	}
	return nil
}
