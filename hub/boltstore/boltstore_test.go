package boltstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
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

func TestRecordConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunRecords(t, func(t *testing.T) hub.Store {
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	}, func(t *testing.T, s hub.Store, id string, doc []byte, key hub.PubKey) {
		if err := s.(*boltstore.Store).PutRawDevice(id, doc, key[:]); err != nil {
			t.Fatalf("PutRawDevice: %v", err)
		}
	})
}

func TestConformance(t *testing.T) {
	root := t.TempDir()
	storetest.Run(t, func(t *testing.T) hub.Store {
		// One directory per subtest name, so a second call from the same
		// subtest reopens the same file.
		return mustOpen(t, filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")))
	})
}

func TestChannelConformance(t *testing.T) {
	root := t.TempDir()
	storetest.RunChannels(t, func(t *testing.T) storetest.ChannelStoreUnderTest {
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
	_, err := boltstore.New(boltstore.Config{Path: dir, OpenTimeout: 200 * time.Millisecond})
	if !errors.Is(err, boltstore.ErrLocked) {
		t.Fatalf("second New error = %v, want ErrLocked", err)
	}
}

// childDirEnv names the data directory for TestChildWriter when the test
// binary runs as the child of TestKillNineKeepsAcknowledgedWrites.
const childDirEnv = "BOLTSTORE_TEST_CHILD_DIR"

// TestKillNineKeepsAcknowledgedWrites runs concurrent writers in a child
// process, kills it with SIGKILL in the middle of the stream, and checks
// that every Apply the child saw succeed is in the file, with the chain
// intact. While the child runs, a second open must fail with ErrLocked.
func TestKillNineKeepsAcknowledgedWrites(t *testing.T) {
	dir := t.TempDir()
	proc := startChild(t, "TestChildWriter", childDirEnv+"="+dir)
	out := proc.out

	// The child prints "acked <seq> <hash>" after each Apply returns nil.
	acked := map[uint64]string{}
	sc := bufio.NewScanner(out)
	const killAfter = 150
	for len(acked) < killAfter && sc.Scan() {
		if seq, hash, ok := parseAck(sc.Text()); ok {
			acked[seq] = hash
		}
	}
	if len(acked) < killAfter {
		t.Fatalf("child stopped after %d acknowledged writes: %v", len(acked), sc.Err())
	}
	if _, err := boltstore.New(boltstore.Config{Path: dir, OpenTimeout: 100 * time.Millisecond}); !errors.Is(err, boltstore.ErrLocked) {
		t.Fatalf("New while another process holds the file: error = %v, want ErrLocked", err)
	}
	proc.kill(t)
	// Acknowledgements already in the pipe were acknowledged before the
	// kill too.
	for sc.Scan() {
		if seq, hash, ok := parseAck(sc.Text()); ok {
			acked[seq] = hash
		}
	}
	proc.wait()

	s := mustOpen(t, dir)
	defer s.Close()
	all, err := s.AuditRange(context.Background(), 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var v hub.AuditVerifier
	for _, e := range all {
		if err := v.Next(e); err != nil {
			t.Fatalf("chain after kill: %v", err)
		}
	}
	for seq, hash := range acked {
		if seq > uint64(len(all)) || all[seq-1].Hash.String() != hash {
			t.Fatalf("acknowledged entry %d lost in the kill (log has %d entries)", seq, len(all))
		}
	}
	t.Logf("%d acknowledged entries survived SIGKILL; log holds %d", len(acked), len(all))
}

func parseAck(line string) (uint64, string, bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "acked" {
		return 0, "", false
	}
	seq, err := strconv.ParseUint(f[1], 10, 64)
	return seq, f[2], err == nil
}

// TestChildWriter is the child side of TestKillNineKeepsAcknowledgedWrites;
// it does nothing in a normal run.
func TestChildWriter(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestKillNineKeepsAcknowledgedWrites")
	}
	s := mustOpen(t, dir)
	ctx := context.Background()
	var mu sync.Mutex // one line at a time on stdout
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				head, err := s.AuditHead(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				d := storetest.NewDevice(t)
				e, err := hub.NextAuditEntry(head, head.Time, hub.AuditEnrol, d.ID, "child", nil)
				if err != nil {
					t.Error(err)
					return
				}
				err = s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e})
				if errors.Is(err, hub.ErrAuditConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Printf("acked %d %s\n", e.Seq, e.Hash)
				mu.Unlock()
			}
		}()
	}
	wg.Wait() // only reached on error; the parent kills this process
}

// BenchmarkApply measures one acknowledged (fsynced) registry write at a
// time: the latency an operator's enrol command sees.
func BenchmarkApply(b *testing.B) {
	s, err := boltstore.New(boltstore.Config{Path: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	devs := make([]hub.Device, b.N)
	for i := range devs {
		devs[i] = storetest.NewDevice(b)
	}
	b.ResetTimer()
	for i := range b.N {
		storetest.MustApply(b, s, "", devs[i])
	}
}

// BenchmarkApplyPayment measures durable payment updates per second with
// many concurrent writers sharing group commits: the hub's hot path.
func BenchmarkApplyPayment(b *testing.B) {
	s, err := boltstore.New(boltstore.Config{Path: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchApplyPayment(b, s, 4096, 128)
}

// child is this test binary re-run as a writer process that a test kills
// with SIGKILL mid-stream.
type child struct {
	cmd    *exec.Cmd
	out    io.Reader
	killed bool
}

// startChild runs the test named test in a child process with env set, its
// stdout readable through out; the child is killed when t ends if the test
// did not kill it.
func startChild(t *testing.T, test string, env string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if !c.killed {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	return c
}

// kill sends SIGKILL; the caller then drains out and calls wait.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.killed = true
}

func (c *child) wait() { c.cmd.Wait() }

// BenchmarkManyChannels: a store of 100,000 ready channels reopened and a
// channel manager started on it as a restarted hubd does (its first
// watcher round), the store's own listing beside, and payments among them
// (storetest.BenchManyChannels). Run it with -benchtime=3x.
func BenchmarkManyChannels(b *testing.B) {
	dir := b.TempDir()
	storetest.BenchManyChannels(b, 100_000, func(tb testing.TB) storetest.ChannelStoreUnderTest {
		s, err := boltstore.New(boltstore.Config{Path: dir})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}, chantest.StartManager, nil)
}
