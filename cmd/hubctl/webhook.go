package main

import (
	"fmt"
	"text/tabwriter"

	flags "github.com/jessevdk/go-flags"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

// registerWebhook adds the webhook commands.
func (a *app) registerWebhook(p *flags.Parser) {
	wh := mustAdd(p.AddCommand("webhook", "providers' webhook endpoints (receipts, unpaid notices, settlement)", "", &struct{}{}))
	mustAdd(wh.AddCommand("add", "register a provider's webhook URL and print its signing secret (shown once)", "", &webhookAddCmd{a: a}))
	mustAdd(wh.AddCommand("list", "list webhook endpoints", "", &webhookListCmd{a: a}))
	mustAdd(wh.AddCommand("remove", "remove a webhook endpoint; its pending deliveries are dropped", "", &webhookRemoveCmd{a: a}))
}

type webhookAddCmd struct {
	a        *app
	Provider string `long:"provider" required:"true" description:"provider device id"`
	URL      string `long:"url" required:"true" description:"https URL the hub POSTs events to"`
}

func (c *webhookAddCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	ep, err := cl.AddWebhook(ctx, c.Provider, c.URL)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(ep)
	}
	if err := c.a.printWebhooks([]webhook.Endpoint{ep}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.a.out, "secret (shown once; verify signatures with it): %s\n", ep.Secret)
	return err
}

type webhookListCmd struct{ a *app }

func (c *webhookListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	eps, err := cl.Webhooks(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(eps)
	}
	return c.a.printWebhooks(eps)
}

type webhookRemoveCmd struct {
	a    *app
	Args struct {
		ID string `positional-arg-name:"id" required:"true"`
	} `positional-args:"true"`
}

func (c *webhookRemoveCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	if err := cl.RemoveWebhook(ctx, c.Args.ID); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.a.out, "removed %s\n", c.Args.ID)
	return err
}

func (a *app) printWebhooks(eps []webhook.Endpoint) error {
	w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tPROVIDER\tURL\tCREATED")
	for _, ep := range eps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ep.ID, ep.Provider, ep.URL, stamp(ep.Created))
	}
	return w.Flush()
}
