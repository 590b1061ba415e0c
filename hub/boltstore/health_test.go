package boltstore_test

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
)

// putContract writes a contract of size bytes, distinct per i.
func putContract(t *testing.T, s *boltstore.Store, i, size int) error {
	t.Helper()
	doc := make([]byte, size)
	copy(doc, strconv.Itoa(i))
	return s.PutContract(t.Context(), hub.ContractRecord{
		Hash: hub.Hash(sha256.Sum256(doc)), Kind: "toll", Name: "t", Version: i,
		Document: doc, Published: time.Unix(int64(i), 0),
	})
}

// A store whose file system has less room than MinFree is unhealthy before
// any write fails.
func TestHealthyErrDiskFull(t *testing.T) {
	s, err := boltstore.New(boltstore.Config{Path: t.TempDir(), MinFree: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Healthy(t.Context()); !errors.Is(err, boltstore.ErrDiskFull) {
		t.Fatalf("Healthy = %v, want ErrDiskFull", err)
	}
}

// On a real full file system (a small tmpfs, filled up) a commit fails
// with ENOSPC, and from then on Healthy reports the store failing, not
// "ok", until space is freed and a commit succeeds again.
func TestHealthyFailsWhenCommitsFail(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m"); err != nil {
		// Mounting needs root (CAP_SYS_ADMIN); TestHealthyErrDiskFull
		// covers the free-space check without it.
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)

	s, err := boltstore.New(boltstore.Config{Path: filepath.Join(mnt, "db"), MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Healthy(t.Context()); err != nil {
		t.Fatalf("Healthy on an empty tmpfs: %v", err)
	}

	// Fill the file system.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	failed := false
	for i := range 200 {
		if err := putContract(t, s, i, 32<<10); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write %d on a full disk: %v, want ENOSPC", i, err)
			}
			failed = true
			break
		}
	}
	if !failed {
		t.Fatal("200 writes of 32 KiB fitted on a full 4 MiB tmpfs")
	}
	if err := s.Healthy(t.Context()); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Healthy after a failed commit = %v, want ENOSPC", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := putContract(t, s, 1000, 1024); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	if err := s.Healthy(t.Context()); err != nil {
		t.Fatalf("Healthy after a commit succeeded again: %v", err)
	}
}
