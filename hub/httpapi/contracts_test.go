package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
)

// incomesOf sums the store's charges as charging does.
type incomesOf struct{ st *boltstore.Store }

func (i incomesOf) Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error) {
	return charging.ReadIncome(ctx, i.st, provider, from, to)
}

func newContractAPI(t *testing.T) (*httpapi.Client, *registry.Registry, *boltstore.Store) {
	t.Helper()
	store, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := httpapi.JoinContracts(httpapi.ContractsConfig{Store: store, Auditor: reg, Incomes: incomesOf{store}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{
		Registry: reg, Token: token, Contracts: cs,
		Info: testInfo,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, h))
	t.Cleanup(srv.Close)
	return httpapi.NewClient(strings.TrimPrefix(srv.URL, "http://"), token), reg, store
}

func TestContracts(t *testing.T) {
	cl, reg, store := newContractAPI(t)
	ctx := context.Background()
	doc, err := os.ReadFile("../../contracts/testdata/examples/toll.json")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := cl.PublishContract(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kind != "toll" || rec.Name != "ring-road-oslo" || rec.Version != 1 {
		t.Fatalf("record %+v", rec)
	}
	again, err := cl.PublishContract(ctx, doc)
	if err != nil || again.Hash != rec.Hash {
		t.Fatalf("republish: %+v %v", again, err)
	}
	got, err := cl.Contract(ctx, rec.Hash)
	if err != nil || string(got.Document) != string(rec.Document) {
		t.Fatalf("get: %v", err)
	}
	list, err := cl.Contracts(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list %d %v", len(list), err)
	}
	// Published once, audited once.
	es, err := reg.Audit(ctx, 1, 10)
	if err != nil || len(es) != 1 || es[0].Kind != registry.AuditContractPublish || es[0].Subject != rec.Hash.String() {
		t.Fatalf("audit %+v %v", es, err)
	}

	var apiErr *httpapi.APIError
	if _, err := cl.PublishContract(ctx, []byte(`{"kind":"toll"}`)); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("bad document: %v", err)
	}
	if _, err := cl.Contract(ctx, hub.Hash{1}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("unknown hash: %v", err)
	}

	now := time.Now().UTC()
	_, err = store.RecordCharges(ctx, []hub.Charge{
		{Provider: "gantry", EventID: "a", Payer: "tag", Contract: rec.Hash, Amount: 60_000, Fee: 300, Status: hub.ChargePaid, EventTime: now, Charged: now},
		{Provider: "gantry", EventID: "b", Payer: "tag", Contract: rec.Hash, Amount: 40_000, Fee: 200, Status: hub.ChargeUnpaid, EventTime: now, Charged: now},
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	in, err := cl.Income(ctx, "gantry", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if in.Events != 2 || in.Earned != msat.Amount(59_700) || in.Fees != 300 || in.Unpaid != 40_000 {
		t.Fatalf("income %+v", in)
	}
}

// TestPublishSplitPayees: a contract whose revenue splits pay anyone but
// an enrolled, unrevoked provider is refused with 400 and not stored;
// one that pays enrolled providers is published, and each payee's income
// shows its share of the provider's charges.
func TestPublishSplitPayees(t *testing.T) {
	cl, reg, store := newContractAPI(t)
	ctx := context.Background()
	enrol := func(roles ...hub.Role) string {
		t.Helper()
		d, err := reg.Enrol(ctx, registry.EnrolRequest{Key: newPubKey(t), Roles: roles, Owner: "o", Kind: "k"}, "test")
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	host, emp, payer, gone := enrol(hub.RoleProvider), enrol(hub.RoleProvider), enrol(hub.RolePayer), enrol(hub.RoleProvider)
	if _, err := reg.Revoke(ctx, gone, "test", "left"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../contracts/testdata/examples/toll.json")
	if err != nil {
		t.Fatal(err)
	}
	withSplits := func(payees ...string) []byte {
		var ss []string
		for _, p := range payees {
			ss = append(ss, `{"payee": "`+p+`", "bps": "1000"}`)
		}
		return []byte(strings.Replace(string(b), `"currency":`, `"splits": [`+strings.Join(ss, ",")+`], "currency":`, 1))
	}
	for name, payees := range map[string][]string{
		"Unknown": {host, "nobody"}, "Revoked": {gone}, "NotProvider": {emp, payer},
	} {
		var apiErr *httpapi.APIError
		if _, err := cl.PublishContract(ctx, withSplits(payees...)); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
			t.Fatalf("%s: publish error %v, want 400", name, err)
		}
	}
	if list, err := cl.Contracts(ctx); err != nil || len(list) != 0 {
		t.Fatalf("refused contracts stored: %d, %v", len(list), err)
	}
	rec, err := cl.PublishContract(ctx, withSplits(host, emp))
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UTC()
	_, err = store.RecordCharges(ctx, []hub.Charge{{
		Provider: "gantry", EventID: "a", Payer: "tag", Contract: rec.Hash, Amount: 60_000, Fee: 300,
		Shares: []hub.Share{{Payee: host, Msat: 5_970}, {Payee: emp, Msat: 5_970}},
		Status: hub.ChargePaid, EventTime: now, Charged: now,
	}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sum msat.Amount
	for id, want := range map[string]msat.Amount{"gantry": 59_700 - 2*5_970, host: 5_970, emp: 5_970} {
		in, err := cl.Income(ctx, id, now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if in.Earned != want {
			t.Fatalf("%s earned %d, want %d (%+v)", id, in.Earned, want, in)
		}
		sum += in.Earned + in.Fees
	}
	if sum != 60_000 {
		t.Fatalf("incomes and fee add up to %d, want the 60000 paid", sum)
	}
}

func newPubKey(t *testing.T) hub.PubKey {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return hub.PubKeyOf(k.PubKey())
}
