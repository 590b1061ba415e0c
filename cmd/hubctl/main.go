// Command hubctl is the operator's tool for a running hubd: it reads the hub's
// address and admin credential from the data dir (or flags) and calls the
// admin API.
//
// Exit codes: 0 success, 1 failure, 2 usage error (bad flags, or an
// argument the hub refused with 400), 3 not found,
// 4 the audit log does not verify, 5 a receipt does not verify on chain,
// 6 a receipt's settlement is not confirmed yet, 7 the credential is
// missing, wrong or revoked (401), 8 the credential's scope does not allow
// the command (403), 9 conflict (409: already exists, revoked, a run
// under way).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	flags "github.com/jessevdk/go-flags"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/version"
)

// Exit codes scripts can rely on.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitNotFound = 3
	exitAudit    = 4
	// 5 and 6 are settle.go's (receipt verification).
	exitUnauthorized = 7
	exitForbidden    = 8
	exitConflict     = 9
)

// globals are the options every command shares.
type globals struct {
	DataDir string `long:"datadir" env:"M2MHUB_DATADIR" description:"hubd data directory (default: $XDG_DATA_HOME/m2mhub or ~/.m2mhub)"`
	Admin   string `long:"admin" env:"M2MHUB_ADMIN" description:"admin API address (default: read from the data dir)"`
	Token   string `long:"token" env:"M2MHUB_ADMIN_TOKEN" description:"admin credential (default: read from the data dir)"`
	JSON    bool   `long:"json" description:"print JSON for scripts"`
	Version bool   `long:"version" description:"print the version and exit"`
}

// app carries what commands share: options, output and the context.
type app struct {
	g   globals
	out io.Writer
	ctx context.Context
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and executes one command, returning the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{out: stdout, ctx: ctx}
	p := a.parser()
	_, err := p.ParseArgs(args)
	if err == nil && p.Active == nil {
		if a.g.Version {
			fmt.Fprintln(stdout, version.String("hubctl"))
			return exitOK
		}
		fmt.Fprintln(stderr, "hubctl: Please specify a command (hubctl --help lists them)")
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	var fe *flags.Error
	if errors.As(err, &fe) {
		if fe.Type == flags.ErrHelp {
			fmt.Fprintln(stdout, fe.Message)
			return exitOK
		}
		fmt.Fprintln(stderr, "hubctl:", fe.Message)
		return exitUsage
	}
	fmt.Fprintln(stderr, "hubctl:", err)
	if code := settleExitCode(err); code != 0 {
		return code
	}
	var api *httpapi.APIError
	switch {
	case errors.Is(err, hub.ErrAuditBroken):
		return exitAudit
	case errors.As(err, &api) && api.Status == 404:
		return exitNotFound
	case errors.As(err, &api) && api.Status == 401:
		return exitUnauthorized
	case errors.As(err, &api) && api.Status == 403:
		return exitForbidden
	case errors.As(err, &api) && api.Status == 409:
		return exitConflict
	case errors.As(err, &api) && api.Status == 400:
		return exitUsage // the hub refused an argument
	case errors.Is(err, errUsage):
		return exitUsage
	}
	return exitFailure
}

var errUsage = errors.New("usage")

// parser is hubctl's command line grammar: the global options and every
// command.
func (a *app) parser() *flags.Parser {
	p := flags.NewParser(&a.g, flags.HelpFlag|flags.PassDoubleDash)
	p.Name = "hubctl"
	p.SubcommandsOptional = true // for --version alone
	a.register(p)
	return p
}

func (a *app) dir() datadir.Dir {
	if a.g.DataDir != "" {
		return datadir.Dir(a.g.DataDir)
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return datadir.Dir(d + "/m2mhub")
	}
	home, _ := os.UserHomeDir()
	return datadir.Dir(home + "/.m2mhub")
}

// client finds the admin API: flags first, then the data dir.
func (a *app) client() (*httpapi.Client, error) {
	addr, token := a.g.Admin, a.g.Token
	if addr == "" {
		rt, err := a.dir().ReadRuntime()
		if err != nil {
			return nil, err
		}
		// hubd removes the file when it stops; one left behind by a
		// killed hubd names a dead pid, which says more than the
		// "connection refused" calling its address would.
		if rt.PID > 0 && errors.Is(syscall.Kill(rt.PID, 0), syscall.ESRCH) {
			return nil, fmt.Errorf("hubd is not running: %s names pid %d, which has exited (left by a hubd that was killed; start hubd again)",
				a.dir().Path(datadir.RuntimeFile), rt.PID)
		}
		addr = rt.AdminAddr
	}
	if token == "" {
		t, err := a.dir().ReadToken(datadir.AdminTokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin credential: %w", err)
		}
		token = t
	}
	return httpapi.NewClient(addr, token), nil
}

// callCtx bounds one admin call.
func (a *app) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, 30*time.Second)
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns for people.
func (a *app) table(header []string, rows [][]string) error {
	w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	for i, h := range header {
		if i > 0 {
			fmt.Fprint(w, "\t")
		}
		fmt.Fprint(w, h)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		for i, c := range r {
			if i > 0 {
				fmt.Fprint(w, "\t")
			}
			fmt.Fprint(w, c)
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

// register adds every command to the parser.
func (a *app) register(p *flags.Parser) {
	mustAdd(p.AddCommand("info", "show the hub's identity and addresses", "", &infoCmd{a: a}))

	dev := mustAdd(p.AddCommand("device", "manage devices and providers", "", &struct{}{}))
	mustAdd(dev.AddCommand("add", "enrol a device", "", &deviceAddCmd{a: a}))
	mustAdd(dev.AddCommand("list", "list devices", "", &deviceListCmd{a: a}))
	mustAdd(dev.AddCommand("show", "show one device", "", &deviceShowCmd{a: a}))
	mustAdd(dev.AddCommand("revoke", "revoke a device at once", "", &deviceRevokeCmd{a: a}))
	mustAdd(dev.AddCommand("rotate", "move a device to a new key signed by its old key", "", &deviceRotateCmd{a: a}))
	mustAdd(dev.AddCommand("unreadable", "list device records the hub cannot read", "", &deviceUnreadableCmd{a: a}))
	mustAdd(dev.AddCommand("remove", "delete an unreadable device record (needs --force)", "", &deviceRemoveCmd{a: a}))
	a.registerPayout(dev)

	aud := mustAdd(p.AddCommand("audit", "inspect the audit log", "", &struct{}{}))
	mustAdd(aud.AddCommand("verify", "check the whole hash chain", "", &auditVerifyCmd{a: a}))
	mustAdd(aud.AddCommand("list", "print audit entries", "", &auditListCmd{a: a}))

	tok := mustAdd(p.AddCommand("token", "operator-signed enrolment tokens", "", &struct{}{}))
	mustAdd(tok.AddCommand("create", "sign an enrolment token with the operator key", "", &tokenCreateCmd{a: a}))

	mustAdd(p.AddCommand("keygen", "make a device key pair (for tests and demos)", "", &keygenCmd{a: a}))
	mustAdd(p.AddCommand("sign-rotation", "sign a key rotation with the old device key", "", &signRotationCmd{a: a}))
	a.registerContracts(p)
	a.registerProvider(p)
	a.registerSettle(p)
	a.registerCreds(p)
	a.registerChannels(p)
	a.registerCDRs(p)
	a.registerWebhook(p)
}

// stamp is the one way hubctl prints a time for people: RFC 3339 in UTC.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func mustAdd(c *flags.Command, err error) *flags.Command {
	if err != nil {
		panic(err) // a programming error in the command table
	}
	return c
}
