package main

import (
	"fmt"
	"os"
	"time"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
)

// registerContracts adds the contract and income commands.
func (a *app) registerContracts(p *flags.Parser) {
	con := mustAdd(p.AddCommand("contract", "publish, show and try tariff contracts", "", &struct{}{}))
	mustAdd(con.AddCommand("publish", "publish a contract document", "", &contractPublishCmd{a: a}))
	mustAdd(con.AddCommand("list", "list published contracts, newest first", "", &contractListCmd{a: a}))
	mustAdd(con.AddCommand("show", "show one contract's canonical document by hash (without HASH: list them)", "", &contractShowCmd{a: a}))
	mustAdd(con.AddCommand("price", "price a usage record offline, as the hub would", "", &contractPriceCmd{a: a}))
	mustAdd(p.AddCommand("income", "a provider's metered income, its revenue-split shares included", "", &incomeCmd{a: a}))
}

type contractPublishCmd struct {
	a *app
	ocpiFlags
	Args struct {
		File string `positional-arg-name:"FILE" required:"true"`
	} `positional-args:"true" required:"true"`
}

func (c *contractPublishCmd) Execute([]string) error {
	doc, err := os.ReadFile(c.Args.File)
	if err != nil {
		return err
	}
	if doc, err = c.document(doc); err != nil {
		return err
	}
	// Parse here too, so a bad document fails with its precise reason
	// before anything is sent.
	if _, err := contracts.Parse(doc); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	rec, err := cl.PublishContract(ctx, doc)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(rec)
	}
	return c.a.printContracts([]hub.ContractRecord{rec})
}

type contractListCmd struct{ a *app }

func (c *contractListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	cs, err := cl.Contracts(ctx)
	if err != nil {
		return err
	}
	return c.a.printContracts(cs)
}

type contractShowCmd struct {
	a    *app
	Args struct {
		Hash string `positional-arg-name:"HASH"`
	} `positional-args:"true"`
}

func (c *contractShowCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	if c.Args.Hash == "" {
		cs, err := cl.Contracts(ctx)
		if err != nil {
			return err
		}
		return c.a.printContracts(cs)
	}
	var h hub.Hash
	if err := h.UnmarshalText([]byte(c.Args.Hash)); err != nil {
		return fmt.Errorf("%w: HASH: %v", errUsage, err)
	}
	rec, err := cl.Contract(ctx, h)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(rec)
	}
	// One contract: its canonical document, which is what its hash covers.
	_, err = fmt.Fprintf(c.a.out, "%s\n", rec.Document)
	return err
}

func (a *app) printContracts(cs []hub.ContractRecord) error {
	if a.g.JSON {
		return a.printJSON(cs)
	}
	rows := make([][]string, 0, len(cs))
	for _, r := range cs {
		rows = append(rows, []string{r.Hash.String(), r.Kind, r.Name, fmt.Sprint(r.Version), stamp(r.Published)})
	}
	return a.table([]string{"HASH", "KIND", "ID", "VERSION", "PUBLISHED"}, rows)
}

type contractPriceCmd struct {
	a *app
	ocpiFlags
	Args struct {
		File  string `positional-arg-name:"FILE" required:"true"`
		Usage string `positional-arg-name:"USAGE.json" required:"true"`
	} `positional-args:"true" required:"true"`
}

// Execute prices offline: no hub is contacted, so an operator can try a
// tariff before publishing it.
func (c *contractPriceCmd) Execute([]string) error {
	doc, err := os.ReadFile(c.Args.File)
	if err != nil {
		return err
	}
	if doc, err = c.document(doc); err != nil {
		return err
	}
	k, err := contracts.Parse(doc)
	if err != nil {
		return fmt.Errorf("%w: contract: %v", errUsage, err)
	}
	ub, err := os.ReadFile(c.Args.Usage)
	if err != nil {
		return err
	}
	u, err := contracts.ParseUsage(ub)
	if err != nil {
		return fmt.Errorf("%w: usage: %v", errUsage, err)
	}
	b, err := contracts.Price(k, u)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(b)
	}
	rows := make([][]string, 0, len(b.Lines)+5)
	for _, l := range b.Lines {
		rows = append(rows, []string{l.Component, fmt.Sprint(l.Element), l.Quantity.String() + " " + l.Unit,
			l.UnitPrice.String(), l.Amount.String() + " " + b.Currency, fmt.Sprint(uint64(l.Msat))})
	}
	sum := func(label string, v uint64) { rows = append(rows, []string{label, "", "", "", "", fmt.Sprint(v)}) }
	sum("SUBTOTAL", uint64(b.SubtotalMsat))
	if b.Adjustment != "" {
		rows = append(rows, []string{b.Adjustment, "", "", "", "", fmt.Sprint(uint64(b.TotalMsat))})
	}
	sum("TOTAL", uint64(b.TotalMsat))
	sum("HUB FEE", uint64(b.FeeMsat))
	sum("PROVIDER", uint64(b.ProviderMsat))
	if len(k.Splits) > 0 {
		// The provider's part divided by the revenue splits, as
		// charging credits it: each payee's share, the provider the rest.
		shares := k.SplitShares("", b.ProviderMsat)
		for _, s := range shares[1:] {
			rows = append(rows, []string{"SPLIT", s.Payee, "", "", "", fmt.Sprint(uint64(s.Msat))})
		}
		sum("PROVIDER KEEPS", uint64(shares[0].Msat))
	}
	if b.Release != nil {
		rows = append(rows, []string{"DECISION", string(b.Release.Outcome), b.Release.Reason, "", "", ""})
	}
	return c.a.table([]string{"COMPONENT", "ELEMENT", "QUANTITY", "UNIT PRICE", "AMOUNT", "MSAT"}, rows)
}

type incomeCmd struct {
	a        *app
	Provider string `long:"provider" required:"true" description:"provider device id"`
	From     string `long:"from" description:"start, RFC 3339 (default: the beginning)"`
	To       string `long:"to" description:"end, RFC 3339, exclusive (default: now)"`
}

func (c *incomeCmd) Execute([]string) error {
	from, err := optRFC3339("--from", c.From)
	if err != nil {
		return err
	}
	to, err := optRFC3339("--to", c.To)
	if err != nil {
		return err
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	in, err := cl.Income(ctx, c.Provider, from, to)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(in)
	}
	return c.a.table([]string{"FIELD", "VALUE"}, [][]string{
		{"provider", in.Provider}, {"from", stamp(in.From)}, {"to", stamp(in.To)},
		{"events", fmt.Sprint(in.Events)}, {"share_events", fmt.Sprint(in.ShareEvents)},
		{"earned_msat", fmt.Sprint(uint64(in.Earned))}, {"fees_msat", fmt.Sprint(uint64(in.Fees))}, {"shared_msat", fmt.Sprint(uint64(in.Shared))},
		{"owed_msat", fmt.Sprint(uint64(in.Owed))}, {"held_msat", fmt.Sprint(uint64(in.Held))}, {"unpaid_msat", fmt.Sprint(uint64(in.Unpaid))},
	})
}

// optRFC3339 parses an optional time flag; empty gives the zero time.
func optRFC3339(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %v", errUsage, flag, err)
	}
	return t, nil
}
