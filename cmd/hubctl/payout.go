package main

import (
	"fmt"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/hub"
)

// registerPayout adds "device set-payout" under the device command.
func (a *app) registerPayout(dev *flags.Command) {
	mustAdd(dev.AddCommand("set-payout",
		"set the address a provider's earnings are paid to at settlement (or --clear it)",
		"Earnings not settled into a channel of the party's own (a provider without a channel, a prosumer settled "+
			"by claim) go to this address in the next settlement batch; without one they are carried.",
		&deviceSetPayoutCmd{a: a}))
}

type deviceSetPayoutCmd struct {
	a     *app
	Clear bool `long:"clear" description:"remove the payout address: earnings are carried"`
	Args  struct {
		ID      string `positional-arg-name:"ID" required:"true"`
		Address string `positional-arg-name:"ADDRESS"`
	} `positional-args:"true"`
}

func (c *deviceSetPayoutCmd) Execute([]string) error {
	switch {
	case c.Clear && c.Args.Address != "":
		return fmt.Errorf("%w: give an ADDRESS or --clear, not both", errUsage)
	case !c.Clear && c.Args.Address == "":
		return fmt.Errorf("%w: ADDRESS is required (or --clear)", errUsage)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	d, err := cl.SetPayout(ctx, c.Args.ID, c.Args.Address)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(d)
	}
	if err := c.a.printDevices([]hub.Device{d}); err != nil {
		return err
	}
	if len(d.Payout) == 0 {
		fmt.Fprintln(c.a.out, "\nNo payout address: earnings are carried.")
	} else {
		fmt.Fprintf(c.a.out, "\nPayout script: %x\n", d.Payout)
	}
	return nil
}
