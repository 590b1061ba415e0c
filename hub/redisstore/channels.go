package redisstore

import (
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/internal/record"
)

// Channel keys, under the prefix: ch:<pending id hex> (hash: doc = record
// JSON with the state fields zero, op, dev, and the payment state seq, paid,
// owed, upd (unix ns), sig), chfund (hash outpoint -> pending id hex),
// chdev:<device id> (list of pending ids in creation order), chans (set of
// pending ids), hold:<id hex> (hash: doc = hold JSON with Captured zero,
// active, max, captured, chan), holds:<outpoint> (set of hold ids) and
// rc:<outpoint> (sorted set of receipts scored by seq; each member is the
// 8-byte big-endian seq followed by the receipt, so equal receipts of two
// seqs stay two members).
//
// The scripts compare amounts and seqs as Lua doubles, exact below 2^53;
// MaxAmount keeps every amount, and sums of two, below that.

// MaxAmount is the largest amount, balance or credit limit in msat the
// Redis store accepts (about 45,000 BTC): below it, the scripts' double
// arithmetic is exact. Larger values are refused with hub.ErrInvalid.
const MaxAmount msat.Amount = 1<<52 - 1

var (
	//go:embed putchannel.lua
	putChannelSource string
	//go:embed payment.lua
	paymentSource string
	//go:embed owed.lua
	owedSource string
	//go:embed puthold.lua
	putHoldSource string
)

var _ hub.ChannelStore = (*Store)(nil)

// channelScripts are the channel store's scripts, run with EVALSHA.
type channelScripts struct {
	putChannel, payment, owed, putHold *redis.Script
}

func newChannelScripts() channelScripts {
	return channelScripts{
		putChannel: redis.NewScript(putChannelSource),
		payment:    redis.NewScript(paymentSource),
		owed:       redis.NewScript(owedSource),
		putHold:    redis.NewScript(putHoldSource),
	}
}

func (cs channelScripts) all() []*redis.Script {
	return []*redis.Script{cs.putChannel, cs.payment, cs.owed, cs.putHold}
}

func (s *Store) chanKey(pidHex string) string  { return s.prefix + "ch:" + pidHex }
func (s *Store) devKey(deviceID string) string { return s.prefix + "chdev:" + deviceID }
func (s *Store) holdKey(id [16]byte) string    { return s.prefix + "hold:" + hex.EncodeToString(id[:]) }
func (s *Store) holdsKey(op string) string     { return s.prefix + "holds:" + op }
func (s *Store) receiptsKey(op string) string  { return s.prefix + "rc:" + op }
func (s *Store) fundKey() string               { return s.prefix + "chfund" }
func (s *Store) chansKey() string              { return s.prefix + "chans" }

func encodeTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func decodeTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n).UTC(), nil
}

func fmtMsat(m msat.Amount) string { return strconv.FormatUint(uint64(m), 10) }

func checkAmounts(what string, ms ...msat.Amount) error {
	for _, m := range ms {
		if m > MaxAmount {
			return fmt.Errorf("redisstore: %w: %s: %d msat is above the store's limit of %d", hub.ErrInvalid, what, m, MaxAmount)
		}
	}
	return nil
}

// scriptReply runs a script and returns its reply as strings.
func scriptReply(ctx context.Context, rdb *redis.Client, sc *redis.Script, keys []string, args ...any) ([]string, error) {
	res, err := sc.Run(ctx, rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, errors.New("empty script reply")
	}
	if res[0] == "fenced" {
		// fence.lua: the writer's fencing token is not the live lease's.
		return nil, fmt.Errorf("%w: the live lease's token is %s", hub.ErrFenced, at(res, 1))
	}
	return res, nil
}

// PutChannel creates or replaces a channel record. On replace it keeps the
// stored Seq, Paid, DeviceSig and Owed (only ApplyPayment and ApplyOwed move
// them) and the later of the two UpdatedAt times. It returns an error
// wrapping hub.ErrAlreadyExists when c.Funding is indexed to another
// channel.
func (s *Store) PutChannel(ctx context.Context, c hub.ChannelRecord) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	if err := checkAmounts("channel", c.Paid, c.Owed); err != nil {
		return err
	}
	pid := hex.EncodeToString(c.PendingID[:])
	static := c
	static.Seq, static.Paid, static.Owed, static.DeviceSig, static.UpdatedAt = 0, 0, 0, [64]byte{}, time.Time{}
	doc, err := json.Marshal(static)
	if err != nil {
		return fmt.Errorf("redisstore: encode channel %s: %w", pid, err)
	}
	op := ""
	if c.Funding != (wire.OutPoint{}) {
		op = c.Funding.String()
	}
	keys := []string{s.chanKey(pid), s.fundKey(), s.devKey(c.DeviceID), s.chansKey()}
	res, err := scriptReply(ctx, s.rdb, s.chs.putChannel, keys,
		pid, doc, op, c.DeviceID, strconv.FormatUint(c.Seq, 10), fmtMsat(c.Paid), fmtMsat(c.Owed),
		encodeTime(c.UpdatedAt), c.DeviceSig[:], s.prefix)
	if err != nil {
		return fmt.Errorf("redisstore: put channel %s: %w", pid, err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "exists":
		return fmt.Errorf("redisstore: put channel %s: %w: funding %s is channel %s", pid, hub.ErrAlreadyExists, op, at(res, 1))
	}
	return fmt.Errorf("redisstore: put channel %s: unexpected script reply %q", pid, res)
}

// chanFields are the hash fields a channel is read from, in this order.
var chanFields = []string{"doc", "seq", "paid", "owed", "upd", "sig"}

func decodeChannel(what string, vals []any) (hub.ChannelRecord, error) {
	var c hub.ChannelRecord
	if len(vals) != len(chanFields) || vals[0] == nil {
		return c, fmt.Errorf("%w: channel %s", hub.ErrNotFound, what)
	}
	str := make([]string, len(vals))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			return c, fmt.Errorf("redisstore: channel %s: field %s missing", what, chanFields[i])
		}
		str[i] = s
	}
	if err := record.DecodeChannel([]byte(str[0]), &c); err != nil {
		return c, fmt.Errorf("redisstore: decode channel %s: %w", what, err)
	}
	seq, err1 := strconv.ParseUint(str[1], 10, 64)
	paid, err2 := strconv.ParseUint(str[2], 10, 64)
	owed, err3 := strconv.ParseUint(str[3], 10, 64)
	upd, err4 := decodeTime(str[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil || len(str[5]) != len(c.DeviceSig) {
		return c, fmt.Errorf("redisstore: decode channel %s state: %v (signature %d bytes)", what, err, len(str[5]))
	}
	c.Seq, c.Paid, c.Owed, c.UpdatedAt = seq, msat.Amount(paid), msat.Amount(owed), upd
	copy(c.DeviceSig[:], str[5])
	return c, nil
}

func (s *Store) channelByHex(ctx context.Context, pid string) (hub.ChannelRecord, error) {
	vals, err := s.rdb.HMGet(ctx, s.chanKey(pid), chanFields...).Result()
	if err != nil {
		return hub.ChannelRecord{}, fmt.Errorf("redisstore: channel %s: %w", pid, err)
	}
	return decodeChannel(pid, vals)
}

// Listing reads: pipelines of channelChunk channels, up to channelReaders
// at once on their own connections, each decoded by its reader while the
// server answers the others. A listing of 100,000 channels in one
// pipeline left the client idle while the server answered and the server
// idle while the client decoded.
const (
	channelChunk   = 2_000
	channelReaders = 4
)

// channelsByHex reads many channels, in pid order.
func (s *Store) channelsByHex(ctx context.Context, pids []string) ([]hub.ChannelRecord, error) {
	if len(pids) == 0 {
		return nil, nil
	}
	out := make([]hub.ChannelRecord, len(pids))
	if len(pids) <= channelChunk {
		return out, s.readChannels(ctx, pids, out)
	}
	errs := make([]error, (len(pids)+channelChunk-1)/channelChunk)
	slots := make(chan struct{}, channelReaders)
	var wg sync.WaitGroup
	for c := range errs {
		lo, hi := c*channelChunk, min((c+1)*channelChunk, len(pids))
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			errs[c] = s.readChannels(ctx, pids[lo:hi], out[lo:hi])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readChannels reads the channels pids into out (as long) in one round
// trip.
func (s *Store) readChannels(ctx context.Context, pids []string, out []hub.ChannelRecord) error {
	cmds := make([]*redis.SliceCmd, len(pids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pid := range pids {
			cmds[i] = p.HMGet(ctx, s.chanKey(pid), chanFields...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: channels: %w", err)
	}
	for i, cmd := range cmds {
		c, err := decodeChannel(pids[i], cmd.Val())
		if err != nil {
			return err
		}
		out[i] = c
	}
	return nil
}

// ChannelByPending returns the channel offered under id, or
// hub.ErrNotFound.
func (s *Store) ChannelByPending(ctx context.Context, id [32]byte) (hub.ChannelRecord, error) {
	return s.channelByHex(ctx, hex.EncodeToString(id[:]))
}

// Channel returns the channel funded by op, or hub.ErrNotFound.
func (s *Store) Channel(ctx context.Context, op wire.OutPoint) (hub.ChannelRecord, error) {
	pid, err := s.rdb.HGet(ctx, s.fundKey(), op.String()).Result()
	if errors.Is(err, redis.Nil) {
		return hub.ChannelRecord{}, fmt.Errorf("%w: channel %s", hub.ErrNotFound, op)
	}
	if err != nil {
		return hub.ChannelRecord{}, fmt.Errorf("redisstore: funding index: %w", err)
	}
	return s.channelByHex(ctx, pid)
}

// ChannelsByDevice returns a device's channels in the order they were first
// stored.
func (s *Store) ChannelsByDevice(ctx context.Context, deviceID string) ([]hub.ChannelRecord, error) {
	pids, err := s.rdb.LRange(ctx, s.devKey(deviceID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: channels of %s: %w", deviceID, err)
	}
	return s.channelsByHex(ctx, pids)
}

// Channels returns every channel whose status is one of statuses, or every
// channel when none is given, ordered by pending id.
func (s *Store) Channels(ctx context.Context, statuses ...hub.ChannelStatus) ([]hub.ChannelRecord, error) {
	pids, err := s.rdb.SMembers(ctx, s.chansKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: channels: %w", err)
	}
	slices.Sort(pids)
	all, err := s.channelsByHex(ctx, pids)
	if err != nil || len(statuses) == 0 {
		return all, err
	}
	out := all[:0]
	for _, c := range all {
		if slices.Contains(statuses, c.Status) {
			out = append(out, c)
		}
	}
	return out, nil
}

// holdRefusal maps a script's hold reply to the hub's error.
func holdRefusal(res []string, id [16]byte) error {
	switch res[0] {
	case "nohold":
		return fmt.Errorf("%w: hold %x", hub.ErrNotFound, id)
	case "hold":
		return fmt.Errorf("%w: hold %x: %s", hub.ErrHoldConflict, id, at(res, 1))
	}
	return nil
}

// ApplyPayment writes u atomically with one script run, lowering the
// stored Owed by u.Amount inside it, and returns the new Owed; see
// hub.ChannelStore for the rule and the errors. It is durable when the server runs with
// appendfsync always (see the package comment), which also groups the
// fsyncs of concurrent clients.
func (s *Store) ApplyPayment(ctx context.Context, u hub.PaymentUpdate) (msat.Amount, error) {
	if err := u.Validate(); err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	if u.Seq > uint64(MaxAmount) {
		return 0, fmt.Errorf("redisstore: %w: payment seq %d is above the store's limit of %d", hub.ErrInvalid, u.Seq, MaxAmount)
	}
	if err := checkAmounts("payment", u.Paid, u.Amount); err != nil {
		return 0, err
	}
	op := u.Channel.String()
	member := make([]byte, 8+len(u.Receipt))
	binary.BigEndian.PutUint64(member, u.Seq)
	copy(member[8:], u.Receipt)
	holdKey, hasHold := s.fundKey(), "0"
	if u.HoldID != nil {
		holdKey, hasHold = s.holdKey(*u.HoldID), "1"
	}
	seq := strconv.FormatUint(u.Seq, 10)
	keys := []string{s.fundKey(), s.receiptsKey(op), holdKey}
	fenced := ""
	if f := u.Fence; f != nil {
		if err := f.Validate(); err != nil {
			return 0, fmt.Errorf("redisstore: %w", err)
		}
		for _, id := range f.IDs {
			keys = append(keys, s.chargeClaimKey(f.Provider, id))
		}
		fenced = f.Owner + "|" + f.Token
	}
	res, err := scriptReply(ctx, s.rdb, s.chs.payment, keys,
		op, seq, fmtMsat(u.Paid), encodeTime(u.Time), u.DeviceSig[:], member,
		fmtMsat(u.Amount), hasHold, s.prefix, fenced)
	if err != nil {
		return 0, fmt.Errorf("redisstore: apply payment %s seq %d: %w", op, u.Seq, err)
	}
	switch res[0] {
	case "ok":
		owed, perr := strconv.ParseUint(at(res, 1), 10, 64)
		if perr == nil {
			return msat.Amount(owed), nil
		}
		err = fmt.Errorf("owed in script reply %q: %w", res, perr)
	case "notfound":
		err = fmt.Errorf("%w: channel %s", hub.ErrNotFound, op)
	case "seq":
		err = fmt.Errorf("%w: channel %s is at seq %s, update is %d", hub.ErrSeqConflict, op, at(res, 1), u.Seq)
	case "superseded":
		err = fmt.Errorf("%w: %d charges of %s", hub.ErrChargeFenced, len(u.Fence.IDs), u.Fence.Provider)
	default:
		if err = holdRefusal(res, *u.HoldID); err == nil {
			err = fmt.Errorf("unexpected script reply %q", res)
		}
	}
	return 0, fmt.Errorf("redisstore: apply payment %s seq %d: %w", op, u.Seq, err)
}

// ApplyOwed raises a channel's Owed (and a hold's Captured) by amount; see
// hub.ChannelStore for the errors.
func (s *Store) ApplyOwed(ctx context.Context, op wire.OutPoint, holdID *[16]byte, amount, limit msat.Amount) error {
	if err := checkAmounts("owed", amount); err != nil {
		return err
	}
	// Owed is at most MaxAmount, so a larger limit never binds; clamping it
	// keeps the script's sum exact.
	limit = min(limit, MaxAmount)
	ops := op.String()
	holdKey, hasHold := s.fundKey(), "0"
	if holdID != nil {
		holdKey, hasHold = s.holdKey(*holdID), "1"
	}
	res, err := scriptReply(ctx, s.rdb, s.chs.owed, []string{s.fundKey(), holdKey},
		ops, fmtMsat(amount), fmtMsat(limit), hasHold, s.prefix)
	if err != nil {
		return fmt.Errorf("redisstore: apply owed %s: %w", ops, err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "notfound":
		err = fmt.Errorf("%w: channel %s", hub.ErrNotFound, ops)
	case "credit":
		err = fmt.Errorf("%w: channel %s owes %s msat, %d more passes the limit %d", hub.ErrCreditLimit, ops, at(res, 1), amount, limit)
	default:
		if err = holdRefusal(res, *holdID); err == nil {
			err = fmt.Errorf("unexpected script reply %q", res)
		}
	}
	return fmt.Errorf("redisstore: apply owed %s: %w", ops, err)
}

// Receipts returns up to limit receipts of the channel funded by op with
// Seq >= from, in seq order. A limit below one returns none.
func (s *Store) Receipts(ctx context.Context, op wire.OutPoint, from uint64, limit int) ([][]byte, error) {
	if limit <= 0 {
		return nil, nil
	}
	members, err := s.rdb.ZRangeByScore(ctx, s.receiptsKey(op.String()), &redis.ZRangeBy{
		Min:   strconv.FormatUint(from, 10),
		Max:   "+inf",
		Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: receipts of %s: %w", op, err)
	}
	out := make([][]byte, 0, len(members))
	for _, m := range members {
		if len(m) < 8 {
			return nil, fmt.Errorf("redisstore: receipt of %s is %d bytes", op, len(m))
		}
		out = append(out, []byte(m[8:]))
	}
	return out, nil
}

// PutHold creates or replaces a hold, keeping the stored Captured.
func (s *Store) PutHold(ctx context.Context, h hub.Hold) error {
	if err := h.Validate(); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	if err := checkAmounts("hold", h.Max, h.Captured); err != nil {
		return err
	}
	static := h
	static.Captured = 0
	doc, err := json.Marshal(static)
	if err != nil {
		return fmt.Errorf("redisstore: encode hold %x: %w", h.ID, err)
	}
	active := "0"
	if h.Status == hub.HoldActive {
		active = "1"
	}
	op := h.Channel.String()
	_, err = scriptReply(ctx, s.rdb, s.chs.putHold, []string{s.holdKey(h.ID), s.holdsKey(op)},
		hex.EncodeToString(h.ID[:]), doc, active, fmtMsat(h.Max), fmtMsat(h.Captured), op, s.prefix)
	if err != nil {
		return fmt.Errorf("redisstore: put hold %x: %w", h.ID, err)
	}
	return nil
}

var holdFields = []string{"doc", "captured"}

func decodeHold(id string, vals []any) (hub.Hold, error) {
	var h hub.Hold
	if len(vals) != 2 || vals[0] == nil {
		return h, fmt.Errorf("%w: hold %s", hub.ErrNotFound, id)
	}
	doc, _ := vals[0].(string)
	capStr, _ := vals[1].(string)
	if err := json.Unmarshal([]byte(doc), &h); err != nil {
		return h, fmt.Errorf("redisstore: decode hold %s: %w", id, err)
	}
	captured, err := strconv.ParseUint(capStr, 10, 64)
	if err != nil {
		return h, fmt.Errorf("redisstore: decode hold %s captured: %w", id, err)
	}
	h.Captured = msat.Amount(captured)
	return h, nil
}

// Hold returns a hold by id, or hub.ErrNotFound.
func (s *Store) Hold(ctx context.Context, id [16]byte) (hub.Hold, error) {
	vals, err := s.rdb.HMGet(ctx, s.holdKey(id), holdFields...).Result()
	if err != nil {
		return hub.Hold{}, fmt.Errorf("redisstore: hold %x: %w", id, err)
	}
	return decodeHold(hex.EncodeToString(id[:]), vals)
}

// Holds returns the holds of the channel funded by op, ordered by id.
func (s *Store) Holds(ctx context.Context, op wire.OutPoint) ([]hub.Hold, error) {
	ids, err := s.rdb.SMembers(ctx, s.holdsKey(op.String())).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: holds of %s: %w", op, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.prefix+"hold:"+id, holdFields...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: holds of %s: %w", op, err)
	}
	out := make([]hub.Hold, 0, len(ids))
	for i, cmd := range cmds {
		h, err := decodeHold(ids[i], cmd.Val())
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// ActiveHolds returns every active hold: the hold keys are walked with
// SCAN (10,000 keys a step), and each step's holds are read in one
// pipeline.
func (s *Store) ActiveHolds(ctx context.Context) ([]hub.Hold, error) {
	match := globEscape(s.prefix+"hold:") + "*"
	var out []hub.Hold
	var cursor uint64
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, match, 10_000).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore: active holds: %w", err)
		}
		cmds := make([]*redis.SliceCmd, len(keys))
		if len(keys) > 0 {
			_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, k := range keys {
					cmds[i] = p.HMGet(ctx, k, "doc", "captured", "active")
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("redisstore: active holds: %w", err)
			}
		}
		for i, cmd := range cmds {
			v := cmd.Val()
			if len(v) != 3 || v[2] != "1" {
				continue // released or expired, or gone since the scan
			}
			id := strings.TrimPrefix(keys[i], s.prefix+"hold:")
			h, err := decodeHold(id, v[:2])
			if err != nil {
				return nil, err
			}
			if h.Status == hub.HoldActive {
				out = append(out, h)
			}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// globEscape quotes the characters SCAN's MATCH pattern gives a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
