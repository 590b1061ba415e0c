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

// EndpointStore keeps the endpoints, secrets included. FileEndpoints is
// the one-instance store (a file in the data dir); hub/redisshared has the
// one several hubd share.
type EndpointStore interface {
	// Endpoints returns every endpoint.
	Endpoints(ctx context.Context) ([]Endpoint, error)
	// Endpoint returns one endpoint; ok is false when there is none.
	Endpoint(ctx context.Context, id string) (ep Endpoint, ok bool, err error)
	// PutEndpoint stores ep (ids are random: a new one).
	PutEndpoint(ctx context.Context, ep Endpoint) error
	// DeleteEndpoint removes id; ok is false when there was none.
	DeleteEndpoint(ctx context.Context, id string) (ok bool, err error)
}

// Endpoints is the registry of webhook endpoints, on an EndpointStore. It
// reads the store on every call, so every hubd sharing the store sees an
// endpoint as soon as one of them has added it.
type Endpoints struct {
	store  EndpointStore
	clock  clock.Clock
	policy AddressPolicy
}

// NewEndpoints is the registry on store; Add checks URLs against policy.
// clk times the endpoints' creation; nil is the system clock.
func NewEndpoints(store EndpointStore, clk clock.Clock, policy AddressPolicy) *Endpoints {
	if clk == nil {
		clk = clock.NewDefaultClock()
	}
	return &Endpoints{store: store, clock: clk, policy: policy}
}

// OpenEndpoints is the registry on the file at path (FileEndpoints).
func OpenEndpoints(path string, clk clock.Clock, policy AddressPolicy) (*Endpoints, error) {
	f, err := OpenFileEndpoints(path)
	if err != nil {
		return nil, err
	}
	return NewEndpoints(f, clk, policy), nil
}

// ImportEndpoints copies the endpoints of the file at path (the registry
// of a hubd from before the shared store) into dst when dst has none: a
// one-time migration, which a missing file makes a no-op. It returns how
// many it copied.
func ImportEndpoints(ctx context.Context, path string, dst EndpointStore) (int, error) {
	have, err := dst.Endpoints(ctx)
	if err != nil || len(have) > 0 {
		return 0, err
	}
	f, err := OpenFileEndpoints(path)
	if err != nil {
		return 0, err
	}
	list, _ := f.Endpoints(ctx)
	for _, ep := range list {
		if err := dst.PutEndpoint(ctx, ep); err != nil {
			return 0, fmt.Errorf("webhook: import endpoints: %w", err)
		}
	}
	return len(list), nil
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
	if err := e.store.PutEndpoint(ctx, ep); err != nil {
		return Endpoint{}, err
	}
	return ep, nil
}

// List returns every endpoint, without secrets, by provider then id.
func (e *Endpoints) List(ctx context.Context) ([]Endpoint, error) {
	out, err := e.store.Endpoints(ctx)
	if err != nil {
		return nil, err
	}
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
	ok, err := e.store.DeleteEndpoint(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: webhook %s", hub.ErrNotFound, id)
	}
	return nil
}

// Endpoint returns an endpoint with its secret, if it exists.
func (e *Endpoints) Endpoint(ctx context.Context, id string) (Endpoint, bool, error) {
	return e.store.Endpoint(ctx, id)
}

// For returns the endpoints of provider ("" for every endpoint), with
// secrets.
func (e *Endpoints) For(ctx context.Context, provider string) ([]Endpoint, error) {
	all, err := e.store.Endpoints(ctx)
	if err != nil {
		return nil, err
	}
	var out []Endpoint
	for _, ep := range all {
		if provider == "" || ep.Provider == provider {
			out = append(out, ep)
		}
	}
	return out, nil
}

var _ EndpointSource = (*Endpoints)(nil)

// FileEndpoints is the EndpointStore of one hubd: one small JSON file
// (mode 0600, replaced by atomic rename), read once at open and kept in
// memory.
type FileEndpoints struct {
	path string

	mu   sync.Mutex
	list []Endpoint
}

var _ EndpointStore = (*FileEndpoints)(nil)

// OpenFileEndpoints loads the file at path, creating none until the first
// PutEndpoint.
func OpenFileEndpoints(path string) (*FileEndpoints, error) {
	e := &FileEndpoints{path: path}
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

// Endpoints implements EndpointStore.
func (e *FileEndpoints) Endpoints(context.Context) ([]Endpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Endpoint(nil), e.list...), nil
}

// Endpoint implements EndpointStore.
func (e *FileEndpoints) Endpoint(_ context.Context, id string) (Endpoint, bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ep := range e.list {
		if ep.ID == id {
			return ep, true, nil
		}
	}
	return Endpoint{}, false, nil
}

// PutEndpoint implements EndpointStore.
func (e *FileEndpoints) PutEndpoint(_ context.Context, ep Endpoint) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := make([]Endpoint, 0, len(e.list)+1)
	for _, have := range e.list {
		if have.ID != ep.ID {
			next = append(next, have)
		}
	}
	next = append(next, ep)
	if err := e.save(next); err != nil {
		return err
	}
	e.list = next
	return nil
}

// DeleteEndpoint implements EndpointStore.
func (e *FileEndpoints) DeleteEndpoint(_ context.Context, id string) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := make([]Endpoint, 0, len(e.list))
	for _, ep := range e.list {
		if ep.ID != id {
			next = append(next, ep)
		}
	}
	if len(next) == len(e.list) {
		return false, nil
	}
	if err := e.save(next); err != nil {
		return false, err
	}
	e.list = next
	return true, nil
}

// save writes list to a temporary file, fsyncs it and renames it over the
// registry, so a crash leaves the old or the new set, never half of one.
func (e *FileEndpoints) save(list []Endpoint) error {
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
