package natsembed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// ProviderCreds names a provider's NATS user: its device id and the public
// half of its user nkey ("U…").
type ProviderCreds struct {
	ID      string `json:"id"`
	NkeyPub string `json:"nkey"`
}

// ProviderPermissions returns what provider id may do on NATS, and nothing
// more:
//   - publish its usage on usage.<id> (JetStream's publish acknowledgement
//     is a reply and needs no publish right);
//   - read its receipts: plainly on receipts.<id>, or through the durable
//     pull consumer rcpt-<id> on M2M_RECEIPTS that the hub creates for it
//     (consumer info, next-message requests and acks of that consumer
//     only; it cannot create or change consumers, so it cannot point one
//     at another provider's subjects);
//   - receive replies only on its own inbox prefix _INBOX_<id>.
func ProviderPermissions(id string) *server.Permissions {
	stream, cons := metering.ReceiptsStream, metering.ReceiptsConsumer(id)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			metering.UsageSubject(id),
			"$JS.API.CONSUMER.INFO." + stream + "." + cons,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + cons,
			"$JS.ACK." + stream + "." + cons + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			metering.InboxPrefix(id) + ".>",
			metering.ReceiptsSubject(id),
		}},
	}
}

// nkeyUsers builds the server's users: the hub with full rights first,
// then every provider with its own permissions.
func nkeyUsers(hubNkey string, creds []ProviderCreds) ([]*server.NkeyUser, error) {
	if !nkeys.IsValidPublicUserKey(hubNkey) {
		return nil, errors.New("natsembed: the hub's nkey is not a public user nkey")
	}
	users := []*server.NkeyUser{{Nkey: hubNkey}}
	seen := map[string]bool{hubNkey: true}
	for _, c := range creds {
		if !metering.ValidSubjectToken(c.ID) {
			return nil, fmt.Errorf("natsembed: provider id %q cannot be a subject token", c.ID)
		}
		if !nkeys.IsValidPublicUserKey(c.NkeyPub) || seen[c.NkeyPub] {
			return nil, fmt.Errorf("natsembed: provider %s: bad or reused public user nkey %q", c.ID, c.NkeyPub)
		}
		seen[c.NkeyPub] = true
		users = append(users, &server.NkeyUser{Nkey: c.NkeyPub, Permissions: ProviderPermissions(c.ID)})
	}
	return users, nil
}

// LoadOrCreateSeed reads the nkey user seed in path, creating one with mode
// 0600 if the file does not exist, and returns its public key. The file is
// what nats.NkeyOptionFromSeed reads.
func LoadOrCreateSeed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", fmt.Errorf("natsembed: new nkey: %w", err)
		}
		seed, _ := kp.Seed()
		if err := writeFileAtomic(path, append(seed, '\n'), false); err != nil {
			return "", err
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", fmt.Errorf("natsembed: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("natsembed: %s is readable by others; chmod 600 it", path)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return "", fmt.Errorf("natsembed: %s: %w", path, err)
	}
	return kp.PublicKey()
}

// writeFileAtomic writes data to path with mode 0600 through a synced
// temporary file and a rename, so a crash leaves the old or the new file,
// never a torn one. With replace false an existing file is an error.
func writeFileAtomic(path string, data []byte, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err == nil {
		if _, err = tmp.Write(data); err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("natsembed: write %s: %w", path, err)
	}
	if !replace {
		// Link fails if path exists, so two creators cannot both win.
		if err := os.Link(tmp.Name(), path); err != nil {
			return fmt.Errorf("natsembed: %w", err)
		}
	} else if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("natsembed: sync %s: %w", dir, err)
	}
	return nil
}
