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
	cs, err := i.st.ChargesByProvider(ctx, provider, from, to)
	return charging.IncomeOf(provider, from, to, cs), err
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
