package deptest_test

import (
	"testing"

	"github.com/m2mhub/m2mhub/internal/deptest"
)

const mod = "github.com/m2mhub/m2mhub"

// pure is what the domain and the hub core link none of: no
// infrastructure, no RPC client or wallet by any path, and of lnd only the
// small standalone modules: tlv (internal/wire's record codec, with its fn
// helpers) and clock. lnd's lnwire and brontide import its keychain, which
// imports btcwallet and with it btcd's rpcclient, so only the transport
// adapter (internal/p2plisten) and the client's dialer link them; the core
// speaks the device protocol through internal/wire's own codec
// (docs/architecture.md, "Why the core links no lnd").
var pure = []deptest.Rule{
	{Deny: "github.com/nats-io"},
	{Deny: "github.com/redis/go-redis"},
	{Deny: "go.etcd.io/bbolt"},
	{Deny: "github.com/btcsuite/btcd/rpcclient"},
	{Deny: "github.com/btcsuite/btcwallet"},
	{Deny: "github.com/lightningnetwork/lnd", Allow: []string{
		"github.com/lightningnetwork/lnd/tlv",
		"github.com/lightningnetwork/lnd/fn",
		"github.com/lightningnetwork/lnd/clock",
	}},
}

// TestLayers checks the transitive dependencies of the layers
// docs/architecture.md draws: domain packages link no infrastructure and no
// hub, hub services link no adapter and none of lnd but its small modules
// (the ones that speak the device protocol do so through internal/wire, not
// through lnd's lnwire and brontide), and the client library links no server
// code.
func TestLayers(t *testing.T) {
	g := deptest.LoadGraph(t, mod+"/...")

	domain := []string{"msat", "channel", "contracts", "metering", "settlement"}
	// core is the hub's service; wire are the core packages that speak the
	// device protocol (sessions, the channel manager's messages, the
	// cosigners' rounds), with internal/wire's codec.
	core := []string{"hub", "hub/internal/record", "hub/registry", "hub/charging", "hub/settler"}
	wire := []string{"hub/session", "hub/channels", "hub/cosign"}
	adapters := []string{
		"internal/p2plisten", "hub/boltstore", "hub/redisstore", "hub/redisshared", "hub/natsintake", "hub/natsroute", "hub/httpapi", "hub/webhook", "hub/metrics",
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
			g.Deny(t, mod+"/"+p, adapterRules(pure)...)
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
// it, that an exception stops the walk, and that an allowed package below
// the denied one is not reported.
func TestDenyFindsPath(t *testing.T) {
	g := deptest.Graph{
		"a": {"b", "x"},
		"b": {"c/d"},
		"x": {"c/e"},
	}
	for _, tc := range []struct {
		rule deptest.Rule
		want string // the one error, or "" for none
	}{
		{deptest.Rule{Deny: "c"}, "a links c: a → b → c/d"},
		{deptest.Rule{Deny: "c", Except: []string{"b", "x"}}, ""},
		{deptest.Rule{Deny: "c", Except: []string{"b"}}, "a links c: a → x → c/e"},
		{deptest.Rule{Deny: "c", Allow: []string{"c/d"}}, "a links c: a → x → c/e"},
		{deptest.Rule{Deny: "c", Allow: []string{"c/d", "c/e"}}, ""},
	} {
		var ft fakeT
		g.Deny(&ft, "a", tc.rule)
		if tc.want == "" && len(ft.errs) != 0 || tc.want != "" && (len(ft.errs) != 1 || ft.errs[0] != tc.want) {
			t.Errorf("%+v: errors = %q, want %q", tc.rule, ft.errs, tc.want)
		}
	}
}
