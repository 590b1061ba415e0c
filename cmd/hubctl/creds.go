package main

import (
	"fmt"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// registerCreds adds the scoped credential commands.
func (a *app) registerCreds(p *flags.Parser) {
	cr := mustAdd(p.AddCommand("creds", "scoped admin API credentials (operator, read-only, provider)", "", &struct{}{}))
	mustAdd(cr.AddCommand("create", "create a credential and print its token (shown once)", "", &credsCreateCmd{a: a}))
	mustAdd(cr.AddCommand("list", "list credentials (never their tokens)", "", &credsListCmd{a: a}))
	mustAdd(cr.AddCommand("revoke", "revoke a credential at once", "", &credsRevokeCmd{a: a}))
}

type credsCreateCmd struct {
	a      *app
	Scope  string `long:"scope" required:"true" choice:"operator" choice:"read-only" choice:"provider" description:"what the credential may do"`
	Device string `long:"device" description:"the provider device, with --scope provider"`
	Label  string `long:"label" description:"a note saying who or what holds it"`
}

func (c *credsCreateCmd) Execute([]string) error {
	if (c.Scope == "provider") != (c.Device != "") {
		return fmt.Errorf("%w: --device goes with --scope provider, and only with it", errUsage)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	cr, err := cl.CreateCred(ctx, httpapi.CreateCredRequest{Scope: c.Scope, Device: c.Device, Label: c.Label})
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(cr)
	}
	if err := c.a.printCreds([]httpapi.Credential{cr.Credential}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.a.out, "\nToken (shown once; the hub keeps only its hash):\n%s\n", cr.Token)
	return err
}

type credsListCmd struct{ a *app }

func (c *credsListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	cs, err := cl.Creds(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(cs)
	}
	return c.a.printCreds(cs)
}

type credsRevokeCmd struct {
	a    *app
	Args struct {
		ID string `positional-arg-name:"ID" required:"true"`
	} `positional-args:"true" required:"true"`
}

func (c *credsRevokeCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	cr, err := cl.RevokeCred(ctx, c.Args.ID)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(cr)
	}
	return c.a.printCreds([]httpapi.Credential{cr})
}

func (a *app) printCreds(cs []httpapi.Credential) error {
	rows := make([][]string, 0, len(cs))
	for _, c := range cs {
		revoked := "-"
		if c.Revoked != nil {
			revoked = stamp(*c.Revoked)
		}
		rows = append(rows, []string{c.ID, string(c.Scope), dash(c.Label), stamp(c.Created), revoked})
	}
	return a.table([]string{"ID", "SCOPE", "LABEL", "CREATED", "REVOKED"}, rows)
}

// dash shows an empty cell as "-" so columns stay aligned for awk.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
