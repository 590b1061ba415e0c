package regtest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func captureLogger() (*slog.Logger, *logBuffer) {
	var b logBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelWarn})), &b
}

// fakeChain returns n serialized blocks linked from the regtest genesis
// block. They are not valid blocks (no proof of work), which the archive
// does not check: btcd does, on replay.
func fakeChain(tb testing.TB, prev chainhash.Hash, n int, tag byte) [][]byte {
	tb.Helper()
	var out [][]byte
	for i := range n {
		blk := wire.NewMsgBlock(wire.NewBlockHeader(1, &prev, &chainhash.Hash{tag}, 0x207fffff, uint32(i)))
		tx := wire.NewMsgTx(1)
		tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{}, 0xffffffff), []byte{byte(i), tag, 0, 0}, nil))
		tx.AddTxOut(wire.NewTxOut(5000000000, bytes.Repeat([]byte{tag}, 34)))
		if err := blk.AddTransaction(tx); err != nil {
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

func mustOpenArchive(tb testing.TB, path string, log *slog.Logger) *archive {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := openArchive(ctx, path, log)
	if err != nil {
		tb.Fatalf("openArchive: %v", err)
	}
	tb.Cleanup(func() { a.close() })
	return a
}

// checkArchive asserts that a holds exactly blocks, on disk and in its index.
func checkArchive(tb testing.TB, a *archive, blocks [][]byte) {
	tb.Helper()
	if a.height() != len(blocks) {
		tb.Fatalf("archive height = %d, want %d", a.height(), len(blocks))
	}
	for i, want := range blocks {
		got, err := a.block(i + 1)
		if err != nil {
			tb.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			tb.Fatalf("block at height %d differs", i+1)
		}
	}
	if fi, err := a.f.Stat(); err != nil || fi.Size() != a.size {
		tb.Fatalf("file size %v (%v), index says %d", fi.Size(), err, a.size)
	}
}

func TestArchiveAppendReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), ArchiveFile)
	blocks := fakeChain(t, *chaincfg.RegressionNetParams.GenesisHash, 7, 1)

	a := mustOpenArchive(t, path, testLogger(t))
	if a.tip() != *chaincfg.RegressionNetParams.GenesisHash {
		t.Fatal("empty archive tip is not the genesis block")
	}
	if err := a.appendBlocks(blocks[:3]); err != nil {
		t.Fatal(err)
	}
	if err := a.appendBlocks(blocks[3:]); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, a, blocks)
	a.close()

	b := mustOpenArchive(t, path, testLogger(t))
	checkArchive(t, b, blocks)
	if b.heights[b.tip()] != 7 {
		t.Fatalf("tip height in index = %d", b.heights[b.tip()])
	}
}

func TestArchiveRefusesUnlinkedBlock(t *testing.T) {
	a := mustOpenArchive(t, filepath.Join(t.TempDir(), ArchiveFile), testLogger(t))
	blocks := fakeChain(t, *chaincfg.RegressionNetParams.GenesisHash, 3, 1)
	// Skipping block 1 leaves block 2 without its parent.
	if err := a.appendBlocks(blocks[1:]); err == nil {
		t.Fatal("appended a block that does not extend the tip")
	}
	checkArchive(t, a, nil)
}

func TestArchiveTruncateToForkPoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), ArchiveFile)
	genesis := *chaincfg.RegressionNetParams.GenesisHash
	trunk := fakeChain(t, genesis, 6, 1)
	a := mustOpenArchive(t, path, testLogger(t))
	if err := a.appendBlocks(trunk); err != nil {
		t.Fatal(err)
	}
	dropped := a.hashes[4]

	// A branch forking after height 4, longer than the old one.
	var tip4 wire.BlockHeader
	if err := tip4.Deserialize(bytes.NewReader(trunk[3])); err != nil {
		t.Fatal(err)
	}
	branch := fakeChain(t, tip4.BlockHash(), 4, 2)
	if err := a.truncate(4); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.heights[dropped]; ok {
		t.Fatal("truncated block still in the hash index")
	}
	if err := a.appendBlocks(branch); err != nil {
		t.Fatal(err)
	}
	want := append(append([][]byte{}, trunk[:4]...), branch...)
	checkArchive(t, a, want)
	a.close()

	checkArchive(t, mustOpenArchive(t, path, testLogger(t)), want)
}

func TestArchiveDamagedTail(t *testing.T) {
	blocks := fakeChain(t, *chaincfg.RegressionNetParams.GenesisHash, 5, 1)
	lastLen := int64(recordHeaderLen + len(blocks[4]))

	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		keep   int
	}{
		{"CutInRecordHeader", func(t *testing.T, path string, size int64) {
			truncateFile(t, path, size-lastLen+3)
		}, 4},
		{"CutInBlock", func(t *testing.T, path string, size int64) {
			truncateFile(t, path, size-10)
		}, 4},
		{"ChecksumMismatch", func(t *testing.T, path string, size int64) {
			flipByte(t, path, size-lastLen+recordHeaderLen+40)
		}, 4},
		{"CorruptMiddleDropsTheRest", func(t *testing.T, path string, size int64) {
			flipByte(t, path, int64(len(archiveMagic))+recordHeaderLen+int64(len(blocks[0]))+recordHeaderLen+1)
		}, 1},
		{"HugeLength", func(t *testing.T, path string, size int64) {
			appendFile(t, path, []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5})
		}, 5},
		{"Garbage", func(t *testing.T, path string, size int64) {
			appendFile(t, path, []byte("not a record at all, but long enough to look like one"))
		}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ArchiveFile)
			a := mustOpenArchive(t, path, testLogger(t))
			if err := a.appendBlocks(blocks); err != nil {
				t.Fatal(err)
			}
			size := a.size
			a.close()
			tt.damage(t, path, size)

			log, logs := captureLogger()
			b := mustOpenArchive(t, path, log)
			checkArchive(t, b, blocks[:tt.keep])
			if !strings.Contains(logs.String(), "damaged tail") {
				t.Fatalf("no warning logged; logs: %q", logs.String())
			}
			// The repaired archive takes appends again.
			if err := b.appendBlocks(blocks[tt.keep:]); err != nil {
				t.Fatal(err)
			}
			checkArchive(t, b, blocks)
		})
	}
}

func TestArchiveErrArchiveCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), ArchiveFile)
	if err := os.WriteFile(path, []byte("something else entirely"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openArchive(t.Context(), path, testLogger(t))
	if !errors.Is(err, ErrArchiveCorrupt) {
		t.Fatalf("err = %v, want ErrArchiveCorrupt", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "something else entirely" {
		t.Fatal("a foreign file was modified")
	}
}

func TestArchiveHeaderCutShort(t *testing.T) {
	path := filepath.Join(t.TempDir(), ArchiveFile)
	if err := os.WriteFile(path, archiveMagic[:3], 0o600); err != nil {
		t.Fatal(err)
	}
	a := mustOpenArchive(t, path, testLogger(t))
	checkArchive(t, a, nil)
}

func TestArchiveErrArchiveLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), ArchiveFile)
	a := mustOpenArchive(t, path, testLogger(t))

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := openArchive(ctx, path, testLogger(t)); !errors.Is(err, ErrArchiveLocked) {
		t.Fatalf("err = %v, want ErrArchiveLocked", err)
	}

	// The lock is free again as soon as the holder closes the file.
	go func() {
		time.Sleep(100 * time.Millisecond)
		a.close()
	}()
	mustOpenArchive(t, path, testLogger(t))
}

// FuzzArchiveLoad feeds arbitrary bytes after the magic to the archive
// scanner that openArchive runs: it must never panic, must keep exactly a
// valid linked prefix, and that prefix must scan again to the same index
// with nothing to cut (what reopening the truncated file does). The target
// scans memory, not a file: a file per input cost a temporary directory,
// a write and an fsync, which held the fuzzer to a few executions a
// second; TestArchiveDamagedTail and its neighbours cover the
// file side.
func FuzzArchiveLoad(f *testing.F) {
	blocks := fakeChain(f, *chaincfg.RegressionNetParams.GenesisHash, 3, 1)
	dir := f.TempDir()
	a := mustOpenArchive(f, filepath.Join(dir, "seed"), slog.New(slog.DiscardHandler))
	if err := a.appendBlocks(blocks); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(filepath.Join(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	a.close()
	f.Add(seed[len(archiveMagic):])
	f.Add(seed[len(archiveMagic) : len(seed)-5])
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, tail []byte) {
		file := append(archiveMagic[:], tail...)
		idx := scanArchive(bytes.NewReader(file), int64(len(file)))
		if idx.end < int64(len(archiveMagic)) || idx.end > int64(len(file)) {
			t.Fatalf("prefix ends at %d of %d bytes", idx.end, len(file))
		}
		if (idx.end == int64(len(file))) != (idx.why == "") {
			t.Fatalf("prefix ends at %d of %d bytes, reason %q", idx.end, len(file), idx.why)
		}
		prev := *chaincfg.RegressionNetParams.GenesisHash
		for i, off := range idx.offs {
			var bh wire.BlockHeader
			if err := bh.Deserialize(bytes.NewReader(file[off+recordHeaderLen:])); err != nil {
				t.Fatal(err)
			}
			if bh.PrevBlock != prev || bh.BlockHash() != idx.hashes[i] {
				t.Fatalf("height %d does not link", i+1)
			}
			prev = bh.BlockHash()
		}
		again := scanArchive(bytes.NewReader(file[:idx.end]), idx.end)
		if again.why != "" || again.end != idx.end || !slices.Equal(again.hashes, idx.hashes) {
			t.Fatalf("prefix rescans to %d blocks ending at %d (%q), want %d ending at %d",
				len(again.hashes), again.end, again.why, len(idx.hashes), idx.end)
		}
	})
}

func truncateFile(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}
