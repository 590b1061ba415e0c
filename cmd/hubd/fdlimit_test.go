package main

import (
	"log/slog"
	"syscall"
	"testing"
)

// TestRaiseFDLimit lowers this process's soft descriptor limit and checks
// raiseFDLimit lifts it to the hard limit, as hubd does at start.
func TestRaiseFDLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max < 512 {
		t.Fatalf("hard descriptor limit %d is too low for hubd", orig.Max)
	}
	low := syscall.Rlimit{Cur: 256, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig([]string{"--datadir", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := raiseFDLimit(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if now.Cur != orig.Max {
		t.Fatalf("soft limit %d after raiseFDLimit, want the hard limit %d", now.Cur, orig.Max)
	}
}
