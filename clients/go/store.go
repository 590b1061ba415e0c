package m2mclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
)

// ErrUnknownChannel means the device has no record of the channel named.
var ErrUnknownChannel = errors.New("m2mclient: unknown channel")

// ChannelStatus is where a channel is in its life, as the device knows it.
type ChannelStatus string

// Channel statuses on the device side. They only move forward.
const (
	// StatusOffered: the hub offered the channel; its address may be
	// funded. The record exists from the offer on, before the caller
	// sees the address, because the device needs the offer's keys to
	// refund a funded output even if it crashes right after paying.
	StatusOffered ChannelStatus = "offered"
	// StatusFunded: the device told the hub about the funding output and
	// waits for it to confirm.
	StatusFunded ChannelStatus = "funded"
	// StatusReady: the hub accepts payments on the channel.
	StatusReady ChannelStatus = "ready"
	// StatusClosing: the device signed its part of a cooperative close;
	// it signs no payment on the channel until the hub reports the close
	// (StatusClosed) or answers that it no longer knows the attempt (back
	// to StatusReady).
	StatusClosing ChannelStatus = "closing"
	// StatusClosed: the hub reported the close broadcast.
	StatusClosed ChannelStatus = "closed"
)

// PendingPayment is a state the device signed and sent but has no PayAck
// for. The hub may hold its signature, so the device keeps it until it knows
// the outcome: the next Pay on the channel resends it first.
type PendingPayment struct {
	Seq    uint64      `json:"seq"`
	Paid   msat.Amount `json:"paid_msat"`
	Amount msat.Amount `json:"amount_msat"`
	Payee  string      `json:"payee"`
	Memo   string      `json:"memo,omitempty"`
	HoldID *[16]byte   `json:"hold_id,omitempty"`
	ReqID  *uint64     `json:"req_id,omitempty"`
	Sig    [64]byte    `json:"sig"`
}

// AuthorizedHold is a hold the device signed: the provider may capture up
// to Max until Expires, each capture still paid by a signed state.
type AuthorizedHold struct {
	ID       [16]byte    `json:"id"`
	Provider string      `json:"provider"`
	Max      msat.Amount `json:"max_msat"`
	Captured msat.Amount `json:"captured_msat"`
	Expires  time.Time   `json:"expires"`
}

// ChannelState is the device's durable record of one channel: the offer's
// terms (enough to rebuild the output and refund it alone), the latest state
// the hub acknowledged, a pending one, and the holds it signed.
type ChannelState struct {
	// PendingID is the hub's name for the offer; it keys the record.
	PendingID [32]byte
	// HubKey is the hub's per-channel key (the pinned identity key
	// tweaked by PendingID), checked when the offer arrived.
	HubKey   *btcec.PublicKey
	Capacity btcutil.Amount
	Expiry   uint32
	MinDepth uint32
	// Funding is the channel output, zero until the device named it.
	Funding wire.OutPoint
	Status  ChannelStatus

	// Seq and Paid are the latest acknowledged state; Sig is the
	// device's claim signature for it.
	Seq  uint64
	Paid msat.Amount
	Sig  [64]byte

	Pending *PendingPayment
	Holds   []AuthorizedHold
	CloseTx *chainhash.Hash
	// CloseSig is the device's MuSig2 partial signature of the
	// cooperative close CloseTx names, kept while the channel is closing
	// so the device can send its CloseSign again after a lost connection
	// (docs/protocol.md §2.7). It is no secret: the nonce it used is
	// spent.
	CloseSig *[32]byte
	// CloseRaw is that close transaction as the device signed it,
	// without its witness: the hub signs last and completes it. Its txid
	// is CloseTx (a segwit txid does not cover the witness).
	CloseRaw []byte
}

// Params returns the channel's on-chain terms for deviceKey.
func (c *ChannelState) Params(deviceKey *btcec.PublicKey) channel.Params {
	return channel.Params{DeviceKey: deviceKey, HubKey: c.HubKey, Capacity: c.Capacity, Expiry: c.Expiry}
}

// clone returns a deep copy, so records handed out cannot alias the
// device's own.
func (c *ChannelState) clone() *ChannelState {
	d := *c
	if c.Pending != nil {
		p := *c.Pending
		d.Pending = &p
	}
	d.Holds = append([]AuthorizedHold(nil), c.Holds...)
	if c.CloseTx != nil {
		h := *c.CloseTx
		d.CloseTx = &h
	}
	if c.CloseSig != nil {
		p := *c.CloseSig
		d.CloseSig = &p
	}
	d.CloseRaw = bytes.Clone(c.CloseRaw)
	return &d
}

// ChannelStore persists the device's channels and receipts. Save must be
// durable when it returns: the device saves a signed state before sending
// it, so a crash never loses a signature the hub may hold (a store that is
// also a DeferredSaver lets that one write wait for the next fsync).
type ChannelStore interface {
	// Save creates or replaces the record keyed by c.PendingID.
	Save(ctx context.Context, c ChannelState) error
	// Load returns every stored channel, in no particular order.
	Load(ctx context.Context) ([]ChannelState, error)
	// AppendReceipt durably adds a hub-signed receipt to a channel's
	// history.
	AppendReceipt(ctx context.Context, chanID wire.OutPoint, r *channel.Receipt) error
	// Receipts returns a channel's receipts in the order appended; none
	// (and no error) for a channel without any.
	Receipts(ctx context.Context, chanID wire.OutPoint) ([]*channel.Receipt, error)
}

// ReceiptSaver is implemented by a ChannelStore that can record an
// acknowledged state together with its receipt in one durable write. The
// device uses it, when present, instead of Save followed by AppendReceipt,
// so that a payment costs one write (and one fsync) after the PayAck
// instead of two.
type ReceiptSaver interface {
	// SaveWithReceipt is Save(c) and AppendReceipt(c.Funding, r), made
	// durable together.
	SaveWithReceipt(ctx context.Context, c ChannelState, r *channel.Receipt) error
}

// DeferredSaver is implemented by a ChannelStore that can split a Save in
// two: the write, after which this process and a restart of it (kill -9
// included) read the new record, and its fsync, after which a power loss
// or an operating system crash does too. The device saves a pending
// payment this way and sends it to the hub without waiting for an fsync;
// on the PayAck the acknowledged state's durable write covers it, so the
// pending state costs no fsync of its own (see FileStore for why that is
// safe).
type DeferredSaver interface {
	// SaveDeferred writes c as Save does but may return before the write
	// is durable. The caller must call done exactly once: done(true)
	// makes the write durable (or reports why it is not), done(false)
	// only releases it, when a later Save or SaveWithReceipt of the same
	// channel that returned nil made it durable already.
	SaveDeferred(ctx context.Context, c ChannelState) (done func(sync bool) error, err error)
}

// FileStore is the default ChannelStore. Each channel has a base record
// (<pending id>.json, replaced atomically: temporary file, fsync, rename,
// directory fsync), an append-only journal of later records
// (<pending id>.journal) and an append-only receipts file. Files are 0600:
// the records name the device's channels and amounts. A channel's journal
// stays open for appending once written; Close releases them.
//
// Why a journal. A payment writes the channel twice: the signed state as
// pending before it is sent, and the acknowledged state with its receipt
// after the PayAck. Replacing a file durably costs two fsyncs (the file,
// then its directory, because an unsynced rename can be undone by a crash),
// and the receipt append a third, so a payment used to cost five. Appending
// a record to a journal that already exists and fsyncing it costs one: the
// data and the file size reach the disk together, and no directory entry
// changes. A payment now costs one fsync on the device, after the PayAck:
//
//   - The pending state is written (SaveDeferred) before it is sent, so a
//     process killed at any point, kill -9 included, finds it on restart:
//     the write is in the operating system's cache before a byte of the
//     Pay leaves. It is not fsynced before the send. Only a power loss or
//     an operating system crash between the send and the next fsync of the
//     journal can lose it, and that loss is the one docs/protocol.md §4
//     recovers from: the hub shows the device the latest state it holds,
//     with the device's own signature over it, and the device adopts it. A
//     device that starts from its store asks for that state (ChannelSync)
//     before it signs anything on a channel (Device.pay), so it cannot sign
//     a second state under a seq the hub already holds, and a state it lost
//     but the hub took is adopted, not mistaken for a new payment with the
//     same seq and paid. When no PayAck comes (a refusal, a timeout, a lost
//     connection) the pending state is fsynced before Pay returns, so a
//     payment left pending is durable as before.
//   - The acknowledged state could be recovered from the hub the same way,
//     but the receipt could not: the hub hands it out only in the PayAck.
//     Pay returns the receipt as stored, so the record of the
//     acknowledgement is synced, state and receipt in the same write. It is
//     appended to the same journal after the pending record, so its fsync
//     makes both durable: the two writes of a payment share one fsync.
//
// A journal is compacted once it passes journalCompactSize: its receipts are
// appended (and synced) to the receipts file, the latest state becomes the
// new base record, and the journal is emptied. A crash between those steps
// leaves receipts in both places, which Receipts reads once (by seq), and a
// journal whose records are no newer than the base, which Load reads
// harmlessly. A torn record at a journal's end (a crash during an append
// that was never reported as stored) fails its checksum and is cut off
// before the next append.
type FileStore struct {
	dir string
	mu  sync.Mutex // serialises writers, so appends never interleave
	// journals holds, per pending id (hex), the length of the journal's
	// valid prefix as checked by this process, and the number of bytes
	// appended since the base record was written.
	journals map[string]*journalInfo
	// funding maps channel outpoints to pending ids (hex), so Receipts can
	// find a channel's journal.
	funding map[wire.OutPoint]string
}

// journalInfo is what a FileStore knows of one channel's journal.
type journalInfo struct {
	size int64 // bytes of whole, checked records
	// f is the journal open for appending, kept from the first append on:
	// opening, stat-ing and closing it on every payment cost about a
	// quarter of the store's CPU. A failed append closes it and forgets
	// the journal, so the next save reads it again and cuts off what the
	// failed write left.
	f *os.File
}

// journalCompactSize is the journal length past which it is folded into
// the base record: about 300 payments, so compaction's four extra fsyncs
// cost about one hundredth of an fsync per payment.
const journalCompactSize = 256 << 10

var (
	_ ChannelStore  = (*FileStore)(nil)
	_ ReceiptSaver  = (*FileStore)(nil)
	_ DeferredSaver = (*FileStore)(nil)
)

// NewFileStore returns a FileStore in dir, creating it (0700) if needed.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("m2mclient: store dir: %w", err)
	}
	return &FileStore{dir: dir, journals: make(map[string]*journalInfo), funding: make(map[wire.OutPoint]string)}, nil
}

// fileState is ChannelState as stored: hex strings for keys and ids.
type fileState struct {
	PendingID string           `json:"pending_id"`
	HubKey    string           `json:"hub_chan_key"`
	Capacity  btcutil.Amount   `json:"capacity_sat"`
	Expiry    uint32           `json:"expiry_height"`
	MinDepth  uint32           `json:"min_depth"`
	Funding   string           `json:"funding,omitempty"`
	Status    ChannelStatus    `json:"status"`
	Seq       uint64           `json:"seq"`
	Paid      msat.Amount      `json:"paid_msat"`
	Sig       string           `json:"sig,omitempty"`
	Pending   *PendingPayment  `json:"pending,omitempty"`
	Holds     []AuthorizedHold `json:"holds,omitempty"`
	CloseTx   string           `json:"close_txid,omitempty"`
	CloseSig  string           `json:"close_partial_sig,omitempty"`
	CloseRaw  string           `json:"close_tx,omitempty"`
}

func toFile(c ChannelState) fileState {
	f := fileState{
		PendingID: hex.EncodeToString(c.PendingID[:]),
		Capacity:  c.Capacity, Expiry: c.Expiry, MinDepth: c.MinDepth,
		Status: c.Status, Seq: c.Seq, Paid: c.Paid,
		Pending: c.Pending, Holds: c.Holds,
	}
	if c.HubKey != nil {
		f.HubKey = hex.EncodeToString(c.HubKey.SerializeCompressed())
	}
	if c.Funding != (wire.OutPoint{}) {
		f.Funding = c.Funding.String()
	}
	if c.Seq > 0 {
		f.Sig = hex.EncodeToString(c.Sig[:])
	}
	if c.CloseTx != nil {
		f.CloseTx = c.CloseTx.String()
	}
	if c.CloseSig != nil {
		f.CloseSig = hex.EncodeToString(c.CloseSig[:])
	}
	f.CloseRaw = hex.EncodeToString(c.CloseRaw)
	return f
}

func fromFile(f fileState) (ChannelState, error) {
	c := ChannelState{
		Capacity: f.Capacity, Expiry: f.Expiry, MinDepth: f.MinDepth,
		Status: f.Status, Seq: f.Seq, Paid: f.Paid, Pending: f.Pending, Holds: f.Holds,
	}
	if err := decodeHex(c.PendingID[:], f.PendingID); err != nil {
		return c, fmt.Errorf("pending_id: %w", err)
	}
	kb, err := hex.DecodeString(f.HubKey)
	if err != nil {
		return c, fmt.Errorf("hub_chan_key: %w", err)
	}
	if c.HubKey, err = btcec.ParsePubKey(kb); err != nil {
		return c, fmt.Errorf("hub_chan_key: %w", err)
	}
	if f.Funding != "" {
		op, err := parseOutPoint(f.Funding)
		if err != nil {
			return c, fmt.Errorf("funding: %w", err)
		}
		c.Funding = op
	}
	if f.Sig != "" {
		if err := decodeHex(c.Sig[:], f.Sig); err != nil {
			return c, fmt.Errorf("sig: %w", err)
		}
	}
	if f.CloseTx != "" {
		if c.CloseTx, err = chainhash.NewHashFromStr(f.CloseTx); err != nil {
			return c, fmt.Errorf("close_txid: %w", err)
		}
	}
	if f.CloseSig != "" {
		var sig [32]byte
		if err := decodeHex(sig[:], f.CloseSig); err != nil {
			return c, fmt.Errorf("close_partial_sig: %w", err)
		}
		c.CloseSig = &sig
	}
	if f.CloseRaw != "" {
		if c.CloseRaw, err = hex.DecodeString(f.CloseRaw); err != nil {
			return c, fmt.Errorf("close_tx: %w", err)
		}
	}
	return c, nil
}

func decodeHex(dst []byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// parseOutPoint parses "txid:vout" as wire.OutPoint.String writes it.
func parseOutPoint(s string) (wire.OutPoint, error) {
	op, err := wire.NewOutPointFromString(s)
	if err != nil {
		return wire.OutPoint{}, err
	}
	return *op, nil
}

// Save records c durably: a reader (or a restart after a crash) sees
// either the old record or the new one, never a torn one.
func (s *FileStore) Save(ctx context.Context, c ChannelState) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.save(c, nil, false); err != nil {
		return fmt.Errorf("m2mclient: save channel: %w", err)
	}
	return nil
}

// SaveDeferred writes c as Save does, without the fsync when the write is
// an append to an existing journal; see DeferredSaver. The first record of
// a channel, a new journal and a compaction are made durable at once.
func (s *FileStore) SaveDeferred(ctx context.Context, c ChannelState) (func(sync bool) error, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.save(c, nil, true)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: save channel: %w", err)
	}
	return func(sync bool) error {
		if f == nil || !sync {
			return nil
		}
		// The journal stays open for the next append; a sync that finds
		// it closed by a failed append since reports the error.
		if err := f.Sync(); err != nil {
			return fmt.Errorf("m2mclient: save channel: %w", err)
		}
		return nil
	}, nil
}

// SaveWithReceipt records c and r in one durable write; see ReceiptSaver.
func (s *FileStore) SaveWithReceipt(ctx context.Context, c ChannelState, r *channel.Receipt) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.save(c, r, false); err != nil {
		return fmt.Errorf("m2mclient: save channel: %w", err)
	}
	return nil
}

// Close closes the journals a FileStore keeps open for appending. A save
// after Close opens them again.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for pid, j := range s.journals {
		if j.f != nil {
			errs = append(errs, j.f.Close())
		}
		delete(s.journals, pid)
	}
	return errors.Join(errs...)
}

// journalRecord is one line of a journal: a whole channel record and, for
// an acknowledged payment, its receipt (hex).
type journalRecord struct {
	State   fileState `json:"state"`
	Receipt string    `json:"receipt,omitempty"`
}

func (s *FileStore) basePath(pid string) string    { return filepath.Join(s.dir, pid+".json") }
func (s *FileStore) journalPath(pid string) string { return filepath.Join(s.dir, pid+".journal") }

// save writes c (and r) as the channel's newest record: the base record for
// a channel not stored before, a journal append otherwise. With deferred
// set, an append to an existing journal is written but not synced, and the
// journal is returned open for the caller to sync and close; otherwise (and
// whenever the record was made durable at once) the file returned is nil.
func (s *FileStore) save(c ChannelState, r *channel.Receipt, deferred bool) (*os.File, error) {
	rec := journalRecord{State: toFile(c)}
	if r != nil {
		b, err := r.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encode receipt: %w", err)
		}
		rec.Receipt = hex.EncodeToString(b)
	}
	pid := rec.State.PendingID
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Funding != (wire.OutPoint{}) {
		s.funding[c.Funding] = pid
	}
	if s.journals[pid] != nil {
		// The journal was read, so the base record exists: it is written
		// before the first journal record and never removed.
	} else if _, err := os.Stat(s.basePath(pid)); errors.Is(err, fs.ErrNotExist) {
		if err := s.writeBase(rec.State); err != nil {
			return nil, err
		}
		if r != nil {
			return nil, s.appendReceiptLocked(c.Funding, r)
		}
		return nil, nil
	}
	j, err := s.journal(pid)
	if err != nil {
		return nil, err
	}
	line, err := encodeJournalLine(rec)
	if err != nil {
		return nil, err
	}
	// A new journal's name must be durable too, and a compaction
	// rewrites the base record: neither is deferred.
	deferred = deferred && j.size > 0 && j.size+int64(len(line)) < journalCompactSize
	f, err := s.appendJournal(pid, j, line, !deferred)
	if err != nil {
		return nil, err
	}
	j.size += int64(len(line))
	if j.size >= journalCompactSize {
		return nil, s.compact(pid, j, rec.State)
	}
	return f, nil
}

// writeBase replaces a channel's base record.
func (s *FileStore) writeBase(f fileState) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode channel: %w", err)
	}
	return writeFileAtomic(s.basePath(f.PendingID), append(b, '\n'))
}

// encodeJournalLine frames rec as "crc32c-hex json\n", so a record torn by
// a crash is recognised even if its last byte happens to be a newline.
func encodeJournalLine(rec journalRecord) ([]byte, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode channel: %w", err)
	}
	line := make([]byte, 0, 9+len(b)+1)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(b, castagnoli))
	line = append(line, b...)
	return append(line, '\n'), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readJournal returns the records of a journal's valid prefix and that
// prefix's length. It stops at the first record that is cut short or fails
// its checksum: records are appended and synced one at a time, so only the
// last can be torn.
func readJournal(name string) ([]journalRecord, int64, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	recs, good, err := parseJournal(b)
	if err != nil {
		return nil, 0, fmt.Errorf("journal %s: %w", filepath.Base(name), err)
	}
	return recs, good, nil
}

// parseJournal is readJournal on the journal's bytes.
func parseJournal(b []byte) ([]journalRecord, int64, error) {
	var (
		recs []journalRecord
		good int64
	)
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 9 || b[8] != ' ' {
			break
		}
		var sum uint32
		if _, err := fmt.Sscanf(string(b[:8]), "%08x", &sum); err != nil || crc32.Checksum(b[9:nl], castagnoli) != sum {
			break
		}
		var rec journalRecord
		if err := json.Unmarshal(b[9:nl], &rec); err != nil {
			// The checksum matched, so this is not a torn write.
			return nil, 0, err
		}
		recs = append(recs, rec)
		good += int64(nl + 1)
		b = b[nl+1:]
	}
	return recs, good, nil
}

// journal returns what this process knows of pid's journal, checking it
// (and cutting off a torn tail, so the next append follows a whole record)
// the first time.
func (s *FileStore) journal(pid string) (*journalInfo, error) {
	if j := s.journals[pid]; j != nil {
		return j, nil
	}
	name := s.journalPath(pid)
	_, good, err := readJournal(name)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(name); err == nil && fi.Size() > good {
		if err := truncateSync(name, good); err != nil {
			return nil, err
		}
	}
	j := &journalInfo{size: good}
	s.journals[pid] = j
	return j, nil
}

// compact folds pid's journal into its base record; see FileStore.
func (s *FileStore) compact(pid string, j *journalInfo, latest fileState) error {
	recs, _, err := readJournal(s.journalPath(pid))
	if err != nil {
		return err
	}
	var lines []byte
	var chanID wire.OutPoint
	for _, rec := range recs {
		if rec.Receipt == "" {
			continue
		}
		if chanID, err = parseOutPoint(rec.State.Funding); err != nil {
			return fmt.Errorf("journal %s: funding: %w", pid, err)
		}
		lines = append(lines, rec.Receipt+"\n"...)
	}
	if len(lines) > 0 {
		if err := s.appendReceiptLines(chanID, lines); err != nil {
			return err
		}
	}
	if err := s.writeBase(latest); err != nil {
		return err
	}
	if err := truncateSync(s.journalPath(pid), 0); err != nil {
		return err
	}
	j.size = 0
	return nil
}

// appendSync appends data to name and fsyncs it. When the file may be new
// (created is true) the directory is synced too, so the file's name is as
// durable as its content.
func appendSync(name string, data []byte, created bool, dir string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if created {
		return syncDir(dir)
	}
	return nil
}

// appendJournal appends line to pid's journal through the file kept open
// in j, and fsyncs it when sync is set; a journal created here has its
// name synced too. It returns the file, for a deferred sync. On an error
// the file is closed and the journal forgotten (see journalInfo).
func (s *FileStore) appendJournal(pid string, j *journalInfo, line []byte, sync bool) (*os.File, error) {
	fail := func(err error) (*os.File, error) {
		if j.f != nil {
			_ = j.f.Close()
		}
		delete(s.journals, pid)
		return nil, err
	}
	created := false
	if j.f == nil {
		f, err := os.OpenFile(s.journalPath(pid), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fail(err)
		}
		j.f, created = f, j.size == 0
	}
	if _, err := j.f.Write(line); err != nil {
		return fail(err)
	}
	if sync {
		if err := j.f.Sync(); err != nil {
			return fail(err)
		}
	}
	if created {
		if err := syncDir(s.dir); err != nil {
			return fail(err)
		}
	}
	return j.f, nil
}

// truncateSync cuts name to size bytes durably.
func truncateSync(name string, size int64) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// writeFileAtomic replaces name with data durably.
func writeFileAtomic(name string, data []byte) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, ".tmp-*") // created 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), name); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or file creation in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads every channel record: the base record, superseded by the last
// whole record of its journal if it has one. Leftover temporary files of an
// interrupted base replacement are ignored.
func (s *FileStore) Load(ctx context.Context) ([]ChannelState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked()
}

func (s *FileStore) loadLocked() ([]ChannelState, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("m2mclient: load channels: %w", err)
	}
	var out []ChannelState
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("m2mclient: load %s: %w", e.Name(), err)
		}
		var f fileState
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("m2mclient: load %s: %w", e.Name(), err)
		}
		recs, _, err := readJournal(s.journalPath(strings.TrimSuffix(e.Name(), ".json")))
		if err != nil {
			return nil, fmt.Errorf("m2mclient: load %s: %w", e.Name(), err)
		}
		if len(recs) > 0 {
			f = recs[len(recs)-1].State
		}
		c, err := fromFile(f)
		if err != nil {
			return nil, fmt.Errorf("m2mclient: load %s: %w", e.Name(), err)
		}
		if c.Funding != (wire.OutPoint{}) {
			s.funding[c.Funding] = f.PendingID
		}
		out = append(out, c)
	}
	return out, nil
}

func (s *FileStore) receiptsPath(chanID wire.OutPoint) string {
	return filepath.Join(s.dir, fmt.Sprintf("%s_%d.receipts", chanID.Hash, chanID.Index))
}

// AppendReceipt appends r, hex-encoded on its own line, and fsyncs.
func (s *FileStore) AppendReceipt(ctx context.Context, chanID wire.OutPoint, r *channel.Receipt) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendReceiptLocked(chanID, r)
}

func (s *FileStore) appendReceiptLocked(chanID wire.OutPoint, r *channel.Receipt) error {
	b, err := r.MarshalBinary()
	if err != nil {
		return fmt.Errorf("m2mclient: encode receipt: %w", err)
	}
	return s.appendReceiptLines(chanID, []byte(hex.EncodeToString(b)+"\n"))
}

// appendReceiptLines appends whole lines to a channel's receipts file and
// fsyncs it. A torn last line left by a crash is cut off first, so the new
// lines do not continue it.
func (s *FileStore) appendReceiptLines(chanID wire.OutPoint, lines []byte) error {
	name := s.receiptsPath(chanID)
	fi, statErr := os.Stat(name)
	if statErr == nil && fi.Size() > 0 {
		b, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("m2mclient: append receipt: %w", err)
		}
		if i := bytes.LastIndexByte(b, '\n'); i != len(b)-1 {
			if err := truncateSync(name, int64(i+1)); err != nil {
				return fmt.Errorf("m2mclient: append receipt: %w", err)
			}
		}
	}
	if err := appendSync(name, lines, errors.Is(statErr, fs.ErrNotExist), s.dir); err != nil {
		return fmt.Errorf("m2mclient: append receipt: %w", err)
	}
	return nil
}

// Receipts reads a channel's receipts: those in its receipts file, then
// those still in its journal. A last line cut short by a crash during an
// append (no newline) is ignored: that receipt was never reported as
// stored.
func (s *FileStore) Receipts(ctx context.Context, chanID wire.OutPoint) ([]*channel.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.fileReceipts(chanID)
	if err != nil {
		return nil, err
	}
	pid, ok := s.funding[chanID]
	if !ok {
		if _, err := s.loadLocked(); err != nil {
			return nil, err
		}
		if pid, ok = s.funding[chanID]; !ok {
			return out, nil
		}
	}
	recs, _, err := readJournal(s.journalPath(pid))
	if err != nil {
		return nil, fmt.Errorf("m2mclient: receipts: %w", err)
	}
	// After a crash during compaction a receipt may be in both places.
	seen := make(map[uint64]bool, len(out))
	for _, r := range out {
		seen[r.Seq] = true
	}
	for _, rec := range recs {
		if rec.Receipt == "" {
			continue
		}
		r, err := decodeReceipt(rec.Receipt)
		if err != nil {
			return nil, fmt.Errorf("m2mclient: receipts in journal %s: %w", pid, err)
		}
		if r.Channel != chanID || seen[r.Seq] {
			continue
		}
		seen[r.Seq] = true
		out = append(out, r)
	}
	return out, nil
}

func (s *FileStore) fileReceipts(chanID wire.OutPoint) ([]*channel.Receipt, error) {
	b, err := os.ReadFile(s.receiptsPath(chanID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("m2mclient: receipts: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i != len(b)-1 {
		b = b[:i+1] // drop a torn tail
	}
	var out []*channel.Receipt
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		r, err := decodeReceipt(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("m2mclient: receipts line %d: %w", n, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

func decodeReceipt(h string) (*channel.Receipt, error) {
	raw, err := hex.DecodeString(h)
	if err != nil {
		return nil, err
	}
	r := new(channel.Receipt)
	if err := r.UnmarshalBinary(raw); err != nil {
		return nil, err
	}
	return r, nil
}
