package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	flags "github.com/jessevdk/go-flags"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// Exit codes of receipt verify, beside those in main.go.
const (
	// exitProof: the receipt, its proof or the anchor does not hold.
	exitProof = 5
	// exitUnconfirmed: everything checked holds so far, but the
	// settlement is not (yet) confirmed on chain; try again later.
	exitUnconfirmed = 6
)

// errUnconfirmed reports a settlement that is not on chain yet.
var errUnconfirmed = errors.New("settlement not confirmed on chain")

// errForeignHub reports a receipt signed by a key other than the hub's.
var errForeignHub = errors.New("receipt signed by another hub key")

// errRunFailed reports a run that ended failed or replaced.
var errRunFailed = errors.New("settlement run did not confirm")

// settleExitCode maps receipt verification failures to their exit codes; 0
// for any other error.
func settleExitCode(err error) int {
	switch {
	case errors.Is(err, m2mclient.ErrReceiptSignature), errors.Is(err, m2mclient.ErrProofInvalid),
		errors.Is(err, m2mclient.ErrRootMismatch), errors.Is(err, m2mclient.ErrNoAnchor),
		errors.Is(err, errForeignHub):
		return exitProof
	case errors.Is(err, m2mclient.ErrNotConfirmed), errors.Is(err, m2mclient.ErrTxNotFound),
		errors.Is(err, errUnconfirmed):
		return exitUnconfirmed
	}
	return 0
}

// registerSettle adds the settlement, epoch and receipt commands.
func (a *app) registerSettle(p *flags.Parser) {
	s := mustAdd(p.AddCommand("settle", "plan, run and watch settlement", "", &struct{}{}))
	mustAdd(s.AddCommand("plan", "dry run: what settling now would do (nothing is broadcast)", "", &settlePlanCmd{a: a}))
	mustAdd(s.AddCommand("run", "cut the open epoch and settle it, following the run until it confirms", "", &settleRunCmd{a: a}))
	mustAdd(s.AddCommand("status", "show the open epoch and recent runs", "", &settleStatusCmd{a: a}))
	mustAdd(p.AddCommand("epochs", "list epochs and how they settled", "", &epochsCmd{a: a}))
	rc := mustAdd(p.AddCommand("receipt", "hub receipts", "", &struct{}{}))
	mustAdd(rc.AddCommand("verify", "verify a receipt against the chain (exit 5: does not hold, 6: not confirmed yet)", "", &receiptVerifyCmd{a: a}))
	a.registerReceipts(rc)
}

type settlePlanCmd struct{ a *app }

func (c *settlePlanCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	v, err := cl.SettlementPlan(ctx)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(v)
	}
	return c.a.printPlan(v)
}

func (a *app) printPlan(v httpapi.PlanView) error {
	fmt.Fprintf(a.out, "Epoch %d, open since %s (height %d). Dry run: nothing is stored or broadcast.\n\n",
		v.Epoch.Number, stamp(v.Epoch.Start), v.Epoch.StartHeight)
	rows := make([][]string, 0, len(v.Participants))
	for _, p := range v.Participants {
		mode := p.Mode
		if mode == "" {
			mode = "carried"
		}
		rows = append(rows, []string{p.ID, mode, fmt.Sprint(int64(p.Net)), fmt.Sprint(int64(p.Settled)), fmt.Sprint(int64(p.Carried))})
	}
	if err := a.table([]string{"PARTICIPANT", "MODE", "NET_MSAT", "SETTLED_SAT", "CARRIED_MSAT"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(a.out)
	rows = rows[:0]
	for i, t := range v.Txs {
		rows = append(rows, []string{fmt.Sprint(i), t.Txid, fmt.Sprint(t.Inputs), fmt.Sprint(t.Outputs),
			fmt.Sprint(t.Coop), fmt.Sprint(t.Claims), fmt.Sprint(t.Payouts), fmt.Sprint(t.VBytes),
			fmt.Sprint(int64(t.Fee)), fmt.Sprint(int64(t.Revenue))})
	}
	if err := a.table([]string{"TX", "TXID", "IN", "OUT", "COOP", "CLAIMS", "PAYOUTS", "VBYTES", "FEE_SAT", "REVENUE_SAT"}, rows); err != nil {
		return err
	}
	if len(v.Carried) > 0 {
		fmt.Fprintln(a.out)
		rows = rows[:0]
		for _, c := range v.Carried {
			f := c.Funding
			if f == "" {
				f = "-"
			}
			rows = append(rows, []string{c.Participant, fmt.Sprint(int64(c.Amount)), c.Reason, f})
		}
		if err := a.table([]string{"CARRIED", "AMOUNT_MSAT", "REASON", "CHANNEL"}, rows); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.out, "\n%d transaction(s), %d vB, fee %d sat, hub revenue %d sat; anchor root %s\n",
		len(v.Txs), v.VBytes, int64(v.Fee), int64(v.Revenue), v.Anchor.ReceiptsRoot)
	return nil
}

type settleRunCmd struct {
	a       *app
	NoWait  bool          `long:"no-wait" description:"start the run and return at once"`
	Poll    time.Duration `long:"poll" default:"2s" description:"how often to ask for the run's state"`
	Timeout time.Duration `long:"timeout" default:"2h" description:"give up following the run after this long (the run goes on)"`
}

// Execute starts the run, then polls its status and prints every state
// change until it confirms, fails or is replaced.
func (c *settleRunCmd) Execute([]string) error {
	if c.Poll <= 0 || c.Timeout <= 0 {
		return fmt.Errorf("%w: --poll and --timeout must be positive", errUsage)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	// The hub answers once the run is durably started (or found
	// empty); the signing round goes on in hubd.
	ctx, cancel := c.a.callCtx()
	run, err := cl.Settle(ctx)
	cancel()
	if err != nil {
		return err
	}
	if !c.a.g.JSON {
		c.a.printRunChange(run)
	}
	deadline := time.Now().Add(c.Timeout)
	for !c.NoWait && !settled(run.State) {
		if time.Now().After(deadline) {
			return fmt.Errorf("epoch %d still %s after %v; follow it with settle status --epoch %d",
				run.Epoch.Number, run.State, c.Timeout, run.Epoch.Number)
		}
		select {
		case <-c.a.ctx.Done():
			return c.a.ctx.Err()
		case <-time.After(c.Poll):
		}
		ctx, cancel := c.a.callCtx()
		st, err := cl.SettlementStatus(ctx, run.Epoch.Number, 0)
		cancel()
		if err != nil {
			return err
		}
		if len(st.Runs) == 0 {
			continue
		}
		next := st.Runs[0]
		if (next.State != run.State || next.Attempt != run.Attempt) && !c.a.g.JSON {
			c.a.printRunChange(next)
		}
		run = next
	}
	if c.a.g.JSON {
		if err := c.a.printJSON(run); err != nil {
			return err
		}
	}
	if run.State.Final() {
		return fmt.Errorf("%w: epoch %d %s: %s", errRunFailed, run.Epoch.Number, run.State, run.Error)
	}
	return nil
}

// settled reports whether a run has nothing more to do: confirmed (a reorg
// can still undo it, which settle status would show), empty (nothing to
// settle on chain), failed or replaced.
func settled(s settlement.RunState) bool {
	return s == settlement.RunConfirmed || s == settlement.RunEmpty || s.Final()
}

func (a *app) printRunChange(r httpapi.RunView) {
	line := fmt.Sprintf("%s  epoch %d attempt %d: %s", r.Updated.UTC().Format(time.TimeOnly), r.Epoch.Number, r.Attempt, r.State)
	switch r.State {
	case settlement.RunBroadcast:
		line += "  txids " + strings.Join(r.Txids, ",")
	case settlement.RunConfirmed:
		line += fmt.Sprintf("  at height %d, fee %d sat, %d settled", r.ConfirmHeight, int64(r.Fee), r.Settled)
	case settlement.RunFailed, settlement.RunReplaced:
		line += "  " + r.Error
	case settlement.RunEmpty:
		line += "  nothing to settle on chain; balances carried to the next epoch"
	}
	fmt.Fprintln(a.out, line)
}

type settleStatusCmd struct {
	a     *app
	Epoch uint64 `long:"epoch" description:"show this epoch's run only"`
	Limit int    `long:"limit" default:"10" description:"runs to show"`
}

func (c *settleStatusCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	st, err := cl.SettlementStatus(ctx, c.Epoch, c.Limit)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(st)
	}
	if st.Open != nil {
		fmt.Fprintf(c.a.out, "Open epoch %d since %s (height %d).\n\n", st.Open.Number, stamp(st.Open.Start), st.Open.StartHeight)
	}
	rows := make([][]string, 0, len(st.Runs))
	for _, r := range st.Runs {
		rows = append(rows, []string{fmt.Sprint(r.Epoch.Number), fmt.Sprint(r.Attempt), string(r.State),
			orDash(strings.Join(r.Txids, ",")), fmt.Sprint(int64(r.Fee)), fmt.Sprint(r.Settled),
			orDash(heightStr(r.ConfirmHeight)), stamp(r.Updated), orDash(r.Error)})
	}
	return c.a.table([]string{"EPOCH", "ATTEMPT", "STATE", "TXIDS", "FEE_SAT", "SETTLED", "CONFIRMED_AT", "UPDATED", "ERROR"}, rows)
}

type epochsCmd struct {
	a     *app
	Limit int `long:"limit" default:"20" description:"epochs to show"`
}

func (c *epochsCmd) Execute([]string) error {
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	eps, err := cl.Epochs(ctx, c.Limit)
	if err != nil {
		return err
	}
	if c.a.g.JSON {
		return c.a.printJSON(eps)
	}
	rows := make([][]string, 0, len(eps))
	for _, e := range eps {
		end, state := "-", string(e.RunState)
		if !e.Open() {
			end = stamp(e.End)
		} else {
			state = "open"
		}
		rows = append(rows, []string{fmt.Sprint(e.Number), stamp(e.Start), end,
			heightStr(e.StartHeight), orDash(heightStr(e.EndHeight)), orDash(state), orDash(strings.Join(e.Txids, ","))})
	}
	return c.a.table([]string{"EPOCH", "START", "END", "START_HEIGHT", "END_HEIGHT", "RUN", "TXIDS"}, rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func heightStr(h uint32) string {
	if h == 0 {
		return ""
	}
	return fmt.Sprint(h)
}

// btcdFlags locate the node receipt verify reads the chain from; empty
// fields come from the "btcd" section of the running hub's hubd.json.
type btcdFlags struct {
	RPCHost string `long:"rpchost" description:"btcd RPC host:port"`
	RPCUser string `long:"rpcuser" description:"btcd RPC user"`
	RPCPass string `long:"rpcpass" description:"btcd RPC password"`
	RPCCert string `long:"rpccert" description:"btcd RPC TLS certificate file"`
	Network string `long:"network" description:"mainnet, testnet3, testnet4, signet, simnet or regtest (default: the hub's)"`
}

type receiptVerifyCmd struct {
	a       *app
	Btcd    btcdFlags `group:"btcd" namespace:"btcd"`
	HubKey  string    `long:"hub-key" description:"hub public key the receipt must be signed by (default: the hub's, from its admin API)"`
	MinConf int64     `long:"min-conf" default:"1" description:"confirmations the settlement transaction needs"`
	Args    struct {
		File string `positional-arg-name:"FILE" required:"true" description:"receipt: binary, hex, or JSON with a \"receipt\" hex field"`
	} `positional-args:"true" required:"true"`
}

// Execute checks the receipt file against the chain: the hub supplies the
// proof, the node supplies the transaction, and nothing the hub says is
// taken on trust except which transaction to look at.
func (c *receiptVerifyCmd) Execute([]string) error {
	raw, err := os.ReadFile(c.Args.File)
	if err != nil {
		return err
	}
	r, err := parseReceiptFile(raw)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", m2mclient.ErrReceiptSignature, c.Args.File, err)
	}
	cl, err := c.a.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.a.callCtx()
	defer cancel()
	hubKey, err := c.hubKey(ctx, cl)
	if err != nil {
		return err
	}
	if hubKey != hex.EncodeToString(r.HubKey[:]) {
		return fmt.Errorf("%w: %x, the hub's is %s", errForeignHub, r.HubKey, hubKey)
	}
	id := r.ID()
	pv, err := cl.ReceiptProof(ctx, id)
	if err != nil {
		return err
	}
	if pv.Proof.Txid == "" {
		return fmt.Errorf("%w: epoch %d is %s, no settlement transaction yet", errUnconfirmed, pv.Epoch.Number, pv.RunState)
	}
	proof, err := clientProof(pv.Proof)
	if err != nil {
		return err
	}
	chain, err := c.chain(ctx)
	if err != nil {
		return err
	}
	defer chain.c.Close()
	got, err := m2mclient.VerifyReceiptOnChain(ctx, r, proof, chain)
	if err != nil {
		return err
	}
	if got.Confirmations < c.MinConf {
		return fmt.Errorf("%w: %s has %d of %d confirmations", errUnconfirmed, got.Txid, got.Confirmations, c.MinConf)
	}
	out := map[string]any{
		"ok": true, "receipt_id": hex.EncodeToString(id[:]), "epoch": proof.Epoch,
		"leaf": proof.Merkle.Index, "leaves": proof.Merkle.Leaves,
		"txid": got.Txid.String(), "confirmations": got.Confirmations,
		"receipts_root": hex.EncodeToString(got.Anchor.ReceiptsRoot[:]),
		"audit_head":    hex.EncodeToString(got.Anchor.AuditHead[:]),
	}
	if c.a.g.JSON {
		return c.a.printJSON(out)
	}
	fmt.Fprintf(c.a.out, "receipt %x OK: leaf %d of %d in epoch %d, root %x anchored by %s (output %d, %d confirmations)\n",
		id, proof.Merkle.Index, proof.Merkle.Leaves, proof.Epoch, got.Anchor.ReceiptsRoot, got.Txid, got.AnchorIndex, got.Confirmations)
	return nil
}

func (c *receiptVerifyCmd) hubKey(ctx context.Context, cl *httpapi.Client) (string, error) {
	if c.HubKey != "" {
		b, err := hex.DecodeString(c.HubKey)
		if err != nil {
			return "", fmt.Errorf("%w: --hub-key: %v", errUsage, err)
		}
		k, err := btcec.ParsePubKey(b)
		if err != nil {
			return "", fmt.Errorf("%w: --hub-key: %v", errUsage, err)
		}
		return hex.EncodeToString(k.SerializeCompressed()), nil
	}
	info, err := cl.Info(ctx)
	if err != nil {
		return "", err
	}
	return info.PubKey, nil
}

// parseReceiptFile accepts a receipt's binary encoding, its hex, or a JSON
// object with a "receipt" hex field (what the provider library's file store
// and the hub's receipt messages hold).
func parseReceiptFile(raw []byte) (*channel.Receipt, error) {
	b, t := raw, bytes.TrimSpace(raw)
	if len(t) > 0 && t[0] == '{' {
		var j struct {
			Receipt string `json:"receipt"`
		}
		if err := json.Unmarshal(t, &j); err != nil || j.Receipt == "" {
			return nil, errors.New("JSON without a \"receipt\" hex field")
		}
		t = []byte(j.Receipt)
	}
	// A binary receipt starts with its version byte, never a hex digit,
	// so it is not mistaken for hex.
	if h, err := hex.DecodeString(string(t)); err == nil {
		b = h
	}
	r := new(channel.Receipt)
	if err := r.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return r, nil
}

// clientProof turns the hub's answer into the client library's proof; the
// JSON forms are the same by design.
func clientProof(p httpapi.ProofJSON) (m2mclient.ReceiptProof, error) {
	var out m2mclient.ReceiptProof
	b, err := json.Marshal(p)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("hub's proof: %w", err)
	}
	return out, nil
}

// nodeLookup adapts the btcd client to m2mclient.ChainLookup.
type nodeLookup struct{ c *btcdchain.Client }

func (n nodeLookup) LookupTx(ctx context.Context, txid chainhash.Hash) (*wire.MsgTx, int64, error) {
	info, err := n.c.GetTx(ctx, txid)
	if errors.Is(err, btcdchain.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", m2mclient.ErrTxNotFound, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return info.Tx, info.Confirmations, nil
}

// chain connects to the node named by the flags, or by hubd.json.
func (c *receiptVerifyCmd) chain(ctx context.Context) (nodeLookup, error) {
	f := c.Btcd
	if f.RPCHost == "" || f.Network == "" {
		rt, err := c.a.dir().ReadRuntime()
		switch {
		case err != nil && f.RPCHost == "":
			return nodeLookup{}, fmt.Errorf("btcd: set --btcd.rpchost or run beside hubd: %w", err)
		case err == nil && f.RPCHost == "" && rt.Btcd == nil:
			return nodeLookup{}, errors.New("btcd: hubd uses an external node; set --btcd.rpchost, --btcd.rpcuser, --btcd.rpcpass, --btcd.rpccert")
		case err == nil && f.RPCHost == "":
			f.RPCHost, f.RPCUser, f.RPCPass, f.RPCCert = rt.Btcd.Host, rt.Btcd.User, rt.Btcd.Pass, rt.Btcd.CertPath
		}
		if err == nil && f.Network == "" {
			f.Network = rt.Network
		}
	}
	params, err := chainParams(f.Network)
	if err != nil {
		return nodeLookup{}, err
	}
	cl, err := btcdchain.New(btcdchain.Config{
		Host: f.RPCHost, User: f.RPCUser, Pass: f.RPCPass, CertPath: f.RPCCert, Params: params,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nodeLookup{}, err
	}
	// A node on another network would answer "not found" for every
	// txid; say so instead.
	if err := cl.Healthy(ctx); err != nil {
		cl.Close()
		return nodeLookup{}, fmt.Errorf("btcd %s: %w", f.RPCHost, err)
	}
	return nodeLookup{c: cl}, nil
}

func chainParams(name string) (*chaincfg.Params, error) {
	for _, p := range []*chaincfg.Params{
		&chaincfg.MainNetParams, &chaincfg.TestNet3Params, &chaincfg.TestNet4Params,
		&chaincfg.SigNetParams, &chaincfg.SimNetParams, &chaincfg.RegressionNetParams,
	} {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w: --btcd.network %q", errUsage, name)
}
