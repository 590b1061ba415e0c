package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"net/http/httptest"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/httpapi/credfile"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// tipChain is a test-only chain for the channel manager's read paths: a
// fixed tip height and nothing else (the manager is never started).
type tipChain struct{ height int32 }

func (c tipChain) BlockCount(context.Context) (int32, error) { return c.height, nil }
func (tipChain) TxOut(context.Context, wire.OutPoint, bool) (hub.TxOut, error) {
	return hub.TxOut{}, errors.New("tipChain: no outputs")
}
func (tipChain) Confirmations(context.Context, chainhash.Hash) (int64, error) {
	return 0, errors.New("tipChain: no transactions")
}
func (tipChain) SendRawTransaction(context.Context, *wire.MsgTx) (chainhash.Hash, error) {
	return chainhash.Hash{}, errors.New("tipChain: no broadcast")
}

type noSessions struct{}

// storeIncomes sums the store's charges as charging does.
type storeIncomes struct{ st *boltstore.Store }

func (i storeIncomes) Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error) {
	return charging.ReadIncome(ctx, i.st, provider, from, to)
}

func (noSessions) Session(string) (*session.Session, bool) { return nil, false }

// tick is a clock that moves one second per reading, so audit entries and
// credentials get distinct, reproducible times.
type tick struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tick) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// TickAfter implements clock.Clock; nothing in these tests waits on it.
func (c *tick) TickAfter(d time.Duration) <-chan time.Time { return time.After(d) }

func seededKey(b byte) *btcec.PrivateKey {
	var seed [32]byte
	seed[0], seed[31] = 7, b
	k, _ := btcec.PrivKeyFromBytes(seed[:])
	return k
}

// goldenHub is the admin API over a real registry, channel manager and
// contract store on a real bolt store, scoped credentials in a real file,
// and the fake settlement service, with fixed devices, channels and holds.
type goldenHub struct {
	conn          []string
	payer, prov   hub.Device
	chanA, chanB  wire.OutPoint
	clock         *tick
	settlementFak *fakeSettlement
}

func newGoldenHub(t *testing.T) *goldenHub {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store, err := boltstore.New(boltstore.Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	clk := &tick{t: t0}
	reg, err := registry.New(registry.Config{Store: store, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	g := &goldenHub{clock: clk}
	if g.payer, err = reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(seededKey(1).PubKey()), Roles: []hub.Role{hub.RolePayer}, Owner: "fleet-a", Kind: "car"}, "operator"); err != nil {
		t.Fatal(err)
	}
	if g.prov, err = reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(seededKey(2).PubKey()), Roles: []hub.Role{hub.RoleProvider}, Owner: "tolls-inc", Kind: "gantry"}, "operator"); err != nil {
		t.Fatal(err)
	}
	hubKey := seededKey(9)
	chans, err := channels.New(channels.Config{
		Store: store, Devices: reg, Sessions: noSessions{}, Chain: tipChain{height: 500},
		HubKey: hubKey, PayoutScript: []byte{0x51}, Params: &chaincfg.RegressionNetParams,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chans.Close() })
	g.chanA = wire.OutPoint{Hash: chainhash.Hash{0xa1, 0x01}, Index: 0}
	g.chanB = wire.OutPoint{Hash: chainhash.Hash{0xb2, 0x02}, Index: 1}
	for i, c := range []hub.ChannelRecord{
		{PendingID: [32]byte{1}, Funding: g.chanA, Capacity: 100_000, Expiry: 600, Status: hub.ChannelReady,
			Seq: 3, Paid: 12_345_678, Owed: 2_000, MinDepth: 1},
		{PendingID: [32]byte{2}, Funding: g.chanB, Capacity: 250_000, Expiry: 2_000, Status: hub.ChannelFrozen,
			Seq: 1, Paid: 1_000_500, MinDepth: 1},
	} {
		c.DeviceID, c.DeviceKey = g.payer.ID, g.payer.Key
		c.HubKey = hub.PubKeyOf(hubKey.PubKey())
		c.CreatedAt = t0.Add(time.Duration(i) * time.Hour)
		c.UpdatedAt = c.CreatedAt.Add(time.Minute)
		if err := store.PutChannel(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	for i, h := range []hub.Hold{
		{ID: [16]byte{0xd1}, Max: 5_000_000, Status: hub.HoldActive, Memo: "charging session"},
		{ID: [16]byte{0xd2}, Max: 800_000, Status: hub.HoldReleased},
	} {
		h.Channel, h.DeviceID, h.Provider = g.chanA, g.payer.ID, g.prov.ID
		h.CreatedAt = t0.Add(time.Duration(i+1) * time.Minute)
		h.Expires = h.CreatedAt.Add(2 * time.Hour)
		if err := store.PutHold(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := credfile.New(credfile.Config{Path: filepath.Join(dir, "creds.json")})
	if err != nil {
		t.Fatal(err)
	}
	g.settlementFak = newFakeSettlement(t, 3)
	cs, err := httpapi.JoinContracts(httpapi.ContractsConfig{Store: store, Auditor: reg, Incomes: storeIncomes{store}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{
		Registry: reg, Token: testToken, Settlement: g.settlementFak, Creds: creds, Channels: chans, Clock: clk, Contracts: cs,
		Info: func() httpapi.Info { return httpapi.Info{Network: "regtest"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	g.conn = []string{"--admin", strings.TrimPrefix(srv.URL, "http://"), "--token", testToken}
	return g
}

// credIDs matches the random parts of credentials (ids and tokens) and,
// to leave them alone, device ids, which derive from fixed keys.
var credIDs = regexp.MustCompile(`m2m_[0-9a-f]{64}|(?:dev-)?\b[0-9a-f]{16}\b`)

// tokenHash is the stored hash of a random token.
var tokenHash = regexp.MustCompile(`"sha256": "[0-9a-f]{64}"`)

// normalise replaces credential ids and tokens by placeholders of the
// same width, numbered by first appearance, so the golden files stay
// fixed and their tables stay aligned.
func normalise(s string) string {
	s = tokenHash.ReplaceAllString(s, `"sha256": "<sha256 of the token>"`)
	seen := map[string]string{}
	return credIDs.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "dev-") {
			return m
		}
		if r, ok := seen[m]; ok {
			return r
		}
		r := "<cred-" + strconv.Itoa(len(seen)+1) + ">"
		if strings.HasPrefix(m, "m2m_") {
			r = "m2m_<token-" + strconv.Itoa(len(seen)+1) + ">"
		}
		r += strings.Repeat(".", len(m)-len(r))
		seen[m] = r
		return r
	})
}

// golden compares "exit N" and stdout with testdata/golden/name.txt, or
// rewrites it under -update.
func golden(t *testing.T, name string, code int, out string) {
	t.Helper()
	got := "exit " + strconv.Itoa(code) + "\n" + normalise(out)
	path := filepath.Join("testdata", "golden", name+".txt")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

// TestGolden runs the main hubctl commands, tables and --json, against
// the admin API over a real registry, store and channel manager, and
// compares their output and exit codes with testdata/golden.
func TestGolden(t *testing.T) {
	g := newGoldenHub(t)
	step := func(name string, args ...string) string {
		t.Helper()
		code, out, errOut := runCtl(t, append(append([]string(nil), g.conn...), args...)...)
		if code != exitOK && !strings.HasPrefix(name, "exit-") {
			t.Fatalf("%s: exit %d: %s", name, code, errOut)
		}
		golden(t, name, code, out)
		return out
	}
	// Reads, in an order that leaves the audit log fixed before any
	// credential (with its random id) is made.
	step("device-list", "device", "list")
	step("device-list.json", "--json", "device", "list")
	step("provider-list", "provider", "list")
	step("audit-list", "audit", "list")
	step("channels-list", "channels", "list")
	step("channels-list.json", "--json", "channels", "list")
	step("channels-list-device", "channels", "list", "--device", g.payer.ID)
	step("channels-show", "channels", "show", g.chanA.String())
	step("channels-show.json", "--json", "channels", "show", g.chanA.String())
	step("channels-exposure", "channels", "exposure")
	step("channels-exposure.json", "--json", "channels", "exposure")
	step("channels-expiring", "channels", "expiring", "--within", "144")
	step("channels-expiring.json", "--json", "channels", "expiring", "--within", "144")
	step("holds-list", "holds", "list")
	step("holds-list.json", "--json", "holds", "list", "--device", g.payer.ID)
	step("settle-plan", "settle", "plan")
	step("settle-status", "settle", "status")
	step("epochs", "epochs")
	step("epochs.json", "--json", "epochs")

	// Credentials: create, list, use, revoke.
	out := step("creds-create-read-only", "creds", "create", "--scope", "read-only", "--label", "dashboard")
	roTok := credIDs.FindString(out[strings.Index(out, "m2m_"):])
	step("creds-create-provider.json", "--json", "creds", "create", "--scope", "provider", "--device", g.prov.ID)
	out = step("creds-list", "creds", "list")
	roID := strings.Fields(strings.Split(out, "\n")[1])[0]
	step("creds-revoke.json", "--json", "creds", "revoke", roID)

	// Exit codes scripts rely on.
	step("exit-not-found", "channels", "show", strings.Repeat("0", 64)+":0")
	step("exit-invalid", "channels", "show", "00:0")
	step("exit-usage", "creds", "create", "--scope", "provider")
	step("exit-conflict", "creds", "revoke", roID)
	code, _, _ := runCtl(t, "--admin", g.conn[1], "--token", "m2m_wrong", "channels", "list")
	golden(t, "exit-unauthorized", code, "")
	code, _, _ = runCtl(t, "--admin", g.conn[1], "--token", roTok, "channels", "list")
	golden(t, "exit-revoked", code, "")

	// A live read-only credential reads but may not change anything.
	var roTok2 string
	{
		_, out, _ := runCtl(t, append(append([]string(nil), g.conn...), "--json", "creds", "create", "--scope", "read-only")...)
		roTok2 = credIDs.FindString(out[strings.Index(out, "m2m_"):])
	}
	code, out, _ = runCtl(t, "--admin", g.conn[1], "--token", roTok2, "channels", "exposure")
	golden(t, "read-only-exposure", code, out)
	code, _, _ = runCtl(t, "--admin", g.conn[1], "--token", roTok2, "creds", "list")
	golden(t, "exit-forbidden", code, "")

}
