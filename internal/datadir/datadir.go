// Package datadir fixes the layout of hubd's data directory, which hubctl
// reads too: the hub's identity key, the operator key, the admin credential
// and the runtime file that names the addresses of a running hub. Secrets are
// created once with mode 0600 and never rewritten.
package datadir

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
)

// File names inside the data dir.
const (
	HubKeyFile      = "hub.key"      // the hub's identity (BOLT 8 static key, receipts)
	OperatorKeyFile = "operator.key" // signs enrolment tokens; only its public half is needed by hubd
	AdminTokenFile  = "admin.token"  // bearer credential of the admin API
	RuntimeFile     = "hubd.json"    // addresses of the running hub, for hubctl
	StoreFile       = "hub.db"       // embedded store
	NATSDir         = "nats"         // in-process JetStream storage
	BtcdDir         = "btcd"         // regtest btcd child process
	WalletKeyFile   = "wallet.key"   // the hub's on-chain wallet key
)

// NATS credentials of the embedded bus: the hub's own nkey seed (0600) and
// the providers' public nkeys.
const (
	NATSKeyFile       = "nats.nkey"
	NATSProvidersFile = "nats-providers.json"
)

// Operator-surface files: scoped admin credentials (hashes only, 0600),
// providers' webhook endpoints with their secrets (0600) and the durable
// outbox of webhook deliveries.
const (
	CredsFile         = "creds.json"
	WebhooksFile      = "webhooks.json"
	WebhookOutboxFile = "webhooks-outbox.db"
)

// Dir is a data directory.
type Dir string

// Path joins name to the directory.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// Ensure creates the directory (0700) if needed.
func (d Dir) Ensure() error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return nil
}

// LoadOrCreateKey reads a hex private key from name, creating a fresh one
// with mode 0600 if the file does not exist.
func (d Dir) LoadOrCreateKey(name string) (*btcec.PrivateKey, error) {
	k, err := d.LoadKey(name)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err = btcec.NewPrivateKey()
	if err != nil {
		return nil, fmt.Errorf("datadir: new key: %w", err)
	}
	if err := d.writeSecret(name, hex.EncodeToString(k.Serialize())); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadKey reads a hex private key from name. It refuses a key file that
// others can read.
func (d Dir) LoadKey(name string) (*btcec.PrivateKey, error) {
	s, err := d.readSecret(name)
	if err != nil {
		return nil, err
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("datadir: %s does not hold a 32-byte hex key", d.Path(name))
	}
	k, _ := btcec.PrivKeyFromBytes(b)
	return k, nil
}

// LoadOrCreateToken reads the admin credential, creating it if needed.
func (d Dir) LoadOrCreateToken(name string) (string, error) {
	s, err := d.readSecret(name)
	if !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s = hex.EncodeToString(b[:])
	return s, d.writeSecret(name, s)
}

// ReadToken reads the admin credential.
func (d Dir) ReadToken(name string) (string, error) { return d.readSecret(name) }

func (d Dir) readSecret(name string) (string, error) {
	p := d.Path(name)
	st, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("datadir: %s is readable by others (mode %v): chmod 600 it", p, st.Mode().Perm())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// writeSecret creates name exclusively with mode 0600 and fsyncs it, so a
// crash never leaves a half-written key that a restart would replace.
func (d Dir) writeSecret(name, value string) error {
	if err := d.Ensure(); err != nil {
		return err
	}
	f, err := os.OpenFile(d.Path(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("datadir: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("datadir: %w", err)
	}
	return f.Close()
}

// Runtime is what a running hubd publishes about itself in RuntimeFile.
type Runtime struct {
	PID       int    `json:"pid"`
	PubKey    string `json:"pubkey"`
	P2PAddr   string `json:"p2p_addr"`
	AdminAddr string `json:"admin_addr"`
	NATSURL   string `json:"nats_url"`
	Network   string `json:"network"`
	// MetricsAddr serves Prometheus /metrics; empty when disabled.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// Btcd is set when hubd runs its own regtest btcd, so local tools (the
	// demo, tests) can fund channels and mine blocks on it.
	Btcd *BtcdRPC `json:"btcd,omitempty"`
}

// BtcdRPC locates a btcd RPC server.
type BtcdRPC struct {
	Host     string `json:"host"`
	User     string `json:"user"`
	Pass     string `json:"pass"`
	CertPath string `json:"cert_path"`
}

// WriteRuntime replaces RuntimeFile atomically.
func (d Dir) WriteRuntime(r Runtime) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.Path(RuntimeFile + ".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return os.Rename(tmp, d.Path(RuntimeFile))
}

// ReadRuntime reads RuntimeFile.
func (d Dir) ReadRuntime() (Runtime, error) {
	var r Runtime
	b, err := os.ReadFile(d.Path(RuntimeFile))
	if err != nil {
		return r, fmt.Errorf("datadir: is hubd running with this data dir? %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("datadir: %s: %w", d.Path(RuntimeFile), err)
	}
	return r, nil
}

// RemoveRuntime deletes RuntimeFile on a clean shutdown.
func (d Dir) RemoveRuntime() error {
	err := os.Remove(d.Path(RuntimeFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
