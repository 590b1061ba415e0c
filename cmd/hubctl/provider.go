package main

import (
	"fmt"
	"os"

	flags "github.com/jessevdk/go-flags"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// registerProvider adds the provider commands.
func (a *app) registerProvider(p *flags.Parser) {
	prov := mustAdd(p.AddCommand("provider", "service providers and their NATS credentials", "", &struct{}{}))
	mustAdd(prov.AddCommand("add", "enrol a provider and issue its NATS credentials (shown once)", "", &providerAddCmd{a: a}))
	mustAdd(prov.AddCommand("list", "list providers and their NATS users", "", &providerListCmd{a: a}))
}

type providerAddCmd struct {
	a        *app
	PubKey   string `long:"pubkey" required:"true" description:"provider public key, 33 bytes hex"`
	Owner    string `long:"owner" description:"owner of the provider"`
	Kind     string `long:"kind" description:"kind of provider (charge point, toll gantry…)"`
	CredsOut string `long:"creds-out" description:"write the NATS credential (nkey seed, or .creds file in operator mode) to this new file (mode 0600) instead of printing it"`
}

func (c *providerAddCmd) Execute([]string) error {
	key, err := hub.ParsePubKey(c.PubKey)
	if err != nil {
		return fmt.Errorf("%w: --pubkey: %v", errUsage, err)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	p, err := cl.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: key, Owner: c.Owner, Kind: c.Kind})
	if err != nil {
		return err
	}
	jwtCreds := p.NATS != nil && p.NATS.Creds != ""
	if p.NATS != nil && c.CredsOut != "" {
		// O_EXCL: never overwrite another provider's credential.
		f, err := os.OpenFile(c.CredsOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("creds file: %w", err)
		}
		secret := p.NATS.Seed + "\n"
		if p.NATS.Creds != "" {
			secret = p.NATS.Creds
		}
		_, err = f.WriteString(secret)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("creds file: %w", err)
		}
		p.NATS.Seed, p.NATS.Creds = "", "" // written, not printed
	}
	if c.a.g.JSON {
		return c.a.printJSON(p)
	}
	if err := c.a.printProviders([]httpapi.Provider{p}); err != nil {
		return err
	}
	switch {
	case p.NATS == nil:
		fmt.Fprintln(c.a.out, "\nThe hub uses an external NATS: add this provider's user there (docs/metering.md).")
	case jwtCreds && c.CredsOut != "":
		fmt.Fprintf(c.a.out, "\nNATS credentials file written to %s. Connect with it (nats.UserCredentials) and inbox prefix %s; publish on %s.\n",
			c.CredsOut, p.NATS.InboxPrefix, p.NATS.UsageSubject)
	case jwtCreds:
		fmt.Fprintf(c.a.out, "\nNATS credentials file (shown once; the hub does not keep it):\n%s", p.NATS.Creds)
		fmt.Fprintf(c.a.out, "Connect with it (nats.UserCredentials) and inbox prefix %s; publish on %s.\n", p.NATS.InboxPrefix, p.NATS.UsageSubject)
	case c.CredsOut != "":
		fmt.Fprintf(c.a.out, "\nNATS nkey seed written to %s. Connect with it and inbox prefix %s; publish on %s.\n",
			c.CredsOut, p.NATS.InboxPrefix, p.NATS.UsageSubject)
	default:
		fmt.Fprintf(c.a.out, "\nNATS nkey seed (shown once; the hub does not keep it):\n%s\n", p.NATS.Seed)
		fmt.Fprintf(c.a.out, "Connect with it and inbox prefix %s; publish on %s.\n", p.NATS.InboxPrefix, p.NATS.UsageSubject)
	}
	return nil
}

type providerListCmd struct{ a *app }

func (c *providerListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	ps, err := cl.Providers(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(ps)
	}
	return c.a.printProviders(ps)
}

func (a *app) printProviders(ps []httpapi.Provider) error {
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		user := "-"
		if p.NATS != nil {
			user = p.NATS.User
		}
		rows = append(rows, []string{p.Device.ID, string(p.Device.Status), p.Device.Kind, p.Device.Owner, user})
	}
	return a.table([]string{"ID", "STATUS", "KIND", "OWNER", "NATS_USER"}, rows)
}
