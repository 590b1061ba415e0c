package redisstore_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/storetest"
	"github.com/m2mhub/m2mhub/internal/redistest"
)

// TestChannelsListedInChunks: a listing longer than one read pipeline
// (the store reads 2,000 channels a pipeline, several at once) returns
// every channel once, in pending id order, each with its own record.
func TestChannelsListedInChunks(t *testing.T) {
	const n = 4_500 // two full pipelines and a partial one
	srv := redistest.Start(t)
	s := mustOpen(t, srv.URL(), "")
	defer s.Close()
	ctx := context.Background()
	want := make(map[[32]byte]hub.ChannelRecord, n)
	recs := make([]hub.ChannelRecord, n)
	for i := range recs {
		recs[i] = storetest.NewChannel(t, "dev")
		recs[i].Expiry = uint32(i + 1)
		want[recs[i].PendingID] = recs[i]
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if err := s.PutChannel(ctx, recs[i]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got, err := s.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d channels listed, stored %d", len(got), n)
	}
	if !slices.IsSortedFunc(got, func(a, b hub.ChannelRecord) int { return slices.Compare(a.PendingID[:], b.PendingID[:]) }) {
		t.Fatal("listing not in pending id order")
	}
	for _, c := range got {
		w, ok := want[c.PendingID]
		if !ok {
			t.Fatalf("channel %x listed twice or never stored", c.PendingID)
		}
		delete(want, c.PendingID)
		if c.Expiry != w.Expiry || c.Funding != w.Funding || c.DeviceKey != w.DeviceKey {
			t.Fatalf("channel %x listed with another channel's record", c.PendingID)
		}
	}
}
