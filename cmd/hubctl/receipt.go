package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/btcsuite/btcd/wire"
	flags "github.com/jessevdk/go-flags"
)

// registerReceipts adds receipt list and get beside receipt verify.
func (a *app) registerReceipts(rc *flags.Command) {
	mustAdd(rc.AddCommand("list", "list the receipts of a channel's payments", "", &receiptListCmd{a: a}))
	mustAdd(rc.AddCommand("get", "fetch a receipt with its Merkle proof, once its epoch has a settlement run (--out writes what receipt verify reads)", "", &receiptGetCmd{a: a}))
}

type receiptListCmd struct {
	a       *app
	Channel string `long:"channel" required:"true" description:"the channel's funding outpoint, txid:index (hubctl channels list)"`
	From    uint64 `long:"from" description:"first sequence number"`
	Limit   int    `long:"limit" default:"100" description:"receipts to list"`
}

func (c *receiptListCmd) Execute([]string) error {
	op, err := wire.NewOutPointFromString(c.Channel)
	if err != nil {
		return fmt.Errorf("%w: --channel must be txid:index: %v", errUsage, err)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	rs, err := cl.ChannelReceipts(ctx, *op, c.From, c.Limit)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(rs)
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		rows = append(rows, []string{r.ID.String(), fmt.Sprint(r.Seq), stamp(r.Time), r.Payer, r.Payee,
			fmt.Sprint(uint64(r.Amount)), fmt.Sprint(r.EventCount)})
	}
	return c.a.table([]string{"ID", "SEQ", "TIME", "PAYER", "PAYEE", "AMOUNT_MSAT", "EVENTS"}, rows)
}

type receiptGetCmd struct {
	a    *app
	Out  string `long:"out" description:"write the receipt and its proof (JSON) to this file, for receipt verify"`
	Args struct {
		ID string `positional-arg-name:"ID" required:"true" description:"receipt id, 64 hex digits (hubctl receipt list)"`
	} `positional-args:"true" required:"true"`
}

func (c *receiptGetCmd) Execute([]string) error {
	b, err := hex.DecodeString(c.Args.ID)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("%w: ID must be 64 hex digits", errUsage)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	p, err := cl.ReceiptProof(ctx, [32]byte(b))
	if err != nil {
		return err
	}
	if c.Out != "" {
		enc, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.Out, append(enc, '\n'), 0o644); err != nil {
			return err
		}
	}
	if c.a.g.JSON {
		if c.Out != "" {
			return c.a.printJSON(map[string]any{"receipt_id": p.ReceiptID, "file": c.Out})
		}
		return c.a.printJSON(p)
	}
	rows := [][]string{
		{"receipt_id", p.ReceiptID.String()}, {"epoch", fmt.Sprint(p.Epoch.Number)},
		{"leaf", fmt.Sprintf("%d of %d", p.Index, p.Leaves)}, {"run_state", string(p.RunState)},
		{"txid", dash(p.Proof.Txid)},
	}
	if c.Out != "" {
		rows = append(rows, []string{"file", c.Out})
	}
	return c.a.table([]string{"FIELD", "VALUE"}, rows)
}
