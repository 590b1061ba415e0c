package regtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// ArchiveFile is the name, inside Config.Dir, of the file holding the
// archived chain.
const ArchiveFile = "chain.blocks"

// archiveMagic opens every archive file. The version digit changes if the
// record format ever does.
var archiveMagic = [8]byte{'m', '2', 'm', 'b', 'l', 'k', '1', '\n'}

// recordHeaderLen is the size of a record's prefix: the block's length and
// the CRC-32C of its bytes, both little-endian uint32.
const recordHeaderLen = 8

// maxRecordLen bounds the length field, so a corrupt one is recognised
// rather than trusted with an allocation.
const maxRecordLen = wire.MaxBlockPayload

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// archive is the append-only file of raw serialized blocks of the node's best
// chain from height 1 up. It exists because btcd deletes its regtest database
// on every start: the archive is the chain's durable copy, replayed into each
// fresh btcd.
//
// The file is an 8-byte magic followed by records, each the block's length,
// its CRC-32C and the block itself. The records always form a linked chain
// from the regtest genesis block: every change either appends blocks whose
// parent is the current tip or truncates back to a common ancestor, and
// each is fsynced before the in-memory index moves.
//
// An archive is not safe for concurrent use; Node serialises access.
type archive struct {
	f    *os.File
	path string
	log  *slog.Logger

	// offs[i] is the file offset of the record of height i+1, hashes[i]
	// its block hash; size is where the next record goes.
	offs   []int64
	hashes []chainhash.Hash
	size   int64
	// heights maps every archived hash, and the genesis hash, to its
	// height, so a walk back from the node's tip finds the fork point.
	heights map[chainhash.Hash]int
}

// openArchive opens or creates the archive at path, taking an exclusive lock
// on it, and indexes its records. A record that is cut short, fails its
// checksum or does not extend the chain before it ends the archive: it and
// everything after it are truncated away with a warning, since that is what
// a crash in the middle of an append leaves behind.
func openArchive(ctx context.Context, path string, log *slog.Logger) (*archive, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("regtest: archive: %w", err)
	}
	if err := lockFile(ctx, f); err != nil {
		f.Close()
		return nil, err
	}
	a := &archive{f: f, path: path, log: log}
	if err := a.load(); err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

// lockFile takes an exclusive flock on f, retrying until ctx is done. The
// holder may be a node of this process whose btcd was just terminated and
// which is about to release it.
func lockFile(ctx context.Context, f *os.File) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("regtest: archive lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %w", ErrArchiveLocked, f.Name(), ctx.Err())
		case <-tick.C:
		}
	}
}

// load reads the whole file, builds the index and cuts off a bad tail.
func (a *archive) load() error {
	genesis := *chaincfg.RegressionNetParams.GenesisHash
	a.heights = map[chainhash.Hash]int{genesis: 0}

	fi, err := a.f.Stat()
	if err != nil {
		return fmt.Errorf("regtest: archive: %w", err)
	}
	if fi.Size() == 0 {
		// A new archive: the magic is written and synced, and so is the
		// directory entry, before any block can depend on it.
		if _, err := a.f.WriteAt(archiveMagic[:], 0); err != nil {
			return fmt.Errorf("regtest: archive: %w", err)
		}
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("regtest: archive: %w", err)
		}
		if err := syncDir(filepath.Dir(a.path)); err != nil {
			return err
		}
		a.size = int64(len(archiveMagic))
		return nil
	}

	var magic [8]byte
	if _, err := a.f.ReadAt(magic[:], 0); err != nil || magic != archiveMagic {
		// A file shorter than its magic can only be a crash right
		// after creation; anything else is not ours to overwrite.
		if fi.Size() < int64(len(magic)) && bytes.HasPrefix(archiveMagic[:], magic[:fi.Size()]) {
			a.log.Warn("chain archive header cut short, starting it again", "path", a.path)
			if err := a.f.Truncate(0); err != nil {
				return fmt.Errorf("regtest: archive: %w", err)
			}
			return a.load()
		}
		return fmt.Errorf("%w: %s has no archive header", ErrArchiveCorrupt, a.path)
	}

	idx := scanArchive(a.f, fi.Size())
	a.offs, a.hashes, a.size = idx.offs, idx.hashes, idx.end
	for i, h := range idx.hashes {
		a.heights[h] = i + 1
	}
	if idx.end < fi.Size() {
		// A damaged tail: cut it off, as a crash mid-append leaves one.
		a.log.Warn("chain archive: cutting off a damaged tail, likely a crash mid-append",
			"path", a.path, "offset", idx.end, "dropped_bytes", fi.Size()-idx.end,
			"kept_blocks", len(a.hashes), "reason", idx.why)
		if err := a.f.Truncate(idx.end); err != nil {
			return fmt.Errorf("regtest: archive: %w", err)
		}
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("regtest: archive: %w", err)
		}
	}
	return nil
}

// archiveIndex is what scanArchive found: the offset and hash of each
// record of the valid linked prefix, where that prefix ends, and why the
// scan stopped there when it is not the end of the file.
type archiveIndex struct {
	offs   []int64
	hashes []chainhash.Hash
	end    int64
	why    string
}

// scanArchive reads the records of an archive of size bytes (its magic
// already checked) up to the first one that is cut short, fails its
// checksum or does not extend the chain before it. It only reads: the
// caller truncates. A length field is checked against the bytes left
// before anything is allocated for it, so a corrupt length costs nothing.
func scanArchive(f io.ReaderAt, size int64) archiveIndex {
	r := io.NewSectionReader(f, 0, size)
	off := int64(len(archiveMagic))
	idx := archiveIndex{end: off}
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		idx.why = err.Error()
		return idx
	}
	prev := *chaincfg.RegressionNetParams.GenesisHash
	var hdr [recordHeaderLen]byte
	var buf []byte
	for off < size {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			idx.why = "record header cut short"
			return idx
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		sum := binary.LittleEndian.Uint32(hdr[4:8])
		if n < wire.MaxBlockHeaderPayload || n > maxRecordLen {
			idx.why = fmt.Sprintf("record length %d out of range", n)
			return idx
		}
		if int64(n) > size-off-recordHeaderLen {
			idx.why = "record cut short"
			return idx
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			idx.why = "record cut short"
			return idx
		}
		if crc32.Checksum(buf, castagnoli) != sum {
			idx.why = "checksum mismatch"
			return idx
		}
		var bh wire.BlockHeader
		if err := bh.Deserialize(bytes.NewReader(buf)); err != nil {
			idx.why = "block header unreadable"
			return idx
		}
		if bh.PrevBlock != prev {
			idx.why = "block does not extend the archived chain"
			return idx
		}
		prev = bh.BlockHash()
		idx.offs = append(idx.offs, off)
		idx.hashes = append(idx.hashes, prev)
		off += recordHeaderLen + int64(n)
		idx.end = off
	}
	return idx
}

// height returns the height of the archived tip, 0 for an empty archive.
func (a *archive) height() int { return len(a.hashes) }

// tip returns the hash of the archived tip, the genesis hash if empty.
func (a *archive) tip() chainhash.Hash {
	if len(a.hashes) == 0 {
		return *chaincfg.RegressionNetParams.GenesisHash
	}
	return a.hashes[len(a.hashes)-1]
}

// block returns the raw block at height h, 1 ≤ h ≤ height().
func (a *archive) block(h int) ([]byte, error) {
	if h < 1 || h > len(a.hashes) {
		return nil, fmt.Errorf("regtest: archive: no block at height %d", h)
	}
	end := a.size
	if h < len(a.offs) {
		end = a.offs[h]
	}
	rec := make([]byte, end-a.offs[h-1])
	if _, err := a.f.ReadAt(rec, a.offs[h-1]); err != nil {
		return nil, fmt.Errorf("regtest: archive: read height %d: %w", h, err)
	}
	return rec[recordHeaderLen:], nil
}

// truncate drops every block above height h and syncs the file.
func (a *archive) truncate(h int) error {
	if h >= len(a.hashes) {
		return nil
	}
	if h < 0 {
		return fmt.Errorf("regtest: archive: truncate to height %d", h)
	}
	off := a.offs[h]
	if err := a.f.Truncate(off); err != nil {
		return fmt.Errorf("regtest: archive: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("regtest: archive: %w", err)
	}
	for _, hash := range a.hashes[h:] {
		delete(a.heights, hash)
	}
	a.offs = a.offs[:h]
	a.hashes = a.hashes[:h]
	a.size = off
	return nil
}

// appendBlocks appends raw blocks, each of which must extend the one before
// it and the first the current tip, and syncs once for the whole batch. On
// failure the file is cut back to where it was, so the archive is unchanged.
func (a *archive) appendBlocks(blocks [][]byte) error {
	if len(blocks) == 0 {
		return nil
	}
	prev := a.tip()
	hashes := make([]chainhash.Hash, len(blocks))
	var buf bytes.Buffer
	for i, b := range blocks {
		if len(b) < wire.MaxBlockHeaderPayload || len(b) > maxRecordLen {
			return fmt.Errorf("regtest: archive: block of %d bytes", len(b))
		}
		var bh wire.BlockHeader
		if err := bh.Deserialize(bytes.NewReader(b)); err != nil {
			return fmt.Errorf("regtest: archive: %w", err)
		}
		if bh.PrevBlock != prev {
			return fmt.Errorf("regtest: archive: block %s does not extend %s", bh.BlockHash(), prev)
		}
		prev = bh.BlockHash()
		hashes[i] = prev
		var hdr [recordHeaderLen]byte
		binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(b)))
		binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(b, castagnoli))
		buf.Write(hdr[:])
		buf.Write(b)
	}

	if _, err := a.f.WriteAt(buf.Bytes(), a.size); err != nil {
		_ = a.f.Truncate(a.size)
		return fmt.Errorf("regtest: archive: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		_ = a.f.Truncate(a.size)
		return fmt.Errorf("regtest: archive: %w", err)
	}
	off := a.size
	for i, b := range blocks {
		a.offs = append(a.offs, off)
		a.hashes = append(a.hashes, hashes[i])
		a.heights[hashes[i]] = len(a.hashes)
		off += recordHeaderLen + int64(len(b))
	}
	a.size = off
	return nil
}

// close releases the lock and the file.
func (a *archive) close() error {
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("regtest: archive: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory so that a file created in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("regtest: sync %s: %w", dir, err)
	}
	return nil
}
