package m2mclient

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
)

func mustKey(tb testing.TB, seed byte) *btcec.PrivateKey {
	tb.Helper()
	var b [32]byte
	b[31] = seed
	b[0] = 1
	k, _ := btcec.PrivKeyFromBytes(b[:])
	return k
}

func sampleState(tb testing.TB) ChannelState {
	tb.Helper()
	close := chainhash.Hash{9}
	hold := [16]byte{7}
	req := uint64(42)
	return ChannelState{
		PendingID: [32]byte{1, 2, 3},
		HubKey:    mustKey(tb, 2).PubKey(),
		Capacity:  100_000, Expiry: 1234, MinDepth: 1,
		Funding: wire.OutPoint{Hash: chainhash.Hash{5}, Index: 1},
		Status:  StatusReady, Seq: 3, Paid: 12_345, Sig: [64]byte{8},
		Pending: &PendingPayment{Seq: 4, Paid: 13_000, Amount: 655, Payee: "prov", Memo: "m", HoldID: &hold, ReqID: &req, Sig: [64]byte{6}},
		Holds:   []AuthorizedHold{{ID: hold, Provider: "prov", Max: 5000, Captured: 10, Expires: time.Unix(1_700_000_000, 0).UTC()}},
		CloseTx: &close, CloseSig: &[32]byte{4}, CloseRaw: []byte{2, 0, 0, 0},
	}
}

func TestFileStoreSaveLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleState(t)
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	// A second store over the same directory is a restart.
	s2, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("loaded %d channels", len(got))
	}
	got[0].Holds[0].Expires = got[0].Holds[0].Expires.UTC()
	if !got[0].HubKey.IsEqual(want.HubKey) {
		t.Fatal("hub key changed")
	}
	got[0].HubKey, want.HubKey = nil, nil
	if !reflect.DeepEqual(got[0], want) {
		t.Fatalf("reload:\n got %+v\nwant %+v", got[0], want)
	}

	// Replace: still one file, new content.
	want.HubKey = mustKey(t, 2).PubKey()
	want.Seq, want.Pending = 4, nil
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(ctx)
	if err != nil || len(got) != 1 || got[0].Seq != 4 || got[0].Pending != nil {
		t.Fatalf("after replace: %v %+v", err, got)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestFileStoreIgnoresInterruptedSave(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := NewFileStore(dir)
	st := sampleState(t)
	if err := s.Save(ctx, st); err != nil {
		t.Fatal(err)
	}
	// What a crash between CreateTemp and rename leaves: a torn temp file.
	if err := os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte(`{"pending_id":"01`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx)
	if err != nil || len(got) != 1 || got[0].Seq != st.Seq {
		t.Fatalf("load with leftover temp file: %v %+v", err, got)
	}
}

func TestFileStoreCorruptRecordIsAnError(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewFileStore(dir)
	if err := os.WriteFile(filepath.Join(dir, "00.json"), []byte(`{"pending_id":"zz"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background()); err == nil {
		t.Fatal("corrupt record loaded silently")
	}
}

func signedReceipt(tb testing.TB, seq uint64) *channel.Receipt {
	tb.Helper()
	hub := mustKey(tb, 3)
	r := &channel.Receipt{
		Channel: wire.OutPoint{Hash: chainhash.Hash{5}, Index: 1}, Seq: seq,
		Payer: "dev-1", Payee: "prov", Amount: 100, Paid: msat.Amount(100 * seq),
		Memo: "kWh", Time: time.UnixMilli(1_700_000_000_000 + int64(seq)),
		HubKey: [33]byte(hub.PubKey().SerializeCompressed()),
	}
	if err := r.Sign(hub); err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestFileStoreReceipts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := NewFileStore(dir)
	id := wire.OutPoint{Hash: chainhash.Hash{5}, Index: 1}
	if rs, err := s.Receipts(ctx, id); err != nil || len(rs) != 0 {
		t.Fatalf("empty history: %v %v", rs, err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if err := s.AppendReceipt(ctx, id, signedReceipt(t, seq)); err != nil {
			t.Fatal(err)
		}
	}
	// A crash in the middle of an append leaves a line without newline.
	f, err := os.OpenFile(s.receiptsPath(id), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("01ab")
	f.Close()

	rs, err := s.Receipts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("got %d receipts, want 3", len(rs))
	}
	for i, r := range rs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("receipt %d has seq %d", i, r.Seq)
		}
		if err := r.Verify(); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
	}

	// Damage in the middle is reported, not skipped.
	b, _ := os.ReadFile(s.receiptsPath(id))
	b[3] = 'x'
	os.WriteFile(s.receiptsPath(id), b, 0o600)
	if _, err := s.Receipts(ctx, id); err == nil {
		t.Fatal("damaged history read silently")
	}
}

func TestFileStoreCanceledContext(t *testing.T) {
	s, _ := NewFileStore(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Save(ctx, sampleState(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save with canceled ctx: %v", err)
	}
}

// TestFileStoreSaveDeferred: a deferred save is read back before its fsync
// (by this store and by a new one on the same directory, as after a killed
// process), and the first record of a channel and a new journal are made
// durable at once (nothing left to sync).
func TestFileStoreSaveDeferred(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fs1, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := sampleState(t)
	for i, want := range []uint64{1, 2, 3} {
		st.Seq = want
		done, err := fs1.SaveDeferred(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*FileStore{fs1, mustFileStore(t, dir)} {
			got, err := s.Load(ctx)
			if err != nil || len(got) != 1 || got[0].Seq != want {
				t.Fatalf("save %d: loaded %+v, %v", i, got, err)
			}
		}
		if err := done(i%2 == 0); err != nil {
			t.Fatalf("save %d: done: %v", i, err)
		}
	}
}

func mustFileStore(t *testing.T, dir string) *FileStore {
	t.Helper()
	s, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFileStoreFailedAppendCutsTornTail: a journal append that fails (here
// the kept file refuses writes) leaves the store to read the journal again
// on the next save, cutting off what a torn write left at its end, so the
// records after the failure are found on load. Appending them behind the
// torn bytes would hide them: a journal is read up to its first bad record.
func TestFileStoreFailedAppendCutsTornTail(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := mustFileStore(t, dir)
	st := sampleState(t)
	for _, seq := range []uint64{1, 2} { // base record, then the journal
		st.Seq = seq
		if err := s.Save(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	pid := toFile(st).PendingID
	j := s.journals[pid]
	if j == nil || j.f == nil {
		t.Fatal("the journal is not kept open after an append")
	}
	// A torn write's leftovers, then a file that refuses the next write.
	torn, err := os.OpenFile(s.journalPath(pid), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := torn.WriteString("0badc0de {\"state\":"); err != nil {
		t.Fatal(err)
	}
	_ = torn.Close()
	_ = j.f.Close()
	if j.f, err = os.Open(s.journalPath(pid)); err != nil {
		t.Fatal(err)
	}
	st.Seq = 3
	if err := s.Save(ctx, st); err == nil {
		t.Fatal("save through a file refusing writes succeeded")
	}
	st.Seq = 4
	if err := s.Save(ctx, st); err != nil {
		t.Fatalf("save after the failed one: %v", err)
	}
	got, err := mustFileStore(t, dir).Load(ctx)
	if err != nil || len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("loaded %+v, %v; want seq 4", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st.Seq = 5
	if err := s.Save(ctx, st); err != nil {
		t.Fatalf("save after Close: %v", err)
	}
	if got, err := mustFileStore(t, dir).Load(ctx); err != nil || got[0].Seq != 5 {
		t.Fatalf("loaded %+v, %v after Close; want seq 5", got, err)
	}
}
