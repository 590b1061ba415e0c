package boltstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustOpen(tb testing.TB, dir string) *boltstore.Store {
	tb.Helper()
	s, err := boltstore.New(boltstore.Config{Path: dir})
	if err != nil {
		tb.Fatalf("New(%s): %v", dir, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	root := t.TempDir()
	storetest.Run(t, func(t *testing.T) hub.Store {
		// One directory per subtest name, so a second call from the same
		// subtest reopens the same file.
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}

func TestReopenAfterCloseKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	d := storetest.NewDevice(t)
	e := storetest.MustApply(t, s, "tok", d)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir)
	defer s.Close()
	got, err := s.DeviceByKey(context.Background(), d.Key)
	if err != nil {
		t.Fatalf("DeviceByKey after reopen: %v", err)
	}
	if got.ID != d.ID {
		t.Fatalf("DeviceByKey after reopen = %s, want %s", got.ID, d.ID)
	}
	if h := storetest.MustHead(t, s); h.Hash != e.Hash {
		t.Fatalf("head after reopen = %d/%s, want %d/%s", h.Seq, h.Hash, e.Seq, e.Hash)
	}
}

func TestErrLockedWhileOpen(t *testing.T) {
	// flock locks belong to the open file description, so a second open in
	// the same process conflicts just as another hubd process would.
	dir := t.TempDir()
	s := mustOpen(t, dir)
	defer s.Close()
	_, err := boltstore.New(boltstore.Config{Path: dir, OpenTimeout: 200_000_000})
	if !errors.Is(err, boltstore.ErrLocked) {
		t.Fatalf("second New error = %v, want ErrLocked", err)
	}
}
