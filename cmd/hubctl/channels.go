package main

import (
	"fmt"

	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// registerChannels adds the channel and hold commands.
func (a *app) registerChannels(p *flags.Parser) {
	ch := mustAdd(p.AddCommand("channels", "payment channels, exposure and expiry", "", &struct{}{}))
	mustAdd(ch.AddCommand("list", "list channels with their balances", "", &channelsListCmd{a: a}))
	mustAdd(ch.AddCommand("show", "show one channel by funding outpoint", "", &channelsShowCmd{a: a}))
	mustAdd(ch.AddCommand("exposure", "what the hub stands to lose if every device vanished now", "", &exposureCmd{a: a}))
	mustAdd(ch.AddCommand("expiring", "open channels expiring within N blocks", "", &expiringCmd{a: a}))
	hl := mustAdd(p.AddCommand("holds", "pre-authorisations on channels", "", &struct{}{}))
	mustAdd(hl.AddCommand("list", "list holds", "", &holdsListCmd{a: a}))
}

type channelsListCmd struct {
	a      *app
	Device string `long:"device" description:"only this device's channels"`
}

func (c *channelsListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	cs, err := cl.ChannelList(ctx, c.Device)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(cs)
	}
	return c.a.printChannels(cs)
}

func (a *app) printChannels(cs []httpapi.ChannelView) error {
	rows := make([][]string, 0, len(cs))
	for _, v := range cs {
		rows = append(rows, []string{dash(v.Outpoint), v.DeviceID, string(v.Status), fmt.Sprint(int64(v.Capacity)),
			fmt.Sprint(v.Seq), fmt.Sprint(uint64(v.Paid)), fmt.Sprint(uint64(v.Owed)), fmt.Sprint(uint64(v.Balance)), fmt.Sprint(v.Expiry)})
	}
	return a.table([]string{"OUTPOINT", "DEVICE", "STATUS", "CAPACITY_SAT", "SEQ", "PAID_MSAT", "OWED_MSAT", "BALANCE_MSAT", "EXPIRY"}, rows)
}

type channelsShowCmd struct {
	a    *app
	Args struct {
		Outpoint string `positional-arg-name:"TXID:INDEX" required:"true"`
	} `positional-args:"true" required:"true"`
}

func (c *channelsShowCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	v, err := cl.ChannelShow(ctx, c.Args.Outpoint)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(v)
	}
	return c.a.table([]string{"FIELD", "VALUE"}, [][]string{
		{"outpoint", dash(v.Outpoint)}, {"device", v.DeviceID}, {"status", string(v.Status)},
		{"capacity_sat", fmt.Sprint(int64(v.Capacity))}, {"expiry_height", fmt.Sprint(v.Expiry)},
		{"seq", fmt.Sprint(v.Seq)}, {"paid_msat", fmt.Sprint(uint64(v.Paid))}, {"owed_msat", fmt.Sprint(uint64(v.Owed))},
		{"balance_msat", fmt.Sprint(uint64(v.Balance))}, {"min_depth", fmt.Sprint(v.MinDepth)},
		{"close_txid", dash(v.CloseTx)}, {"created", stamp(v.Created)}, {"updated", stamp(v.Updated)},
	})
}

type exposureCmd struct{ a *app }

func (c *exposureCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	x, err := cl.Exposure(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(x)
	}
	return c.a.table([]string{"FIELD", "VALUE"}, [][]string{
		{"channels", fmt.Sprint(x.Channels)}, {"owed_msat", fmt.Sprint(uint64(x.Owed))},
		{"credit_msat", fmt.Sprint(uint64(x.Credit))}, {"reserved_msat", fmt.Sprint(uint64(x.Reserved))},
	})
}

type expiringCmd struct {
	a      *app
	Within uint32 `long:"within" default:"144" description:"blocks from the tip"`
}

func (c *expiringCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	v, err := cl.Expiring(ctx, c.Within)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(v)
	}
	rows := make([][]string, 0, len(v.Channels))
	for _, ch := range v.Channels {
		left := int64(ch.Expiry) - int64(v.Height)
		rows = append(rows, []string{dash(ch.Outpoint), ch.DeviceID, string(ch.Status), fmt.Sprint(ch.Expiry), fmt.Sprint(left), fmt.Sprint(uint64(ch.Paid))})
	}
	fmt.Fprintf(c.a.out, "height %d, expiring within %d blocks: %d channels\n", v.Height, v.Within, len(v.Channels))
	return c.a.table([]string{"OUTPOINT", "DEVICE", "STATUS", "EXPIRY", "BLOCKS_LEFT", "PAID_MSAT"}, rows)
}

type holdsListCmd struct {
	a      *app
	Device string `long:"device" description:"only holds on this device's channels"`
}

func (c *holdsListCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	hs, err := cl.Holds(ctx, c.Device)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(hs)
	}
	rows := make([][]string, 0, len(hs))
	for _, h := range hs {
		rows = append(rows, []string{h.ID, h.Channel, h.DeviceID, h.Provider, string(h.Status),
			fmt.Sprint(uint64(h.Max)), fmt.Sprint(uint64(h.Captured)), stamp(h.Expires)})
	}
	return c.a.table([]string{"ID", "CHANNEL", "DEVICE", "PROVIDER", "STATUS", "MAX_MSAT", "CAPTURED_MSAT", "EXPIRES"}, rows)
}
