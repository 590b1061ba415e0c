package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killStale terminates a btcd left running from an earlier run in dir, as
// named by its pid file. Pdeathsig normally makes this impossible, but a
// btcd started by an older build, or by hand with the same dir, would hold
// the database lock and make the new one fail with an obscure error.
//
// The pid is only trusted if /proc shows a btcd whose --datadir is this
// dir's, so a recycled pid belonging to something else is never touched.
func killStale(ctx context.Context, log *slog.Logger, dir string) error {
	pidFile := filepath.Join(dir, "btcd.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		log.Warn("ignoring malformed btcd pid file", "path", pidFile)
		return os.Remove(pidFile)
	}
	if !isOurBtcd(pid, dir) {
		return os.Remove(pidFile)
	}

	log.Warn("terminating stale btcd from an earlier run", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(ctx, pid, DefaultStopGrace) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !waitGone(ctx, pid, 10*time.Second) {
			return fmt.Errorf("regtest: stale btcd pid %d did not exit", pid)
		}
	}
	return os.Remove(pidFile)
}

// isOurBtcd reports whether pid is a live btcd whose data dir is under dir.
func isOurBtcd(pid int, dir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	if len(args) == 0 || filepath.Base(string(args[0])) != "btcd" {
		return false
	}
	want := "--datadir=" + filepath.Join(dir, "data")
	for _, a := range args[1:] {
		if string(a) == want {
			return alive(pid)
		}
	}
	return false
}

// alive reports whether pid exists and is not a zombie. A zombie btcd has
// released its files, so it counts as gone.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces or parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] != 'Z'
}

// waitGone polls until pid is gone, for at most d or until ctx is done. The
// stale process is not our child, so it cannot be waited for.
func waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for alive(pid) {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// writeFileAtomic writes data to path through a synced temporary file and a
// rename, so a crash leaves either the old or the new content.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("regtest: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("regtest: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("regtest: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	return nil
}

// tailFile returns up to the last n bytes of a file, for error messages.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	return strings.TrimSpace(string(buf))
}
