package natsembed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"

	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nkeys"
)

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	// Server is the embedded server whose users the issuer changes.
	Server *Server
	// Path is the JSON file that keeps the provider users' public nkeys
	// (datadir.NATSProvidersFile). Seeds are never stored: the operator
	// gets a provider's seed once, when it is issued.
	Path string
	// Prepare, if set, runs before a provider's user is added: hubd
	// creates the provider's receipts consumer there, since the
	// provider's permissions do not let it create one.
	Prepare func(ctx context.Context, providerID string) error
}

// Issuer issues per-provider NATS credentials for the embedded server and
// keeps their public halves in a small file in the data dir.
//
// A file rather than the hub's store: the users it lists belong to this
// process's embedded server (an external NATS has its own config), they
// are public keys with no secret, and one atomic rename is the whole
// transaction, so neither store needs a new bucket for it.
type Issuer struct {
	cfg IssuerConfig
	mu  sync.Mutex
}

// NewIssuer returns an issuer.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if cfg.Server == nil || cfg.Path == "" {
		return nil, errors.New("natsembed: issuer needs a server and a file path")
	}
	return &Issuer{cfg: cfg}, nil
}

// LoadProviders reads the provider users kept at path; a missing file is
// an empty list. hubd passes the result to Config.Providers at start.
func LoadProviders(path string) ([]ProviderCreds, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	var cs []ProviderCreds
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("natsembed: %s: %w", path, err)
	}
	return cs, nil
}

// IssueNATS creates a new user nkey for provider id, replacing any earlier
// one (whose holder is disconnected), stores its public half, reloads the
// server, and returns the public key and the seed. The seed is not kept:
// it is the provider's NATS credential, to hand over once.
func (i *Issuer) IssueNATS(ctx context.Context, id string) (string, []byte, error) {
	if !metering.ValidSubjectToken(id) {
		return "", nil, fmt.Errorf("natsembed: provider id %q cannot be a subject token", id)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", nil, fmt.Errorf("natsembed: new nkey: %w", err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	if i.cfg.Prepare != nil {
		if err := i.cfg.Prepare(ctx, id); err != nil {
			return "", nil, fmt.Errorf("natsembed: prepare provider %s: %w", id, err)
		}
	}
	err = i.update(ctx, func(cs []ProviderCreds) []ProviderCreds {
		cs = slices.DeleteFunc(cs, func(c ProviderCreds) bool { return c.ID == id })
		return append(cs, ProviderCreds{ID: id, NkeyPub: pub})
	})
	if err != nil {
		return "", nil, err
	}
	return pub, seed, nil
}

// RemoveNATS drops provider id's user (after a revocation): the server
// disconnects it at once. Removing an unknown provider is a no-op.
func (i *Issuer) RemoveNATS(ctx context.Context, id string) error {
	return i.update(ctx, func(cs []ProviderCreds) []ProviderCreds {
		return slices.DeleteFunc(cs, func(c ProviderCreds) bool { return c.ID == id })
	})
}

// NATSUsers returns the public nkey of every provider user, by provider id.
func (i *Issuer) NATSUsers(ctx context.Context) (map[string]string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	cs, err := LoadProviders(i.cfg.Path)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(cs))
	for _, c := range cs {
		out[c.ID] = c.NkeyPub
	}
	return out, nil
}

// update changes the stored list, reloads the server with it, and only
// then replaces the file: a failed reload leaves the file as it was.
func (i *Issuer) update(ctx context.Context, change func([]ProviderCreds) []ProviderCreds) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	cs, err := LoadProviders(i.cfg.Path)
	if err != nil {
		return err
	}
	cs = change(cs)
	if err := i.cfg.Server.SetProviders(ctx, cs); err != nil {
		return err
	}
	b, err := json.MarshalIndent(cs, "", "  ")
	if err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	return writeFileAtomic(i.cfg.Path, append(b, '\n'), true)
}
