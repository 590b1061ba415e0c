package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// TestCDRs lists and reads CDRs through the API (every answer checked
// against docs/openapi.yaml): all of them for the operator, its own for a
// provider, 403 for another's, 404 for none.
func TestCDRs(t *testing.T) {
	a := newFullAPI(t)
	ctx := context.Background()
	at := time.Date(2026, 6, 10, 21, 5, 0, 0, time.UTC)
	for i, rec := range []hub.CDRRecord{hubtest.ExampleCDR(t, "../..", "CDR1", "cpo-1", at), hubtest.ExampleCDR(t, "../..", "CDR2", "cpo-2", at.Add(time.Minute))} {
		if err := a.store.PutCDR(ctx, rec); err != nil {
			t.Fatalf("CDR %d: %v", i, err)
		}
	}
	if got, err := a.store.CDRs(ctx, ""); len(got) != 2 {
		t.Fatalf("store lists %d CDRs, %v", len(got), err)
	}
	addr := strings.TrimPrefix(a.srv.URL, "http://")
	op := httpapi.NewClient(addr, token)
	all, err := op.CDRs(ctx, "")
	if err != nil || len(all) != 2 || all[0].ID != "CDR2" || all[1].ID != "CDR1" {
		t.Fatalf("operator's CDRs %+v, %v", all, err)
	}
	_, tok := a.addCred(t, httpapi.ProviderScope("cpo-1"))
	cpo := httpapi.NewClient(addr, tok)
	own, err := cpo.CDRs(ctx, "")
	if err != nil || len(own) != 1 || own[0].ID != "CDR1" {
		t.Fatalf("cpo-1's CDRs %+v, %v", own, err)
	}
	rec, err := cpo.CDR(ctx, "CDR1")
	var cdr contracts.CDR
	if err != nil || json.Unmarshal(rec.CDR, &cdr) != nil || cdr.M2MHub.TotalMsat != rec.TotalMsat || rec.TotalMsat == 0 {
		t.Fatalf("CDR1 %+v, %v", rec, err)
	}
	var api *httpapi.APIError
	if _, err := cpo.CDR(ctx, "CDR2"); !errors.As(err, &api) || api.Status != http.StatusForbidden {
		t.Fatalf("another provider's CDR: %v, want 403", err)
	}
	if _, err := cpo.CDRs(ctx, "cpo-2"); !errors.As(err, &api) || api.Status != http.StatusForbidden {
		t.Fatalf("another provider's CDR list: %v, want 403", err)
	}
	if _, err := op.CDR(ctx, "nope"); !errors.As(err, &api) || api.Status != http.StatusNotFound {
		t.Fatalf("unknown CDR: %v, want 404", err)
	}
}
