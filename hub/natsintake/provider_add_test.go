package natsintake_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestProviderAddEndToEnd enrols a provider through the admin API, connects
// with the seed it returned, publishes usage and sees it charged; posting
// the same key again replaces the credentials and locks the old seed out.
func TestProviderAddEndToEnd(t *testing.T) {
	e := newEnv(t, false)
	api, err := httpapi.New(httpapi.Config{
		Registry: e.reg, Token: strings.Repeat("t", 32), Providers: e.issuer,
		Info: func() httpapi.Info { return httpapi.Info{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(api)
	defer ts.Close()
	cl := httpapi.NewClient(strings.TrimPrefix(ts.URL, "http://"), strings.Repeat("t", 32))
	ctx := context.Background()

	key, _ := btcec.NewPrivateKey()
	p, err := cl.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(key.PubKey()), Kind: "toll"})
	if err != nil {
		t.Fatal(err)
	}
	if p.NATS == nil || p.NATS.Seed == "" || p.NATS.UsageSubject != metering.UsageSubject(p.Device.ID) {
		t.Fatalf("answer %+v", p)
	}
	seed := filepath.Join(t.TempDir(), "p.nkey")
	if err := os.WriteFile(seed, []byte(p.NATS.Seed), 0o600); err != nil {
		t.Fatal(err)
	}
	prov := provider{dev: p.Device, key: key, seed: seed}
	c := newCharger()
	in := e.intake(e.nc, c, nil)
	js, err := jetstream.New(e.connect(prov, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(js, p.NATS.UsageSubject, e.event(prov, "via-api"))
	waitFor(t, "charged", func() bool { return in.Stats().Charged == 1 })

	list, err := cl.Providers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].NATS == nil || list[0].NATS.User != p.NATS.User || list[0].NATS.Seed != "" {
		t.Fatalf("list %+v", list)
	}

	again, err := cl.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(key.PubKey())})
	if err != nil {
		t.Fatal(err)
	}
	if again.Device.ID != p.Device.ID || again.NATS.User == p.NATS.User {
		t.Fatalf("re-issue %+v", again)
	}
	opt, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(e.srv.ClientURL(), opt, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("the replaced seed still connects")
	}
	audit, err := e.reg.Audit(ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, a := range audit {
		if a.Subject == p.Device.ID && strings.Contains(string(a.Detail), "nats-credentials-issued") {
			issued++
		}
	}
	if issued != 2 {
		t.Fatalf("%d audited issues, want 2", issued)
	}
}
