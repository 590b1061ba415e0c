package main

import (
	"encoding/json"
	"fmt"
	"strings"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
)

// registerCDRs adds the CDR commands.
func (a *app) registerCDRs(p *flags.Parser) {
	c := mustAdd(p.AddCommand("cdr", "OCPI charge detail records of EV sessions", "", &struct{}{}))
	mustAdd(c.AddCommand("list", "list CDRs, newest first", "", &cdrListCmd{a: a}))
	mustAdd(c.AddCommand("show", "show one CDR (--json: the record with the OCPI CDR document)", "", &cdrShowCmd{a: a}))
}

type cdrListCmd struct {
	a        *app
	Provider string `long:"provider" description:"only this provider's CDRs"`
}

func (c *cdrListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	rs, err := cl.CDRs(ctx, c.Provider)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(rs)
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		d, err := decodeCDR(r)
		if err != nil {
			return err
		}
		rows = append(rows, []string{r.ID, r.Provider, r.Payer, r.Session, d.TotalEnergy.String(),
			fmt.Sprint(uint64(r.TotalMsat)), d.TotalCost.ExclVAT.String() + " " + d.Currency, stamp(r.Created)})
	}
	return c.a.table([]string{"ID", "PROVIDER", "PAYER", "SESSION", "KWH", "TOTAL_MSAT", "EXCL_VAT", "CREATED"}, rows)
}

type cdrShowCmd struct {
	a    *app
	Args struct {
		ID string `positional-arg-name:"ID" required:"true"`
	} `positional-args:"true" required:"true"`
}

func (c *cdrShowCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	r, err := cl.CDR(ctx, c.Args.ID)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(r)
	}
	d, err := decodeCDR(r)
	if err != nil {
		return err
	}
	incl := "-"
	if d.TotalCost.InclVAT != nil {
		incl = d.TotalCost.InclVAT.String() + " " + d.Currency
	}
	m := d.M2MHub
	return c.a.table([]string{"FIELD", "VALUE"}, [][]string{
		{"id", r.ID}, {"provider", r.Provider}, {"payer", r.Payer}, {"session", r.Session},
		{"events", strings.Join(r.Events, ",")}, {"start", d.StartDateTime}, {"end", d.EndDateTime},
		{"token", d.CdrToken.UID}, {"location", d.CdrLocation.ID}, {"evse", d.CdrLocation.EvseUID},
		{"energy_kwh", d.TotalEnergy.String()}, {"time_h", d.TotalTime.String()},
		{"total_excl_vat", d.TotalCost.ExclVAT.String() + " " + d.Currency}, {"total_incl_vat", incl},
		{"total_msat", fmt.Sprint(uint64(m.TotalMsat))}, {"vat_msat", fmt.Sprint(uint64(m.VATMsat))},
		{"fee_msat", fmt.Sprint(uint64(m.FeeMsat))}, {"provider_msat", fmt.Sprint(uint64(m.ProviderMsat))},
		{"rate_msat_per_unit", m.RateMsatPerUnit.String()}, {"contract", m.Contract}, {"created", stamp(r.Created)},
	})
}

// decodeCDR reads a record's OCPI document.
func decodeCDR(r hub.CDRRecord) (contracts.CDR, error) {
	var d contracts.CDR
	if err := json.Unmarshal(r.CDR, &d); err != nil {
		return d, fmt.Errorf("hubctl: CDR %s: %w", r.ID, err)
	}
	return d, nil
}
