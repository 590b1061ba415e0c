package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/authmsg"
	"github.com/m2mhub/m2mhub/internal/datadir"
)

type infoCmd struct{ a *app }

func (c *infoCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	info, err := cl.Info(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(info)
	}
	return c.a.table([]string{"FIELD", "VALUE"}, [][]string{
		{"pubkey", info.PubKey}, {"p2p_addr", info.P2PAddr}, {"admin_addr", info.AdminAddr}, {"metrics_addr", dash(info.MetricsAddr)},
		{"nats_url", info.NATSURL}, {"network", info.Network}, {"store", info.Store},
		{"sessions", fmt.Sprint(info.Sessions)},
		{"settle_instance", dash(info.SettleInstance)}, {"settle_leading", fmt.Sprint(info.SettleLeading)},
		{"settle_leader", dash(info.SettleLeader)}, {"settle_leader_token", fmt.Sprint(info.SettleLeaderToken)},
		{"settle_lease_expires", leaseExpiry(info.SettleLeaseExpires)},
	})
}

type deviceAddCmd struct {
	a      *app
	PubKey string   `long:"pubkey" required:"true" description:"device public key, 33 bytes hex"`
	Roles  []string `long:"role" required:"true" description:"payer or provider (repeat for both)"`
	Owner  string   `long:"owner" description:"owner of the device"`
	Kind   string   `long:"kind" description:"kind of device (car, meter, router…)"`
}

func (c *deviceAddCmd) Execute([]string) error {
	key, err := hub.ParsePubKey(c.PubKey)
	if err != nil {
		return fmt.Errorf("%w: --pubkey: %v", errUsage, err)
	}
	q := httpapi.AddDeviceRequest{PubKey: key, Owner: c.Owner, Kind: c.Kind}
	for _, s := range c.Roles {
		for _, part := range strings.Split(s, ",") {
			r, err := hub.ParseRole(strings.TrimSpace(part))
			if err != nil {
				return fmt.Errorf("%w: --role: %v", errUsage, err)
			}
			q.Roles = append(q.Roles, r)
		}
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.AddDevice(ctx, q)
	if err != nil {
		return err
	}
	return c.a.printDevice(d)
}

// printDevice prints one device: the API's object with --json, a
// one-row table otherwise.
func (a *app) printDevice(d hub.Device) error {
	if a.g.JSON {
		return a.printJSON(d)
	}
	return a.printDevices([]hub.Device{d})
}

func (a *app) printDevices(ds []hub.Device) error {
	if a.g.JSON {
		return a.printJSON(ds)
	}
	rows := make([][]string, 0, len(ds))
	for _, d := range ds {
		roles := make([]string, len(d.Roles))
		for i, r := range d.Roles {
			roles[i] = string(r)
		}
		rows = append(rows, []string{d.ID, string(d.Status), strings.Join(roles, ","), d.Kind, d.Owner, d.Key.String()})
	}
	return a.table([]string{"ID", "STATUS", "ROLES", "KIND", "OWNER", "PUBKEY"}, rows)
}

type deviceListCmd struct{ a *app }

func (c *deviceListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	ds, err := cl.Devices(ctx)
	if err != nil {
		return err
	}
	return c.a.printDevices(ds)
}

type deviceArg struct {
	ID string `positional-arg-name:"ID" required:"true"`
}

type deviceShowCmd struct {
	a    *app
	Args deviceArg `positional-args:"true" required:"true"`
}

func (c *deviceShowCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.Device(ctx, c.Args.ID)
	if err != nil {
		return err
	}
	return c.a.printDevice(d)
}

type deviceRevokeCmd struct {
	a      *app
	Reason string    `long:"reason" description:"why, for the audit log"`
	Args   deviceArg `positional-args:"true" required:"true"`
}

func (c *deviceRevokeCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.Revoke(ctx, c.Args.ID, c.Reason)
	if err != nil {
		return err
	}
	return c.a.printDevice(d)
}

type deviceUnreadableCmd struct{ a *app }

func (c *deviceUnreadableCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	rs, err := cl.UnreadableDevices(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(rs)
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		rows = append(rows, []string{r.ID, r.Error})
	}
	return c.a.table([]string{"ID", "ERROR"}, rows)
}

type deviceRemoveCmd struct {
	a      *app
	Force  bool      `long:"force" description:"confirm: the record is deleted for good"`
	Reason string    `long:"reason" description:"why, for the audit log"`
	Args   deviceArg `positional-args:"true" required:"true"`
}

func (c *deviceRemoveCmd) Execute([]string) error {
	if !c.Force {
		return fmt.Errorf("%w: device remove deletes the record for good: pass --force (only unreadable records are removed; revoke a readable device)", errUsage)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	if err := cl.RemoveDevice(ctx, c.Args.ID, c.Reason); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.a.out, "removed %s\n", c.Args.ID)
	return err
}

type deviceRotateCmd struct {
	a      *app
	NewKey string    `long:"new-pubkey" required:"true" description:"the device's new public key, hex"`
	Sig    string    `long:"sig" required:"true" description:"old key's BIP-340 signature over the rotation, hex"`
	Args   deviceArg `positional-args:"true" required:"true"`
}

func (c *deviceRotateCmd) Execute([]string) error {
	key, err := hub.ParsePubKey(c.NewKey)
	if err != nil {
		return fmt.Errorf("%w: --new-pubkey: %v", errUsage, err)
	}
	sig, err := hex.DecodeString(c.Sig)
	if err != nil {
		return fmt.Errorf("%w: --sig is not hex", errUsage)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.Rotate(ctx, c.Args.ID, key, sig)
	if err != nil {
		return err
	}
	return c.a.printDevice(d)
}

type auditVerifyCmd struct{ a *app }

func (c *auditVerifyCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	head, err := cl.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(map[string]any{"ok": true, "entries": head.Seq, "head": head.Hash})
	}
	fmt.Fprintf(c.a.out, "audit log OK: %d entries, head %s\n", head.Seq, head.Hash)
	return nil
}

type auditListCmd struct {
	a     *app
	From  uint64 `long:"from" default:"1" description:"first sequence number"`
	Limit int    `long:"limit" default:"100" description:"entries to print"`
}

func (c *auditListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	es, err := cl.Audit(ctx, c.From, c.Limit)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(es)
	}
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		rows = append(rows, []string{fmt.Sprint(e.Seq), stamp(e.Time), e.Kind, e.Subject, e.Actor, string(e.Detail)})
	}
	return c.a.table([]string{"SEQ", "TIME", "KIND", "SUBJECT", "ACTOR", "DETAIL"}, rows)
}

type tokenCreateCmd struct {
	a         *app
	Roles     []string      `long:"role" required:"true" description:"payer or provider (repeat for both)"`
	DeviceKey string        `long:"device-key" description:"bind the token to this device public key (hex)"`
	Owner     string        `long:"owner" description:"owner recorded at enrolment"`
	Kind      string        `long:"kind" description:"kind recorded at enrolment"`
	TTL       time.Duration `long:"ttl" default:"24h" description:"how long the token stays valid"`
	Out       string        `long:"out" description:"write the token to this file (mode 0600)"`
}

// Execute signs locally with the operator key from the data dir: the
// operator key never has to reach hubd. The token is a JSON document, so
// like every other command it reaches stdout only with --json; --out
// writes it to a file and prints what was made.
func (c *tokenCreateCmd) Execute([]string) error {
	if c.Out == "" && !c.a.g.JSON {
		return fmt.Errorf("%w: token create needs --out FILE (writes the token) or --json (prints it)", errUsage)
	}
	op, err := c.a.dir().LoadKey(datadir.OperatorKeyFile)
	if err != nil {
		return fmt.Errorf("operator key: %w", err)
	}
	if c.DeviceKey != "" {
		if _, err := hub.ParsePubKey(c.DeviceKey); err != nil {
			return fmt.Errorf("%w: --device-key: %v", errUsage, err)
		}
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	t := authmsg.Token{
		ID: hex.EncodeToString(id[:]), DeviceKey: c.DeviceKey, Roles: c.Roles,
		Owner: c.Owner, Kind: c.Kind, Expires: time.Now().Add(c.TTL).UTC().Truncate(time.Second),
	}
	tok, err := authmsg.SignToken(op, t)
	if err != nil {
		return err
	}
	if c.Out == "" {
		_, err = fmt.Fprintln(c.a.out, string(tok))
		return err
	}
	if err := os.WriteFile(c.Out, tok, 0o600); err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(map[string]any{"id": t.ID, "roles": t.Roles, "expires": t.Expires, "file": c.Out})
	}
	return c.a.table([]string{"TOKEN", "ROLES", "EXPIRES", "FILE"}, [][]string{{t.ID, strings.Join(t.Roles, ","), stamp(t.Expires), c.Out}})
}

type keygenCmd struct {
	a   *app
	Out string `long:"out" required:"true" description:"write the private key (hex) to this file, mode 0600"`
}

func (c *keygenCmd) Execute([]string) error {
	k, err := btcec.NewPrivateKey()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(c.Out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(k.Serialize())); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	pub := hex.EncodeToString(k.PubKey().SerializeCompressed())
	if c.a.g.JSON {
		return c.a.printJSON(map[string]string{"pubkey": pub, "key_file": c.Out})
	}
	_, err = fmt.Fprintln(c.a.out, pub)
	return err
}

type signRotationCmd struct {
	a      *app
	OldKey string `long:"old-key-file" required:"true" description:"file holding the device's current private key (hex)"`
	NewKey string `long:"new-pubkey" required:"true" description:"the new public key, hex"`
	Device string `long:"device" required:"true" description:"device id"`
}

func (c *signRotationCmd) Execute([]string) error {
	b, err := os.ReadFile(c.OldKey)
	if err != nil {
		return err
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		return fmt.Errorf("%w: %s does not hold a 32-byte hex key", errUsage, c.OldKey)
	}
	old, _ := btcec.PrivKeyFromBytes(raw)
	nk, err := hub.ParsePubKey(c.NewKey)
	if err != nil {
		return fmt.Errorf("%w: --new-pubkey: %v", errUsage, err)
	}
	pub, _ := btcec.ParsePubKey(nk[:])
	sig, err := authmsg.SignRotation(old, c.Device, pub)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.a.out, hex.EncodeToString(sig))
	return err
}

func leaseExpiry(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
