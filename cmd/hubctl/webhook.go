package main

import (
	"fmt"

	flags "github.com/jessevdk/go-flags"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

// registerWebhook adds the webhook commands.
func (a *app) registerWebhook(p *flags.Parser) {
	wh := mustAdd(p.AddCommand("webhook", "providers' webhook endpoints (receipts, unpaid notices, settlement)", "", &struct{}{}))
	mustAdd(wh.AddCommand("add", "register a provider's webhook URL and print its signing secret (shown once)", "", &webhookAddCmd{a: a}))
	mustAdd(wh.AddCommand("list", "list webhook endpoints", "", &webhookListCmd{a: a}))
	mustAdd(wh.AddCommand("remove", "remove a webhook endpoint; its pending deliveries are dropped", "", &webhookRemoveCmd{a: a}))
	mustAdd(wh.AddCommand("deliveries", "list pending and dead deliveries with their attempts and last error", "", &webhookDeliveriesCmd{a: a}))
	mustAdd(wh.AddCommand("redeliver", "queue a dead delivery again, attempts reset", "", &webhookRedeliverCmd{a: a}))
	mustAdd(wh.AddCommand("test", "queue a signed ping event to one endpoint", "", &webhookTestCmd{a: a}))
}

type webhookDeliveriesCmd struct{ a *app }

func (c *webhookDeliveriesCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	ds, err := cl.WebhookDeliveries(ctx)
	if err != nil {
		return err
	}
	return c.a.printDeliveries(ds)
}

type webhookRedeliverCmd struct {
	a    *app
	Args struct {
		ID string `positional-arg-name:"DELIVERY_ID" required:"true"`
	} `positional-args:"true"`
}

func (c *webhookRedeliverCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.Redeliver(ctx, c.Args.ID)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(d)
	}
	return c.a.printDeliveries([]webhook.Delivery{d})
}

type webhookTestCmd struct {
	a    *app
	Args struct {
		ID string `positional-arg-name:"WEBHOOK_ID" required:"true"`
	} `positional-args:"true"`
}

func (c *webhookTestCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.TestWebhook(ctx, c.Args.ID)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(d)
	}
	return c.a.printDeliveries([]webhook.Delivery{d})
}

func (a *app) printDeliveries(ds []webhook.Delivery) error {
	if a.g.JSON {
		return a.printJSON(ds)
	}
	rows := make([][]string, 0, len(ds))
	for _, d := range ds {
		next := "-"
		if !d.NextAt.IsZero() {
			next = stamp(d.NextAt)
		}
		rows = append(rows, []string{d.ID, d.Endpoint, d.Event, d.State, fmt.Sprint(d.Attempts), next, dash(d.LastError)})
	}
	return a.table([]string{"ID", "ENDPOINT", "EVENT", "STATE", "ATTEMPTS", "NEXT", "LAST_ERROR"}, rows)
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
	rows := make([][]string, 0, len(eps))
	for _, ep := range eps {
		rows = append(rows, []string{ep.ID, ep.Provider, ep.URL, stamp(ep.Created)})
	}
	return a.table([]string{"ID", "PROVIDER", "URL", "CREATED"}, rows)
}
