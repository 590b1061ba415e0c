package deptest_test

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

const mod = "github.com/m2mhub/m2mhub"

// lnd is the one dependency allowed to reach an RPC client and wallet, and
// only for the packages that speak the device protocol (wire): lnwire, the
// wire codec of internal/wire, and brontide, the BOLT 8 transport, import
// lnd's keychain, which imports btcwallet and with it btcd's rpcclient.
// Nothing of ours may reach them another way.
var lnd = []string{"github.com/lightningnetwork/lnd"}

// lnwire is the wire codec. Money is msat.Amount, so only the packages in
// wire need it (docs/architecture.md, "Why only the wire links lnd").
const lnwire = "github.com/lightningnetwork/lnd/lnwire"

// infrastructure is what no domain package and no hub service links.
var infrastructure = []deptest.Rule{
	{Deny: "github.com/nats-io"},
	{Deny: "github.com/redis/go-redis"},
	{Deny: "go.etcd.io/bbolt"},
	{Deny: "github.com/btcsuite/btcd/rpcclient", Except: lnd},
	{Deny: "github.com/btcsuite/btcwallet", Except: lnd},
}

// pure is what the domain and the protocol-free hub core link none of: no
// infrastructure, no lnwire, and no RPC client or wallet by any path.
var pure = []deptest.Rule{
	{Deny: "github.com/nats-io"},
	{Deny: "github.com/redis/go-redis"},
	{Deny: "go.etcd.io/bbolt"},
	{Deny: "github.com/btcsuite/btcd/rpcclient"},
	{Deny: "github.com/btcsuite/btcwallet"},
	{Deny: lnwire},
	{Deny: "github.com/lightningnetwork/lnd/brontide"},
	{Deny: "github.com/lightningnetwork/lnd/keychain"},
}

// TestLayers checks the transitive dependencies of the layers
// docs/architecture.md draws: domain packages link no infrastructure and no
// hub, hub services link no adapter, only the packages that speak the
// device protocol link lnd's wire codec, and the client library links no
// server code.
func TestLayers(t *testing.T) {
	g := deptest.LoadGraph(t, mod+"/...")

	domain := []string{"msat", "channel", "contracts", "metering", "settlement"}
	// core is the hub's service; wire are the core packages that speak the
	// device protocol (sessions, the channel manager's messages, the
	// cosigners' rounds) and so link lnwire and brontide.
	core := []string{"hub", "hub/internal/record", "hub/registry", "hub/charging", "hub/settler"}
	wire := []string{"hub/session", "hub/channels", "hub/cosign"}
	adapters := []string{
		"hub/boltstore", "hub/redisstore", "hub/redisshared", "hub/natsintake", "hub/natsroute", "hub/httpapi", "hub/webhook", "hub/metrics",
		"settlement/btcdchain", "internal/natsembed", "internal/natsjwt", "internal/redisconn",
	}
	adapterRules := func(base []deptest.Rule) []deptest.Rule {
		rules := append([]deptest.Rule(nil), base...)
		for _, a := range adapters {
			rules = append(rules, deptest.Rule{Deny: mod + "/" + a})
		}
		return rules
	}

	t.Run("domain", func(t *testing.T) {
		for _, p := range domain {
			g.Deny(t, mod+"/"+p, append(pure, deptest.Rule{Deny: mod + "/hub"})...)
		}
	})
	t.Run("core", func(t *testing.T) {
		for _, p := range core {
			g.Deny(t, mod+"/"+p, adapterRules(append(pure, deptest.Rule{Deny: mod + "/internal/wire"}))...)
		}
	})
	t.Run("wire", func(t *testing.T) {
		for _, p := range wire {
			g.Deny(t, mod+"/"+p, adapterRules(infrastructure)...)
		}
	})
	t.Run("client", func(t *testing.T) {
		g.Deny(t, mod+"/clients/go",
			deptest.Rule{Deny: mod + "/hub"},
			deptest.Rule{Deny: mod + "/cmd"},
			deptest.Rule{Deny: mod + "/internal/natsembed"},
			deptest.Rule{Deny: mod + "/settlement/btcdchain"},
			deptest.Rule{Deny: "go.etcd.io/bbolt"},
			deptest.Rule{Deny: "github.com/redis/go-redis"},
		)
	})
}

// TestDenyFindsPath checks that a denied package is found, with the path to
// it, and that an exception stops the walk.
func TestDenyFindsPath(t *testing.T) {
	g := deptest.Graph{
		"a": {"b", "x"},
		"b": {"c/d"},
		"x": {"c/e"},
	}
	var ft fakeT
	g.Deny(&ft, "a", deptest.Rule{Deny: "c"})
	if len(ft.errs) != 1 || ft.errs[0] != "a links c: a → b → c/d" {
		t.Fatalf("errors = %q", ft.errs)
	}
	ft = fakeT{}
	g.Deny(&ft, "a", deptest.Rule{Deny: "c", Except: []string{"b", "x"}})
	if len(ft.errs) != 0 {
		t.Fatalf("excepted paths reported: %q", ft.errs)
	}
	ft = fakeT{}
	g.Deny(&ft, "a", deptest.Rule{Deny: "c", Except: []string{"b"}})
	if len(ft.errs) != 1 || ft.errs[0] != "a links c: a → x → c/e" {
		t.Fatalf("errors = %q", ft.errs)
	}
}
