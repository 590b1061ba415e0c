package redisstore

import (
	"context"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// Settlement keys, under the prefix: epochs (sorted set of epoch JSON
// scored by number, so the highest is the open epoch), epochopen (the open
// epoch's number, which the cut script compares), runs (hash run key ->
// run JSON) and runidx (sorted set of run keys, all scored 0 so they sort
// by bytes). A run key is the epoch number in 16 hex digits then the
// attempt in 8, so the last key with an epoch's prefix is its latest
// attempt, and a reverse scan meets every epoch's latest attempt first.
//
// Epoch numbers are sorted-set scores, exact as doubles below 2^53;
// maxEpoch keeps them there.

const maxEpoch = 1<<52 - 1

var (
	//go:embed cutepoch.lua
	cutEpochSource string
	//go:embed rollover.lua
	rolloverSource string
)

// The settlement scripts. Like the metering scripts, a redis.Script holds
// only its source and hash and is never changed, so sharing one between
// stores shares no mutable state; Run loads it on the first NOSCRIPT.
var (
	cutEpochScript = redis.NewScript(fenceSource + cutEpochSource)
	rolloverScript = redis.NewScript(fenceSource + rolloverSource)
)

// rolloverTries bounds how often CommitRollover rereads channels that
// another writer changed between its read and its script.
const rolloverTries = 8

var _ hub.SettlementStore = (*Store)(nil)

func (s *Store) epochsKey() string    { return s.prefix + "epochs" }
func (s *Store) epochOpenKey() string { return s.prefix + "epochopen" }
func (s *Store) runsKey() string      { return s.prefix + "runs" }
func (s *Store) runIdxKey() string    { return s.prefix + "runidx" }

func runKey(epoch uint64, attempt uint32) string {
	return fmt.Sprintf("%016x%08x", epoch, attempt)
}

// OpenEpoch returns the open epoch, or hub.ErrNotFound before the first
// one was stored.
func (s *Store) OpenEpoch(ctx context.Context) (settlement.Epoch, error) {
	es, err := s.Epochs(ctx, 1)
	if err != nil {
		return settlement.Epoch{}, err
	}
	if len(es) == 0 {
		return settlement.Epoch{}, fmt.Errorf("%w: no epoch stored", hub.ErrNotFound)
	}
	return es[0], nil
}

// CutEpoch atomically stores closed and opens successor with one script
// run; see hub.SettlementStore. It returns an error wrapping hub.ErrInvalid
// when successor does not follow closed, closed has no End, or the numbers
// pass the store's limit.
func (s *Store) CutEpoch(ctx context.Context, closed, successor settlement.Epoch) error {
	if err := hub.ValidateCut(closed, successor); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	if successor.Number > maxEpoch {
		return fmt.Errorf("redisstore: %w: epoch %d beyond %d", hub.ErrInvalid, successor.Number, uint64(maxEpoch))
	}
	closedDoc, err := json.Marshal(closed)
	if err != nil {
		return fmt.Errorf("redisstore: encode epoch %d: %w", closed.Number, err)
	}
	nextDoc, err := json.Marshal(successor)
	if err != nil {
		return fmt.Errorf("redisstore: encode epoch %d: %w", successor.Number, err)
	}
	// The previous epoch's runs, whose latest must have settled it.
	prevFirst, prevLast := "", ""
	if closed.Number > 1 {
		prevFirst, prevLast = runKey(closed.Number-1, 0), runKey(closed.Number-1, ^uint32(0))
	}
	args := []any{strconv.FormatUint(closed.Number, 10), closedDoc, strconv.FormatUint(successor.Number, 10), nextDoc,
		prevFirst, prevLast}
	for _, st := range settlement.SettledStates() {
		args = append(args, string(st))
	}
	args = append(args, hub.FenceArg(ctx))
	res, err := scriptReply(ctx, s.rdb, cutEpochScript,
		[]string{s.epochsKey(), s.epochOpenKey(), s.runsKey(), s.runIdxKey(), s.leaseKey()}, args...)
	if err != nil {
		return fmt.Errorf("redisstore: cut epoch %d: %w", closed.Number, err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "conflict":
		return fmt.Errorf("redisstore: cut epoch %d: %w: open epoch is %s", closed.Number, hub.ErrEpochConflict, at(res, 1))
	case "open":
		return fmt.Errorf("redisstore: cut epoch %d: %w: epoch %d is %s", closed.Number, hub.ErrRunOpen, closed.Number-1, at(res, 1))
	}
	return fmt.Errorf("redisstore: cut epoch %d: unexpected script reply %q", closed.Number, res)
}

// Epochs returns up to limit epochs, newest first. A limit below one
// returns none.
func (s *Store) Epochs(ctx context.Context, limit int) ([]settlement.Epoch, error) {
	if limit <= 0 {
		return nil, nil
	}
	docs, err := s.rdb.ZRevRange(ctx, s.epochsKey(), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: epochs: %w", err)
	}
	out := make([]settlement.Epoch, len(docs))
	for i, doc := range docs {
		if out[i], err = decodeEpoch(doc); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeEpoch decodes an epoch document of the epochs sorted set.
func decodeEpoch(doc string) (settlement.Epoch, error) {
	var e settlement.Epoch
	if err := json.Unmarshal([]byte(doc), &e); err != nil {
		return settlement.Epoch{}, fmt.Errorf("redisstore: decode epoch: %w", err)
	}
	return e, nil
}

func validateRun(r settlement.Run) error {
	if err := hub.ValidateRun(r); err != nil {
		return err
	}
	if r.Epoch.Number > maxEpoch {
		return fmt.Errorf("%w: run of epoch %d beyond %d", hub.ErrInvalid, r.Epoch.Number, uint64(maxEpoch))
	}
	return nil
}

// PutRun stores r under (r.Epoch.Number, r.Attempt), replacing it, in one
// script run, fenced (see hub.WithFence). It returns an error wrapping
// hub.ErrInvalid when either is zero.
func (s *Store) PutRun(ctx context.Context, r settlement.Run) error {
	if err := validateRun(r); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("redisstore: encode run %d/%d: %w", r.Epoch.Number, r.Attempt, err)
	}
	key := runKey(r.Epoch.Number, r.Attempt)
	_, err = scriptReply(ctx, s.rdb, putRunScript, []string{s.runsKey(), s.runIdxKey(), s.leaseKey()},
		key, doc, hub.FenceArg(ctx))
	if err != nil {
		return fmt.Errorf("redisstore: put run %d/%d: %w", r.Epoch.Number, r.Attempt, err)
	}
	return nil
}

// Run returns the latest attempt for an epoch, or hub.ErrNotFound.
func (s *Store) Run(ctx context.Context, epoch uint64) (settlement.Run, error) {
	keys, err := s.rdb.ZRevRangeByLex(ctx, s.runIdxKey(), &redis.ZRangeBy{
		Max:   "[" + runKey(epoch, ^uint32(0)),
		Min:   "[" + runKey(epoch, 0),
		Count: 1,
	}).Result()
	if err != nil {
		return settlement.Run{}, fmt.Errorf("redisstore: run of epoch %d: %w", epoch, err)
	}
	if len(keys) == 0 {
		return settlement.Run{}, fmt.Errorf("%w: run of epoch %d", hub.ErrNotFound, epoch)
	}
	// Runs are never deleted, so the run the index names is there.
	rs, err := s.runsByKey(ctx, keys)
	if err != nil {
		return settlement.Run{}, err
	}
	return rs[0], nil
}

// Runs returns up to limit runs, the latest attempt of each epoch, newest
// epoch first. A limit below one returns none.
func (s *Store) Runs(ctx context.Context, limit int) ([]settlement.Run, error) {
	if limit <= 0 {
		return nil, nil
	}
	// Walk the index from the end in pages, keeping the first key (the
	// latest attempt) of each epoch. Most epochs have one attempt, so a
	// page of twice the limit is usually the only one.
	page := int64(2 * limit)
	var keys []string
	last := ""
	for offset := int64(0); len(keys) < limit; offset += page {
		got, err := s.rdb.ZRevRangeByLex(ctx, s.runIdxKey(), &redis.ZRangeBy{
			Max: "+", Min: "-", Offset: offset, Count: page,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore: runs: %w", err)
		}
		for _, k := range got {
			if len(k) < 16 || k[:16] == last {
				continue
			}
			last = k[:16]
			keys = append(keys, k)
			if len(keys) == limit {
				break
			}
		}
		if int64(len(got)) < page {
			break
		}
	}
	return s.runsByKey(ctx, keys)
}

func (s *Store) runsByKey(ctx context.Context, keys []string) ([]settlement.Run, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.runsKey(), keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: runs: %w", err)
	}
	out := make([]settlement.Run, len(vals))
	for i, v := range vals {
		doc, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("redisstore: run %s is indexed but missing", keys[i])
		}
		if err := json.Unmarshal([]byte(doc), &out[i]); err != nil {
			return nil, fmt.Errorf("redisstore: decode run %s: %w", keys[i], err)
		}
	}
	return out, nil
}

// CommitRollover atomically stores r and moves the settled channels to
// their next outputs with one script run; see hub.SettlementStore. The
// CloseTx of each old channel is the transaction of r.Txs that spends it;
// an old channel that no transaction spends, a repeated outpoint, or a next
// record without a pending id, device or funding is refused with
// hub.ErrInvalid. A next record whose pending id or funding is already
// stored is refused with hub.ErrAlreadyExists. Nothing is written when
// anything is refused.
//
// The closed records are built here from the stored ones and written by
// the script only if those are unchanged; when another writer changed one
// in between, CommitRollover reads again (a concurrent rollover that won
// then shows as hub.ErrSeqConflict).
func (s *Store) CommitRollover(ctx context.Context, r settlement.Run, old []hub.ChannelRecord, next []hub.ChannelRecord) error {
	err := s.commitRollover(ctx, r, old, next)
	if err != nil {
		return fmt.Errorf("redisstore: commit rollover of epoch %d: %w", r.Epoch.Number, err)
	}
	return nil
}

func (s *Store) commitRollover(ctx context.Context, r settlement.Run, old []hub.ChannelRecord, next []hub.ChannelRecord) error {
	spender, err := hub.ValidateRollover(r, old, next)
	if err != nil {
		return err
	}
	if err := validateRun(r); err != nil {
		return err
	}
	runDoc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode run: %w", err)
	}
	nextArgs, err := encodeNext(next)
	if err != nil {
		return err
	}
	var zeroSig [64]byte
	keys := []string{s.fundKey(), s.chansKey(), s.runsKey(), s.runIdxKey(), s.leaseKey()}
	for range rolloverTries {
		oldArgs, err := s.closeOld(ctx, old, spender, r)
		if err != nil {
			return err
		}
		args := append([]any{s.prefix, runKey(r.Epoch.Number, r.Attempt), runDoc, zeroSig[:], len(old)}, oldArgs...)
		args = append(args, len(next))
		args = append(args, nextArgs...)
		args = append(args, hub.FenceArg(ctx))
		res, err := scriptReply(ctx, s.rdb, rolloverScript, keys, args...)
		if err != nil {
			return err
		}
		switch res[0] {
		case "ok":
			return nil
		case "moved":
			continue // read again: closed by another rollover, or changed
		case "stale":
			return fmt.Errorf("%w: channel %s moved since it was read", hub.ErrSeqConflict, at(res, 1))
		case "notfound":
			return fmt.Errorf("%w: channel %s", hub.ErrNotFound, at(res, 1))
		case "exists":
			return fmt.Errorf("%w: next channel %s", hub.ErrAlreadyExists, at(res, 1))
		}
		return fmt.Errorf("unexpected script reply %q", res)
	}
	return fmt.Errorf("%w: channels kept changing during %d tries", hub.ErrSeqConflict, rolloverTries)
}

// encodeNext returns the script arguments of the next channels, which
// hub.ValidateRollover has checked.
func encodeNext(next []hub.ChannelRecord) ([]any, error) {
	args := make([]any, 0, 6*len(next))
	for _, c := range next {
		pid := hex.EncodeToString(c.PendingID[:])
		if err := checkAmounts("next channel", c.Owed); err != nil {
			return nil, err
		}
		// A new channel starts with no payments; only the unsigned balance
		// carries over from the channel it replaces.
		static := c
		static.Seq, static.Paid, static.Owed, static.DeviceSig, static.UpdatedAt = 0, 0, 0, [64]byte{}, time.Time{}
		doc, err := json.Marshal(static)
		if err != nil {
			return nil, fmt.Errorf("encode channel %s: %w", pid, err)
		}
		args = append(args, pid, doc, c.Funding.String(), c.DeviceID, fmtMsat(c.Owed), encodeTime(c.UpdatedAt))
	}
	return args, nil
}

// closeOld reads the old channels and returns, for each, the script
// arguments that close it: its outpoint, the record read, the closed
// record and the run's update time. It refuses a missing channel with
// hub.ErrNotFound and a closed one with hub.ErrSeqConflict.
func (s *Store) closeOld(ctx context.Context, old []hub.ChannelRecord, spender map[wire.OutPoint]chainhash.Hash, r settlement.Run) ([]any, error) {
	if len(old) == 0 {
		return nil, nil
	}
	ops := make([]string, len(old))
	for i, c := range old {
		ops[i] = c.Funding.String()
	}
	pids, err := s.rdb.HMGet(ctx, s.fundKey(), ops...).Result()
	if err != nil {
		return nil, fmt.Errorf("funding index: %w", err)
	}
	cmds := make([]*redis.StringCmd, len(old))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, v := range pids {
			pid, ok := v.(string)
			if !ok {
				return fmt.Errorf("%w: channel %s", hub.ErrNotFound, ops[i])
			}
			cmds[i] = p.HGet(ctx, s.chanKey(pid), "doc")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, 7*len(old))
	for i, read := range old {
		op := read.Funding
		was, err := cmds[i].Result()
		if err != nil {
			return nil, fmt.Errorf("channel %s: %w", ops[i], err)
		}
		var c hub.ChannelRecord
		if err := json.Unmarshal([]byte(was), &c); err != nil {
			return nil, fmt.Errorf("decode channel %s: %w", ops[i], err)
		}
		if c.Status == hub.ChannelClosed {
			return nil, fmt.Errorf("%w: channel %s is already closed by %v", hub.ErrSeqConflict, ops[i], c.CloseTx)
		}
		txid := spender[op]
		c.Status, c.CloseTx = hub.ChannelClosed, &txid
		closed, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("encode channel %s: %w", ops[i], err)
		}
		args = append(args, ops[i], was, closed, encodeTime(r.Updated),
			strconv.FormatUint(read.Seq, 10), fmtMsat(read.Paid), fmtMsat(read.Owed))
	}
	return args, nil
}
