package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// CDRStoreUnderTest is what the CDR suite needs of a store.
type CDRStoreUnderTest interface {
	hub.CDRStore
	Close() error
}

// RunCDRs runs the CDR store suite against the stores newStore makes, under
// the rules of RunMetering: a later call with the same t reopens the data
// of the earlier, closed store.
func RunCDRs(t *testing.T, newStore func(t *testing.T) CDRStoreUnderTest) {
	t.Run("PutThenRead", func(t *testing.T) {
		s := newStore(t)
		defer s.Close()
		ctx := context.Background()
		base := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)
		recs := []hub.CDRRecord{
			{ID: "CDR1", Provider: "cpo-a", Payer: "car", Session: "s1", Events: []string{"e1"}, TotalMsat: 1_001, Created: base, CDR: json.RawMessage(`{"id":"CDR1"}`)},
			{ID: "CDR2", Provider: "cpo-b", Payer: "car", Session: "s2", Events: []string{"e2"}, TotalMsat: 2_002, Created: base.Add(time.Second), CDR: json.RawMessage(`{"id":"CDR2"}`)},
			{ID: "CDR3", Provider: "cpo-a", Payer: "van", Session: "s3", Events: []string{"e3", "e4"}, TotalMsat: 3_003, Created: base.Add(2 * time.Second), CDR: json.RawMessage(`{"id":"CDR3"}`)},
		}
		for _, r := range recs {
			if err := s.PutCDR(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		// Write-once: the same id again changes nothing.
		again := recs[0]
		again.TotalMsat = 9
		if err := s.PutCDR(ctx, again); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = newStore(t)
		defer s.Close()
		got, err := s.CDR(ctx, "CDR1")
		if err != nil || got.TotalMsat != 1_001 || got.Provider != "cpo-a" || string(got.CDR) != `{"id":"CDR1"}` || !got.Created.Equal(base) {
			t.Fatalf("CDR1 = %+v, %v", got, err)
		}
		all, err := s.CDRs(ctx, "")
		if err != nil || len(all) != 3 || all[0].ID != "CDR3" || all[2].ID != "CDR1" {
			t.Fatalf("all CDRs %+v, %v: want newest first", all, err)
		}
		a, err := s.CDRs(ctx, "cpo-a")
		if err != nil || len(a) != 2 || a[0].ID != "CDR3" || a[1].ID != "CDR1" || len(a[0].Events) != 2 {
			t.Fatalf("cpo-a CDRs %+v, %v", a, err)
		}
		if none, err := s.CDRs(ctx, "nobody"); err != nil || len(none) != 0 {
			t.Fatalf("nobody's CDRs %+v, %v", none, err)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		s := newStore(t)
		defer s.Close()
		if _, err := s.CDR(context.Background(), "nope"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("err %v, want ErrNotFound", err)
		}
		if all, err := s.CDRs(context.Background(), ""); err != nil || len(all) != 0 {
			t.Fatalf("empty store lists %+v, %v", all, err)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		s := newStore(t)
		defer s.Close()
		for _, r := range []hub.CDRRecord{
			{Provider: "p", CDR: json.RawMessage(`{}`)},
			{ID: "x", CDR: json.RawMessage(`{}`)},
			{ID: "x", Provider: "p", CDR: json.RawMessage(`{`)},
		} {
			if err := s.PutCDR(context.Background(), r); !errors.Is(err, hub.ErrInvalid) {
				t.Fatalf("PutCDR(%+v) = %v, want ErrInvalid", r, err)
			}
		}
	})
}
