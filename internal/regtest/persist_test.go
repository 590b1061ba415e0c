package regtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// chainState is what a restart must preserve.
type chainState struct {
	height int64
	best   chainhash.Hash
}

func mustChainState(tb testing.TB, n *Node) chainState {
	tb.Helper()
	count, err := n.BlockCount(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	best, err := n.bestHash(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	return chainState{height: count, best: best}
}

// archiveTip returns the archive's height and tip as the node holds them.
func archiveTip(n *Node) (int, chainhash.Hash, bool) {
	n.archMu.Lock()
	defer n.archMu.Unlock()
	if n.arch == nil {
		return 0, chainhash.Hash{}, false
	}
	return n.arch.height(), n.arch.tip(), true
}

// waitFor polls cond until it holds or d passes. It waits on the archive
// goroutine, whose interval the tests shorten, not on a period of its own.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// walletOn returns a chain client and the hub wallet (key at keyPath) over n.
func walletOn(tb testing.TB, n *Node, keyPath string) (*btcdchain.Client, *btcdchain.Wallet) {
	tb.Helper()
	rpc := n.RPC()
	c, err := btcdchain.New(btcdchain.Config{
		Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert,
		Params: &chaincfg.RegressionNetParams, Logger: n.cfg.Logger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	w, err := btcdchain.NewWallet(btcdchain.WalletConfig{KeyPath: keyPath, Chain: c, Logger: n.cfg.Logger})
	if err != nil {
		tb.Fatal(err)
	}
	return c, w
}

func newAddr(tb testing.TB) btcutil.Address {
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
	return addr
}

// mustPay sends amount to a fresh address from w and returns the outpoint.
func mustPay(tb testing.TB, c *btcdchain.Client, w *btcdchain.Wallet, amount btcutil.Amount) wire.OutPoint {
	tb.Helper()
	to := newAddr(tb)
	txid, err := w.Send(tb.Context(), to, amount)
	if err != nil {
		tb.Fatalf("Send: %v", err)
	}
	info, err := c.GetTx(tb.Context(), txid)
	if err != nil {
		tb.Fatal(err)
	}
	script, err := txscript.PayToAddrScript(to)
	if err != nil {
		tb.Fatal(err)
	}
	for i, out := range info.Tx.TxOut {
		if string(out.PkScript) == string(script) {
			return wire.OutPoint{Hash: txid, Index: uint32(i)}
		}
	}
	tb.Fatal("payment output not found")
	return wire.OutPoint{}
}

// TestRestartKeepsChain is the point of the archive: after Stop and Start on
// the same Dir the node has the same chain, the UTXO set with it (a payment
// made before the restart is unspent after it), and the hub wallet its coins.
func TestRestartKeepsChain(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")
	addr, err := btcdchain.KeyAddress(keyPath, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(), Logger: testLogger(t)}
	ctx := t.Context()

	n := mustStart(t, cfg)
	if err := n.MineToActivation(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Mine(ctx, 500-ActivationHeight-1); err != nil {
		t.Fatal(err)
	}
	c, w := walletOn(t, n, keyPath)
	paid := mustPay(t, c, w, btcutil.Amount(123_456_789))
	if _, err := n.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	before := mustChainState(t, n)
	if before.height != 500 {
		t.Fatalf("height = %d, want 500", before.height)
	}
	balBefore, err := w.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()

	start := time.Now()
	n2 := mustStart(t, cfg)
	took := time.Since(start)
	t.Logf("Start with %d archived blocks took %v, of which replay %v", n2.replayed, took, n2.replayTook)
	if n2.replayed != 500 {
		t.Fatalf("replayed %d blocks, want 500", n2.replayed)
	}
	if n2.replayTook > 5*time.Second {
		t.Errorf("replay of 500 blocks took %v", n2.replayTook)
	}

	if after := mustChainState(t, n2); after != before {
		t.Fatalf("chain after restart = %+v, want %+v", after, before)
	}
	c2, w2 := walletOn(t, n2, keyPath)
	out, err := c2.TxOut(ctx, paid, false)
	if err != nil {
		t.Fatalf("payment output after restart: %v", err)
	}
	if out.Value != 123_456_789 || out.Confirmations != 1 {
		t.Fatalf("payment output after restart = %+v", out)
	}
	balAfter, err := w2.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if balAfter != balBefore {
		t.Fatalf("wallet balance after restart = %+v, want %+v", balAfter, balBefore)
	}

	// The restored chain keeps growing like any other.
	hashes, err := n2.Mine(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if h, tip, _ := archiveTip(n2); h != 501 || tip != hashes[0] {
		t.Fatalf("archive at %d %s after mining on the restored chain", h, tip)
	}
}

// TestKillBtcdKeepsMinedBlocks kills btcd with SIGKILL right after Mine
// returns: no graceful stop, no final sync, and nothing mined is lost.
func TestKillBtcdKeepsMinedBlocks(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), MiningAddr: mustTaprootAddr(t), Logger: testLogger(t)}
	// The poller never runs: only Mine's own archiving is tested.
	cfg.ArchiveInterval = time.Hour
	n := mustStart(t, cfg)
	hashes, err := n.Mine(t.Context(), 37)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(n.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.Exited()

	// The dead node's archive loop releases the file, so a new node on
	// the same Dir starts without Stop being called on the old one.
	n2 := mustStart(t, cfg)
	got := mustChainState(t, n2)
	if got.height != 37 || got.best != hashes[36] {
		t.Fatalf("chain after kill = %+v, want height 37 at %s", got, hashes[36])
	}
	if err := n.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := n.SyncArchive(t.Context()); !errors.Is(err, ErrArchiveClosed) {
		t.Fatalf("SyncArchive on a stopped node = %v, want ErrArchiveClosed", err)
	}
}

// TestKillHubKeepsMinedBlocks SIGKILLs the parent process (the hub, here a
// helper re-executing this test binary, see TestMain) as soon as Mine has
// returned in it. btcd dies with it; the next Start has every block.
func TestKillHubKeepsMinedBlocks(t *testing.T) {
	dir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(),
		helperDirEnv+"="+dir, helperMineEnv+"=57", helperAddrEnv+"="+mustTaprootAddr(t))
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

	var tip chainhash.Hash
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "MINED "); ok {
			h, err := chainhash.NewHashFromStr(s)
			if err != nil {
				t.Fatal(err)
			}
			tip = *h
			break
		}
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, stdout)
	_ = helper.Wait()
	if tip == (chainhash.Hash{}) {
		t.Fatal("helper exited without mining")
	}

	n := mustStart(t, Config{Dir: dir, Logger: testLogger(t)})
	got := mustChainState(t, n)
	if got.height != 57 || got.best != tip {
		t.Fatalf("chain after killing the hub = %+v, want height 57 at %s", got, tip)
	}
}

// TestRestartCutsDamagedTail simulates a crash in the middle of an append:
// the last record is cut short. Start drops it with a warning and comes up
// on the chain before it.
func TestRestartCutsDamagedTail(t *testing.T) {
	log, logs := captureLogger()
	cfg := Config{Dir: t.TempDir(), MiningAddr: mustTaprootAddr(t), Logger: log}
	n := mustStart(t, cfg)
	hashes, err := n.Mine(t.Context(), 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.Dir, ArchiveFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-7); err != nil {
		t.Fatal(err)
	}

	n2 := mustStart(t, cfg)
	got := mustChainState(t, n2)
	if got.height != 29 || got.best != hashes[28] {
		t.Fatalf("chain after damaged tail = %+v, want height 29 at %s", got, hashes[28])
	}
	if !strings.Contains(logs.String(), "damaged tail") {
		t.Fatalf("no warning about the damaged tail; logs: %s", logs.String())
	}
	// The lost block is simply mined again on top.
	if _, err := n2.Mine(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := archiveTip(n2); h != 30 {
		t.Fatalf("archive height = %d, want 30", h)
	}
}

// TestArchiveFollowsReorg makes btcd switch branches with invalidateblock and
// a longer branch mined behind the package's back (plain generate, not
// Mine): the archive loop, woken by btcd's notifications (the poll is set
// to an hour), cuts back to the fork point and follows the new branch, and
// a restart comes up on it.
func TestArchiveFollowsReorg(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "wallet.key")
	addr, err := btcdchain.KeyAddress(keyPath, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Dir: filepath.Join(dir, "btcd"), MiningAddr: addr.EncodeAddress(),
		ArchiveInterval: time.Hour, Logger: testLogger(t),
	}
	ctx := t.Context()
	n := mustStart(t, cfg)
	// The payment below needs segwit, so the chain goes past activation.
	const top = ActivationHeight + 10
	old, err := n.Mine(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	// old[i] is the block at height i+1.
	const forkAt = top - 3

	// Invalidate the block above the fork point: the node falls back.
	if err := n.call(ctx, btcjson.NewInvalidateBlockCmd(old[forkAt].String()), nil); err != nil {
		t.Fatalf("invalidateblock: %v", err)
	}
	waitFor(t, 5*time.Second, "archive to fall back to the fork point", func() bool {
		h, tip, _ := archiveTip(n)
		return h == forkAt && tip == old[forkAt-1]
	})

	// A payment makes the new branch's first block differ from the
	// invalidated one, which btcd would otherwise mine again bit for bit
	// (same parent, transactions and timestamp) and refuse as invalid.
	c, w := walletOn(t, n, keyPath)
	paid := mustPay(t, c, w, btcutil.Amount(50_000_000))
	var newHexes []string
	if err := n.call(ctx, btcjson.NewGenerateCmd(5), &newHexes); err != nil {
		t.Fatalf("generate: %v", err)
	}
	newTip, err := chainhash.NewHashFromStr(newHexes[4])
	if err != nil {
		t.Fatal(err)
	}
	const newTop = forkAt + 5
	waitFor(t, 5*time.Second, "archive to follow the new branch", func() bool {
		h, tip, _ := archiveTip(n)
		return h == newTop && tip == *newTip
	})
	for h := 1; h <= newTop; h++ {
		var s string
		if err := n.call(ctx, btcjson.NewGetBlockHashCmd(int64(h)), &s); err != nil {
			t.Fatal(err)
		}
		n.archMu.Lock()
		archived := n.arch.hashes[h-1].String()
		n.archMu.Unlock()
		if archived != s {
			t.Fatalf("archive at height %d = %s, node has %s", h, archived, s)
		}
	}
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()

	n2 := mustStart(t, cfg)
	got := mustChainState(t, n2)
	if got.height != newTop || got.best != *newTip {
		t.Fatalf("chain after restart = %+v, want height %d at %s", got, newTop, newTip)
	}
	var above string
	if err := n2.call(ctx, btcjson.NewGetBlockHashCmd(forkAt+1), &above); err != nil {
		t.Fatal(err)
	}
	if above == old[forkAt].String() || above != newHexes[0] {
		t.Fatalf("block above the fork after restart = %s, want the new branch's %s", above, newHexes[0])
	}
	c2, _ := walletOn(t, n2, keyPath)
	if _, err := c2.TxOut(ctx, paid, false); err != nil {
		t.Fatalf("payment on the new branch after restart: %v", err)
	}
}

// TestArchiveLoopCatchesForeignBlocks checks that blocks mined by another
// RPC client, not through Mine, reach the archive by themselves: through
// btcd's block notifications with no poll to speak of, and through the poll
// alone with notifications off.
func TestArchiveLoopCatchesForeignBlocks(t *testing.T) {
	for _, tt := range []struct {
		name     string
		interval time.Duration
		pollOnly bool
	}{
		{"Notified", time.Hour, false},
		{"Polled", 20 * time.Millisecond, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{
				Dir: t.TempDir(), MiningAddr: mustTaprootAddr(t),
				ArchiveInterval: tt.interval, Logger: testLogger(t), pollOnly: tt.pollOnly,
			}
			n := mustStart(t, cfg)
			var hexes []string
			if err := n.call(t.Context(), btcjson.NewGenerateCmd(300), &hexes); err != nil {
				t.Fatal(err)
			}
			want, err := chainhash.NewHashFromStr(hexes[len(hexes)-1])
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "archive to reach height 300", func() bool {
				h, tip, _ := archiveTip(n)
				return h == 300 && tip == *want
			})
		})
	}
}

// TestStopArchivesForeignBlocks checks Stop's last sync: blocks another
// client mined just before Stop are kept even though neither a poll nor a
// notification (both off) brought them to the archive.
func TestStopArchivesForeignBlocks(t *testing.T) {
	cfg := Config{
		Dir: t.TempDir(), MiningAddr: mustTaprootAddr(t),
		ArchiveInterval: time.Hour, Logger: testLogger(t), pollOnly: true,
	}
	n := mustStart(t, cfg)
	var hexes []string
	if err := n.call(t.Context(), btcjson.NewGenerateCmd(12), &hexes); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := archiveTip(n); h != 0 {
		t.Fatalf("archive at height %d before Stop; the test needs it behind", h)
	}
	if err := n.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	n2 := mustStart(t, cfg)
	if got := mustChainState(t, n2); got.height != 12 || got.best.String() != hexes[11] {
		t.Fatalf("chain after restart = %+v, want height 12 at %s", got, hexes[11])
	}
}

// BenchmarkReplay measures Start on a Dir holding a 500-block archive, most
// of which is the replay.
func BenchmarkReplay(b *testing.B) {
	cfg := Config{Dir: b.TempDir(), MiningAddr: mustTaprootAddr(b), Logger: testLogger(b)}
	n, err := Start(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := n.Mine(b.Context(), 500); err != nil {
		b.Fatal(err)
	}
	if err := n.Stop(context.Background()); err != nil {
		b.Fatal(err)
	}
	var replay time.Duration
	for b.Loop() {
		n, err := Start(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		replay += n.replayTook
		if err := n.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(replay.Milliseconds())/float64(b.N), "replay-ms/op")
	b.ReportMetric(500, "blocks")
}

// oldChain builds n valid regtest blocks on the genesis block, dated from
// days ago at one-minute spacing, as a chain archived long before would be.
func oldChain(tb testing.TB, n int, age time.Duration) [][]byte {
	tb.Helper()
	params := &chaincfg.RegressionNetParams
	target := blockchain.CompactToBig(params.PowLimitBits)
	prev := *params.GenesisHash
	t0 := time.Now().Add(-age).Truncate(time.Second)
	var out [][]byte
	for i := range n {
		coinbase := wire.NewMsgTx(1)
		coinbase.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{}, wire.MaxPrevOutIndex),
			[]byte{txscript.OP_DATA_4, byte(i), byte(i >> 8), 0xaa, 0x55}, nil))
		coinbase.AddTxOut(wire.NewTxOut(blockchain.CalcBlockSubsidy(int32(i+1), params), []byte{txscript.OP_TRUE}))
		merkle := coinbase.TxHash()
		hdr := wire.NewBlockHeader(0x20000000, &prev, &merkle, params.PowLimitBits, 0)
		hdr.Timestamp = t0.Add(time.Duration(i) * time.Minute)
		for {
			h := hdr.BlockHash()
			if blockchain.HashToBig(&h).Cmp(target) <= 0 {
				break
			}
			hdr.Nonce++
		}
		blk := wire.NewMsgBlock(hdr)
		if err := blk.AddTransaction(coinbase); err != nil {
			tb.Fatal(err)
		}
		var buf bytes.Buffer
		if err := blk.Serialize(&buf); err != nil {
			tb.Fatal(err)
		}
		out = append(out, buf.Bytes())
		prev = blk.BlockHash()
	}
	return out
}

// TestReplayOldChain replays a chain whose blocks are days old, as after a
// hub was down over a weekend: btcd accepts them and mines on top of them
// at today's time.
func TestReplayOldChain(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), MiningAddr: mustTaprootAddr(t), Logger: testLogger(t)}
	blocks := oldChain(t, 150, 72*time.Hour)
	a := mustOpenArchive(t, filepath.Join(cfg.Dir, ArchiveFile), testLogger(t))
	if err := a.appendBlocks(blocks); err != nil {
		t.Fatal(err)
	}
	tip := a.tip()
	a.close()

	n := mustStart(t, cfg)
	if got := mustChainState(t, n); got.height != 150 || got.best != tip {
		t.Fatalf("chain after replaying old blocks = %+v, want height 150 at %s", got, tip)
	}
	hashes, err := n.Mine(t.Context(), 2)
	if err != nil {
		t.Fatalf("Mine on an old chain: %v", err)
	}
	if h, archived, _ := archiveTip(n); h != 152 || archived != hashes[1] {
		t.Fatalf("archive at %d %s, want 152 %s", h, archived, hashes[1])
	}
}
