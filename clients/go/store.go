package m2mclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/lightningnetwork/lnd/lnwire"

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
	// StatusClosing: a cooperative close transaction was signed.
	StatusClosing ChannelStatus = "closing"
	// StatusClosed: the hub reported the close broadcast.
	StatusClosed ChannelStatus = "closed"
)

// PendingPayment is a state the device signed and sent but has no PayAck
// for. The hub may hold its signature, so the device keeps it until it knows
// the outcome: the next Pay on the channel resends it first.
type PendingPayment struct {
	Seq    uint64              `json:"seq"`
	Paid   lnwire.MilliSatoshi `json:"paid_msat"`
	Amount lnwire.MilliSatoshi `json:"amount_msat"`
	Payee  string              `json:"payee"`
	Memo   string              `json:"memo,omitempty"`
	HoldID *[16]byte           `json:"hold_id,omitempty"`
	ReqID  *uint64             `json:"req_id,omitempty"`
	Sig    [64]byte            `json:"sig"`
}

// AuthorizedHold is a hold the device signed: the provider may capture up
// to Max until Expires, each capture still paid by a signed state.
type AuthorizedHold struct {
	ID       [16]byte            `json:"id"`
	Provider string              `json:"provider"`
	Max      lnwire.MilliSatoshi `json:"max_msat"`
	Captured lnwire.MilliSatoshi `json:"captured_msat"`
	Expires  time.Time           `json:"expires"`
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
	Paid lnwire.MilliSatoshi
	Sig  [64]byte

	Pending *PendingPayment
	Holds   []AuthorizedHold
	CloseTx *chainhash.Hash
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
	return &d
}

// ChannelStore persists the device's channels and receipts. Save must be
// durable when it returns: the device saves a signed state before sending
// it, so a crash never loses a signature the hub may hold.
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

// FileStore is the default ChannelStore: one JSON file per channel in a
// directory, replaced atomically (temporary file, fsync, rename, directory
// fsync), and an append-only receipts file per channel. Files are 0600: the
// records name the device's channels and amounts.
type FileStore struct {
	dir string
	mu  sync.Mutex // serialises writers, so appends never interleave
}

var _ ChannelStore = (*FileStore)(nil)

// NewFileStore returns a FileStore in dir, creating it (0700) if needed.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("m2mclient: store dir: %w", err)
	}
	return &FileStore{dir: dir}, nil
}

// fileState is ChannelState as stored: hex strings for keys and ids.
type fileState struct {
	PendingID string              `json:"pending_id"`
	HubKey    string              `json:"hub_chan_key"`
	Capacity  btcutil.Amount      `json:"capacity_sat"`
	Expiry    uint32              `json:"expiry_height"`
	MinDepth  uint32              `json:"min_depth"`
	Funding   string              `json:"funding,omitempty"`
	Status    ChannelStatus       `json:"status"`
	Seq       uint64              `json:"seq"`
	Paid      lnwire.MilliSatoshi `json:"paid_msat"`
	Sig       string              `json:"sig,omitempty"`
	Pending   *PendingPayment     `json:"pending,omitempty"`
	Holds     []AuthorizedHold    `json:"holds,omitempty"`
	CloseTx   string              `json:"close_txid,omitempty"`
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

// Save writes c atomically: a reader (or a restart after a crash) sees
// either the old record or the new one, never a torn file.
func (s *FileStore) Save(ctx context.Context, c ChannelState) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(toFile(c), "", "  ")
	if err != nil {
		return fmt.Errorf("m2mclient: encode channel: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := filepath.Join(s.dir, hex.EncodeToString(c.PendingID[:])+".json")
	if err := writeFileAtomic(name, append(b, '\n')); err != nil {
		return fmt.Errorf("m2mclient: save channel: %w", err)
	}
	return nil
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

// Load reads every channel record. Leftover temporary files of an
// interrupted Save are ignored.
func (s *FileStore) Load(ctx context.Context) ([]ChannelState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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
		c, err := fromFile(f)
		if err != nil {
			return nil, fmt.Errorf("m2mclient: load %s: %w", e.Name(), err)
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
	b, err := r.MarshalBinary()
	if err != nil {
		return fmt.Errorf("m2mclient: encode receipt: %w", err)
	}
	line := hex.EncodeToString(b) + "\n"
	s.mu.Lock()
	defer s.mu.Unlock()
	name := s.receiptsPath(chanID)
	_, statErr := os.Stat(name)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("m2mclient: append receipt: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		_ = f.Close()
		return fmt.Errorf("m2mclient: append receipt: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("m2mclient: append receipt: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("m2mclient: append receipt: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		return syncDir(s.dir)
	}
	return nil
}

// Receipts reads a channel's receipts. A last line cut short by a crash
// during AppendReceipt (no newline) is ignored: that receipt was never
// reported as stored.
func (s *FileStore) Receipts(ctx context.Context, chanID wire.OutPoint) ([]*channel.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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
		raw, err := hex.DecodeString(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("m2mclient: receipts line %d: %w", n, err)
		}
		r := new(channel.Receipt)
		if err := r.UnmarshalBinary(raw); err != nil {
			return nil, fmt.Errorf("m2mclient: receipts line %d: %w", n, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}
