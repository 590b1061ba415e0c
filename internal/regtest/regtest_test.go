package regtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"go.uber.org/goleak"
)

// helperDirEnv, when set, turns the test binary into a helper parent process
// that starts a node in that dir, prints the btcd pid and waits to be killed.
// With helperMineEnv set to a block count (and helperAddrEnv to the mining
// address) it first mines that many blocks and prints the tip's hash.
const (
	helperDirEnv  = "REGTEST_HELPER_PARENT_DIR"
	helperMineEnv = "REGTEST_HELPER_MINE"
	helperAddrEnv = "REGTEST_HELPER_ADDR"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		helperParent(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

func helperParent(dir string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	n, err := Start(context.Background(), Config{
		Dir: dir, MiningAddr: os.Getenv(helperAddrEnv), Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	fmt.Printf("PID %d\n", n.Pid())
	if s := os.Getenv(helperMineEnv); s != "" {
		count, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		hashes, err := n.Mine(context.Background(), uint32(count))
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		fmt.Printf("MINED %s\n", hashes[len(hashes)-1])
	}
	// Wait for SIGKILL; never stop the node, that is the point.
	select {}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// mustTaprootAddr returns a fresh regtest BIP86 address to mine to.
func mustTaprootAddr(tb testing.TB) string {
	tb.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	out := txscript.ComputeTaprootKeyNoScript(priv.PubKey())
	addr, err := btcutil.NewAddressTaproot(schnorr.SerializePubKey(out), &chaincfg.RegressionNetParams)
	if err != nil {
		tb.Fatal(err)
	}
	return addr.EncodeAddress()
}

func mustStart(tb testing.TB, cfg Config) *Node {
	tb.Helper()
	n, err := Start(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { _ = n.Stop(context.Background()) })
	return n
}

func waitDead(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !alive(pid)
}

func TestStartMineStop(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MiningAddr: mustTaprootAddr(t), Logger: testLogger(t)}
	n := mustStart(t, cfg)
	ctx := t.Context()

	if !alive(n.Pid()) {
		t.Fatalf("btcd pid %d not alive after Start", n.Pid())
	}
	if got, err := os.ReadFile(filepath.Join(dir, "btcd.pid")); err != nil ||
		strings.TrimSpace(string(got)) != strconv.Itoa(n.Pid()) {
		t.Fatalf("pid file = %q, %v; want %d", got, err, n.Pid())
	}
	if fi, err := os.Stat(filepath.Join(dir, "btcd.conf")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("btcd.conf mode: %v, %v", fi, err)
	}
	if len(n.RPC().Cert) == 0 {
		t.Fatal("no RPC certificate")
	}

	t.Run("MineToActivation", func(t *testing.T) {
		start := time.Now()
		if err := n.MineToActivation(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("mined to %d in %v", ActivationHeight, time.Since(start))
		count, err := n.BlockCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if count != ActivationHeight {
			t.Fatalf("block count = %d, want %d", count, ActivationHeight)
		}
		// Ask btcd itself rather than trusting the arithmetic.
		var info btcjson.GetBlockChainInfoResult
		var forks btcjson.SoftForks
		if err := n.call(ctx, btcjson.NewGetBlockChainInfoCmd(), &info); err != nil {
			t.Fatal(err)
		}
		if err := n.call(ctx, btcjson.NewGetBlockChainInfoCmd(), &forks); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"segwit", "taproot"} {
			fork, ok := forks.Bip9SoftForks[name]
			if !ok || fork.Status != "active" {
				t.Errorf("%s deployment = %+v, want active", name, fork)
			}
		}
		// A second call is a no-op.
		if err := n.MineToActivation(ctx); err != nil {
			t.Fatal(err)
		}
		if count, _ := n.BlockCount(ctx); count != ActivationHeight {
			t.Fatalf("block count after second call = %d", count)
		}
	})

	t.Run("StopLeavesNoProcess", func(t *testing.T) {
		pid := n.Pid()
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-n.Exited():
		default:
			t.Fatal("Exited not closed after Stop")
		}
		if alive(pid) {
			t.Fatalf("btcd pid %d alive after Stop", pid)
		}
		if _, err := os.Stat(filepath.Join(dir, "btcd.pid")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("pid file still there: %v", err)
		}
		if err := n.Stop(ctx); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
	})

	t.Run("RestartKeepsChain", func(t *testing.T) {
		// btcd deletes its regtest database on every start (btcd.go,
		// removeRegressionDB); the archive in Dir brings the chain back.
		n2 := mustStart(t, cfg)
		count, err := n2.BlockCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if count != ActivationHeight {
			t.Fatalf("block count after restart = %d, want %d", count, ActivationHeight)
		}
		if err := n2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStartKillsStaleNode(t *testing.T) {
	dir := t.TempDir()
	old := mustStart(t, Config{Dir: dir, Logger: testLogger(t)})

	// To the second Start, the first btcd looks exactly like one left
	// behind by a crashed hub: a pid file naming a live btcd on this dir.
	fresh := mustStart(t, Config{Dir: dir, Logger: testLogger(t)})
	select {
	case <-old.Exited():
	case <-time.After(5 * time.Second):
		t.Fatalf("stale btcd pid %d still running", old.Pid())
	}
	if _, err := fresh.BlockCount(t.Context()); err != nil {
		t.Fatalf("new node: %v", err)
	}
	if err := old.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestStartErrNoBinary(t *testing.T) {
	_, err := Start(t.Context(), Config{
		Dir:    t.TempDir(),
		Binary: filepath.Join(t.TempDir(), "no-such-btcd"),
		Logger: testLogger(t),
	})
	if !errors.Is(err, ErrNoBinary) {
		t.Fatalf("err = %v, want ErrNoBinary", err)
	}
}

func TestStartErrExited(t *testing.T) {
	// An unknown flag makes btcd exit at once; Start must report that
	// rather than wait for the whole timeout.
	start := time.Now()
	_, err := Start(t.Context(), Config{
		Dir:       t.TempDir(),
		ExtraArgs: []string{"--no-such-flag"},
		Logger:    testLogger(t),
	})
	if !errors.Is(err, ErrExited) {
		t.Fatalf("err = %v, want ErrExited", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %v to notice the exit", d)
	}
}

// TestChildDiesWithParent is the guarantee hubd relies on: SIGKILL the parent
// and its btcd goes too. The parent is this test binary re-executed in helper
// mode (see TestMain), so the kill is real and nothing in-process can help.
func TestChildDiesWithParent(t *testing.T) {
	dir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperDirEnv+"="+dir)
	helper.Stderr = t.Output()
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = helper.Process.Kill()
		_ = helper.Wait()
	})

	pidCh := make(chan int, 1)
	go func() {
		defer close(pidCh)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "PID "); ok {
				if pid, err := strconv.Atoi(s); err == nil {
					pidCh <- pid
				}
			}
		}
	}()

	var pid int
	select {
	case p, ok := <-pidCh:
		if !ok {
			t.Fatal("helper exited without printing a btcd pid")
		}
		pid = p
	case <-time.After(DefaultStartTimeout + 30*time.Second):
		t.Fatal("helper did not start btcd in time")
	}
	// If the guarantee fails, do not leave the btcd behind.
	t.Cleanup(func() {
		if isOurBtcd(pid, dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if !isOurBtcd(pid, dir) {
		t.Fatalf("pid %d is not a live btcd on %s", pid, dir)
	}

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	for range pidCh {
	}

	start := time.Now()
	if !waitDead(pid, 5*time.Second) {
		t.Fatalf("btcd pid %d outlived its SIGKILLed parent", pid)
	}
	t.Logf("btcd gone %v after parent was killed", time.Since(start))
}
