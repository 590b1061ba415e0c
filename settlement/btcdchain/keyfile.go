package btcdchain

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
)

// ErrKeyFile means the wallet key file exists but cannot be trusted: it is
// malformed, or readable by other users.
var ErrKeyFile = errors.New("btcdchain: bad wallet key file")

// loadOrCreateKey returns the secp256k1 private key stored hex-encoded in
// path, creating it with mode 0600 if the file does not exist.
//
// Creation writes a synced temporary file and links it into place: link fails
// if the name exists, so two processes racing to create the key both end up
// using whichever won, and a crash never leaves a half-written key.
func loadOrCreateKey(path string) (*btcec.PrivateKey, error) {
	key, err := loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}

	priv, err := btcec.NewPrivateKey()
	if err != nil {
		return nil, fmt.Errorf("btcdchain: new key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses 0600; the explicit Chmod documents it and
	// guards against a future change of that default.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(priv.Serialize()) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadKey(path)
		}
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		// Make the new directory entry durable too.
		_ = d.Sync()
		d.Close()
	}
	return priv, nil
}

func loadKey(path string) (*btcec.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v, want 0600", ErrKeyFile, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("btcdchain: %w", err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != btcec.PrivKeyBytesLen {
		return nil, fmt.Errorf("%w: %s is not a hex-encoded 32-byte key", ErrKeyFile, path)
	}
	priv, _ := btcec.PrivKeyFromBytes(raw)
	if priv.Key.IsZero() {
		return nil, fmt.Errorf("%w: %s holds the zero key", ErrKeyFile, path)
	}
	return priv, nil
}
