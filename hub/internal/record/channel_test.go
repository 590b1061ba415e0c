package record_test

import (
	"encoding/json"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
	"github.com/m2mhub/m2mhub/hub/storetest"
)

// storedChannel is a channel record as a store writes its JSON.
func storedChannel(t testing.TB) (hub.ChannelRecord, []byte) {
	c := storetest.NewChannel(t, "dev-1")
	for i := range c.DeviceSig {
		c.DeviceSig[i] = byte(i * 7)
	}
	c.Seq, c.Paid, c.Owed = 4, 5_000, 6
	doc, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return c, doc
}

// TestDecodeChannel: DecodeChannel reads what json.Unmarshal reads from a
// stored record.
func TestDecodeChannel(t *testing.T) {
	want, doc := storedChannel(t)
	var got hub.ChannelRecord
	if err := record.DecodeChannel(doc, &got); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(got)
	if string(a) != string(doc) {
		t.Fatalf("decoded\n%s\nwant\n%s", a, doc)
	}
	if got.DeviceKey != want.DeviceKey || got.PendingID != want.PendingID || got.DeviceSig != want.DeviceSig {
		t.Fatal("keys, pending id or signature differ")
	}
}

// FuzzDecodeChannel: whenever json.Unmarshal reads a document (its keys
// checked on the curve), DecodeChannel reads the same record, and it
// never reads a document into something json.Unmarshal would refuse for
// another reason than the curve check.
func FuzzDecodeChannel(f *testing.F) {
	_, doc := storedChannel(f)
	f.Add(doc)
	f.Add([]byte(`{"pending_id":[1,2,3],"device_sig":null}`))
	f.Add([]byte(`{"pending_id":[],"device_key":"02"}`))
	f.Add([]byte(`{"pending_id":[256]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		var want, got hub.ChannelRecord
		werr := json.Unmarshal(doc, &want)
		gerr := record.DecodeChannel(doc, &got)
		if werr == nil {
			if gerr != nil {
				t.Fatalf("json reads %q, DecodeChannel: %v", doc, gerr)
			}
			a, _ := json.Marshal(want)
			b, _ := json.Marshal(got)
			if string(a) != string(b) {
				t.Fatalf("%q: json reads\n%s\nDecodeChannel\n%s", doc, a, b)
			}
		}
	})
}
