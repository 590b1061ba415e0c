package m2mclient

import (
	"context"
	"os"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
)

func TestFileStoreJournalCompactsAndKeepsReceipts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := NewFileStore(dir)
	st := sampleState(t)
	st.Funding = signedReceipt(t, 1).Channel
	st.Pending = nil
	st.Seq = 0
	if err := s.Save(ctx, st); err != nil {
		t.Fatal(err)
	}
	const n = 700 // several compactions
	for seq := uint64(1); seq <= n; seq++ {
		st.Pending = &PendingPayment{Seq: seq, Paid: msat.Amount(100 * seq)}
		if err := s.Save(ctx, st); err != nil {
			t.Fatal(err)
		}
		st.Pending, st.Seq, st.Paid = nil, seq, msat.Amount(100*seq)
		if err := s.SaveWithReceipt(ctx, st, signedReceipt(t, seq)); err != nil {
			t.Fatal(err)
		}
	}
	s2, _ := NewFileStore(dir)
	got, err := s2.Load(ctx)
	if err != nil || len(got) != 1 || got[0].Seq != n || got[0].Pending != nil {
		t.Fatalf("load: %v %+v", err, got)
	}
	rs, err := s2.Receipts(ctx, st.Funding)
	if err != nil || len(rs) != n {
		t.Fatalf("receipts: %v, %d of %d", err, len(rs), n)
	}
	for i, r := range rs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("receipt %d has seq %d", i, r.Seq)
		}
	}
	if fi, err := os.Stat(s.journalPath(hexID(st))); err != nil || fi.Size() >= journalCompactSize {
		t.Fatalf("journal not compacted: %v %v", fi, err)
	}

	// A torn append: the last whole record wins, and the next save
	// follows it rather than the garbage.
	f, _ := os.OpenFile(s.journalPath(hexID(st)), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("0badc0de {\"state\":{\n")
	f.Close()
	s3, _ := NewFileStore(dir)
	got, err = s3.Load(ctx)
	if err != nil || got[0].Seq != n {
		t.Fatalf("load after torn append: %v %+v", err, got)
	}
	st.Seq = n + 1
	if err := s3.Save(ctx, st); err != nil {
		t.Fatal(err)
	}
	s4, _ := NewFileStore(dir)
	got, err = s4.Load(ctx)
	if err != nil || got[0].Seq != n+1 {
		t.Fatalf("load after save past a torn append: %v %+v", err, got)
	}
}

func hexID(c ChannelState) string { return toFile(c).PendingID }
