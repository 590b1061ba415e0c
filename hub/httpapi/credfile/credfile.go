// Package credfile keeps the admin API's scoped credentials in one small
// JSON file in the data dir: mode 0600, replaced by atomic rename, holding
// only SHA-256 hashes of the tokens.
//
// This file is the credential store of a hubd on the embedded store (one
// instance): credentials change a few times a year and belong beside
// admin.token. Hubs that share a Redis keep them there instead
// (hub/redisshared), so every instance accepts every credential; Import
// moves a file's credentials into that store once.
package credfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// Config configures a Store.
type Config struct {
	// Path is the credentials file; created on the first Add.
	Path string
}

// Store is a file-backed httpapi.CredStore. It is safe for concurrent use
// within one process; the file is read once at New and rewritten whole on
// every change.
type Store struct {
	path string

	mu    sync.Mutex
	creds []httpapi.Credential
}

var _ httpapi.CredStore = (*Store)(nil)

// fileV1 is the file's shape.
type fileV1 struct {
	Version int                  `json:"version"`
	Creds   []httpapi.Credential `json:"creds"`
}

// New opens the credentials file at cfg.Path, which may not exist yet.
func New(cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("credfile: no path")
	}
	s := &Store{path: cfg.Path}
	b, err := os.ReadFile(cfg.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("credfile: %w", err)
	}
	var f fileV1
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("credfile: %s: %w", cfg.Path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("credfile: %s: unknown version %d", cfg.Path, f.Version)
	}
	s.creds = f.Creds
	return s, nil
}

// save writes the credentials to a temporary file, syncs it, and renames
// it over the old one, so a crash leaves either the old or the new set.
// The caller holds mu.
func (s *Store) save(creds []httpapi.Credential) error {
	b, err := json.MarshalIndent(fileV1{Version: 1, Creds: creds}, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("credfile: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("credfile: %w", err)
	}
	// Sync the directory so the rename itself is durable.
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Add stores c; it returns hub.ErrAlreadyExists if its id or hash is taken.
func (s *Store) Add(_ context.Context, c httpapi.Credential) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, have := range s.creds {
		if have.ID == c.ID || have.Hash == c.Hash {
			return fmt.Errorf("%w: credential %s", hub.ErrAlreadyExists, c.ID)
		}
	}
	next := append(append([]httpapi.Credential(nil), s.creds...), c)
	if err := s.save(next); err != nil {
		return err
	}
	s.creds = next
	return nil
}

// ByHash returns the credential whose token hashes to sum.
func (s *Store) ByHash(_ context.Context, sum string) (httpapi.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.creds {
		if c.Hash == sum {
			return c, nil
		}
	}
	return httpapi.Credential{}, fmt.Errorf("%w: credential", hub.ErrNotFound)
}

// List returns every credential, oldest first.
func (s *Store) List(context.Context) ([]httpapi.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]httpapi.Credential(nil), s.creds...), nil
}

// Revoke marks credential id revoked at t.
func (s *Store) Revoke(_ context.Context, id string, t time.Time) (httpapi.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.creds {
		if c.ID != id {
			continue
		}
		if c.Revoked != nil {
			return c, fmt.Errorf("%w: credential %s", hub.ErrRevoked, id)
		}
		next := append([]httpapi.Credential(nil), s.creds...)
		next[i].Revoked = &t
		if err := s.save(next); err != nil {
			return c, err
		}
		s.creds = next
		return next[i], nil
	}
	return httpapi.Credential{}, fmt.Errorf("%w: credential %s", hub.ErrNotFound, id)
}

// Import copies the credentials of the file at path (the file of a hubd
// from before credentials were shared) into dst when dst holds none: a
// one-time migration, which a missing file makes a no-op. It returns how
// many it copied.
func Import(ctx context.Context, path string, dst httpapi.CredStore) (int, error) {
	have, err := dst.List(ctx)
	if err != nil || len(have) > 0 {
		return 0, err
	}
	f, err := New(Config{Path: path})
	if err != nil {
		return 0, err
	}
	for _, c := range f.creds {
		if err := dst.Add(ctx, c); err != nil {
			return 0, fmt.Errorf("credfile: import %s: %w", c.ID, err)
		}
	}
	return len(f.creds), nil
}
