package m2mclient

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
)

// FuzzJournal feeds arbitrary bytes to the FileStore's journal parser (what
// a device reads back after a crash): it must never panic, must keep a
// prefix of whole lines, that prefix must parse again to the same records,
// and every record it keeps must survive re-encoding unchanged.
func FuzzJournal(f *testing.F) {
	var journal []byte
	for seq := uint64(1); seq <= 2; seq++ {
		line, err := encodeJournalLine(journalRecord{State: toFile(ChannelState{
			PendingID: [32]byte{1, 2, 3}, Seq: seq, Paid: msat.Amount(1000 * seq), Status: StatusReady,
		})})
		if err != nil {
			f.Fatal(err)
		}
		journal = append(journal, line...)
	}
	f.Add(journal)
	f.Add(journal[:len(journal)-3])
	f.Add([]byte("00000000 {}\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, good, err := parseJournal(b)
		if err != nil {
			return // a line with a valid checksum and bad JSON: refused whole
		}
		if good < 0 || good > int64(len(b)) || (good > 0 && b[good-1] != '\n') {
			t.Fatalf("valid prefix of %d bytes ends inside a line (%d bytes)", good, len(b))
		}
		again, good2, err := parseJournal(b[:good])
		if err != nil || good2 != good || len(again) != len(recs) {
			t.Fatalf("prefix parses to %d records of %d bytes (%v), want %d of %d", len(again), good2, err, len(recs), good)
		}
		for _, rec := range recs {
			line, err := encodeJournalLine(rec)
			if err != nil {
				t.Fatal(err)
			}
			back, n, err := parseJournal(line)
			if err != nil || n != int64(len(line)) || len(back) != 1 {
				t.Fatalf("re-encoded record %s does not parse (%v)", bytes.TrimSpace(line), err)
			}
			if !reflect.DeepEqual(back[0], rec) {
				t.Fatalf("record changed in a round trip: %+v -> %+v", rec, back[0])
			}
			_, _ = fromFile(rec.State) // may refuse, must not panic
		}
	})
}
