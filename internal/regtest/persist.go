package regtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/internal/btcrpc"
)

// DefaultArchiveInterval is how often a running node's best chain is
// compared with the archive when Config.ArchiveInterval is zero. It is only
// the fallback: btcd announces every block connected or disconnected over a
// websocket, and the archive follows at once. Blocks mined through Mine are
// archived before it returns in any case.
const DefaultArchiveInterval = time.Second

// SyncArchive brings the chain archive in step with the node's best chain
// now, instead of at the next poll: blocks mined by other RPC clients are
// appended and fsynced, and a reorganisation is followed. It fails with
// ErrArchiveClosed once the node is stopped or btcd has exited.
func (n *Node) SyncArchive(ctx context.Context) error {
	return n.syncArchive(ctx)
}

// Batch sizes: fetchChunk bounds the blocks fetched, held in memory and
// appended per round when catching up; forkStep is how many heights one
// round trip compares when looking for a fork point.
const (
	fetchChunk     = 250
	forkStep       = 32
	replayMaxBytes = 8 << 20
)

// syncArchive finds the highest height at which the archive and the node's
// best chain agree (the fork point; the genesis block at worst), drops
// whatever the archive has above it and appends the node's blocks from there.
// Appended blocks must link to the archive's tip, so if the node reorganises
// in the middle, only the part that links is kept and the next round
// continues from it.
func (n *Node) syncArchive(ctx context.Context) error {
	n.archMu.Lock()
	defer n.archMu.Unlock()
	if n.arch == nil {
		return ErrArchiveClosed
	}

	res, err := n.batch.Batch(ctx, []any{btcjson.NewGetBestBlockHashCmd(), btcjson.NewGetBlockCountCmd()})
	if err != nil {
		return err
	}
	best, err := hashResult(res[0], "getbestblockhash")
	if err != nil {
		return err
	}
	if best == n.arch.tip() {
		return nil
	}
	var count int
	if err := decodeResult(res[1], "getblockcount", &count); err != nil {
		return err
	}

	fork, err := n.forkPoint(ctx, min(count, n.arch.height()))
	if err != nil {
		return err
	}
	if fork < n.arch.height() {
		n.log.Info("chain reorganised, archive follows",
			"fork_height", fork, "dropped", n.arch.height()-fork, "node_height", count)
		if err := n.arch.truncate(fork); err != nil {
			return err
		}
	}
	for from := fork + 1; from <= count; from += fetchChunk {
		to := min(from+fetchChunk-1, count)
		blocks, err := n.fetchBlocks(ctx, from, to)
		if err != nil {
			return err
		}
		if err := n.arch.appendBlocks(blocks); err != nil {
			return err
		}
		if len(blocks) < to-from+1 {
			return nil
		}
	}
	return nil
}

// forkPoint returns the highest height ≤ top at which the node's block is
// the archived one, comparing forkStep heights per round trip.
func (n *Node) forkPoint(ctx context.Context, top int) (int, error) {
	for top > 0 {
		lo := max(top-forkStep+1, 1)
		cmds := make([]any, 0, top-lo+1)
		for h := lo; h <= top; h++ {
			cmds = append(cmds, btcjson.NewGetBlockHashCmd(int64(h)))
		}
		res, err := n.batch.Batch(ctx, cmds)
		if err != nil {
			return 0, err
		}
		for h := top; h >= lo; h-- {
			hash, err := hashResult(res[h-lo], "getblockhash")
			if err != nil {
				return 0, err
			}
			if hash == n.arch.hashes[h-1] {
				return h, nil
			}
		}
		top = lo - 1
	}
	return 0, nil
}

// fetchBlocks returns the node's raw blocks at heights from..to that link,
// one to the next, onto the archive's tip; it stops at the first that does
// not, which only happens when the node reorganised meanwhile.
func (n *Node) fetchBlocks(ctx context.Context, from, to int) ([][]byte, error) {
	cmds := make([]any, 0, to-from+1)
	for h := from; h <= to; h++ {
		cmds = append(cmds, btcjson.NewGetBlockHashCmd(int64(h)))
	}
	res, err := n.batch.Batch(ctx, cmds)
	if err != nil {
		return nil, err
	}
	hashes := make([]chainhash.Hash, len(res))
	verbosity := 0
	for i := range res {
		if hashes[i], err = hashResult(res[i], "getblockhash"); err != nil {
			return nil, err
		}
		cmds[i] = btcjson.NewGetBlockCmd(hashes[i].String(), &verbosity)
	}
	if res, err = n.batch.Batch(ctx, cmds); err != nil {
		return nil, err
	}

	blocks := make([][]byte, 0, len(res))
	prev := n.arch.tip()
	for i := range res {
		var s string
		if err := decodeResult(res[i], "getblock", &s); err != nil {
			return nil, err
		}
		raw, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("regtest: getblock %s: %w", hashes[i], err)
		}
		var bh wire.BlockHeader
		if err := bh.Deserialize(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("regtest: getblock %s: %w", hashes[i], err)
		}
		if bh.BlockHash() != hashes[i] {
			return nil, fmt.Errorf("regtest: getblock %s returned block %s", hashes[i], bh.BlockHash())
		}
		if bh.PrevBlock != prev {
			break
		}
		blocks = append(blocks, raw)
		prev = hashes[i]
	}
	return blocks, nil
}

// decodeResult unmarshals one batch entry's result into v.
func decodeResult(r btcrpc.Result, method string, v any) error {
	if r.Err != nil {
		return fmt.Errorf("regtest: %s: %w", method, r.Err)
	}
	if err := json.Unmarshal(r.Result, v); err != nil {
		return fmt.Errorf("regtest: %s: %w", method, err)
	}
	return nil
}

// hashResult decodes a batch entry whose result is a block hash.
func hashResult(r btcrpc.Result, method string) (chainhash.Hash, error) {
	var s string
	if err := decodeResult(r, method, &s); err != nil {
		return chainhash.Hash{}, err
	}
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("regtest: %s: %w", method, err)
	}
	return *h, nil
}

// watchBlocks opens a websocket on which btcd announces every block
// connected to or disconnected from its best chain, each a nudge on wake.
// Polling alone would be wasteful: btcd closes every HTTP RPC connection
// after one call, so each poll costs a TLS handshake, about 2% of a core
// (hub and btcd together) at five polls a second.
func (n *Node) watchBlocks(ctx context.Context, wake chan<- struct{}) (*rpcclient.Client, error) {
	nudge := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	c, err := rpcclient.New(&rpcclient.ConnConfig{
		Host:         n.rpc.Host,
		Endpoint:     "ws",
		User:         n.rpc.User,
		Pass:         n.rpc.Pass,
		Certificates: n.rpc.Cert,
		// Without reconnection the client's goroutines end with the
		// connection; the poll covers a lost socket.
		DisableAutoReconnect: true,
	}, &rpcclient.NotificationHandlers{
		OnFilteredBlockConnected:    func(int32, *wire.BlockHeader, []*btcutil.Tx) { nudge() },
		OnFilteredBlockDisconnected: func(int32, *wire.BlockHeader) { nudge() },
	})
	if err != nil {
		return nil, fmt.Errorf("regtest: block notifications: %w", err)
	}
	shutdown := func() {
		c.Shutdown()
		c.WaitForShutdown()
	}
	select {
	case r := <-c.SendCmd(btcjson.NewNotifyBlocksCmd()):
		replay := make(chan *rpcclient.Response, 1)
		replay <- r
		if _, err := rpcclient.ReceiveFuture(replay); err != nil {
			shutdown()
			return nil, fmt.Errorf("regtest: notifyblocks: %w", err)
		}
	case <-ctx.Done():
		shutdown()
		return nil, ctx.Err()
	}
	return c, nil
}

// archiveLoop keeps the archive in step with the node until ctx is cancelled
// or btcd exits, syncing on every block notification from ws and every
// interval. It owns ws, which may be nil, and shuts it down.
func (n *Node) archiveLoop(ctx context.Context, every time.Duration, ws *rpcclient.Client, wake <-chan struct{}) {
	defer n.archWG.Done()
	if ws != nil {
		defer func() {
			ws.Shutdown()
			ws.WaitForShutdown()
		}()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.exited:
			// Nothing more can be archived. The file is released so
			// that a new Start on the same Dir can lock it.
			if err := n.closeArchive(); err != nil {
				n.log.Warn("closing chain archive", "err", err)
			}
			return
		case <-tick.C:
		case <-wake:
		}
		err := n.syncArchive(ctx)
		switch {
		case err == nil:
			if failing {
				n.log.Info("chain archive caught up again")
			}
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			// Logged once per outage, not at every poll.
			n.log.Warn("chain archive out of step with btcd", "err", err)
			failing = true
		}
	}
}

// closeArchive closes the archive once; later syncs get ErrArchiveClosed.
func (n *Node) closeArchive() error {
	n.archMu.Lock()
	defer n.archMu.Unlock()
	if n.arch == nil {
		return nil
	}
	err := n.arch.close()
	n.arch = nil
	return err
}

// replay submits every archived block, in order, to the fresh btcd, which
// validates each one as if it came from a peer, then checks that the node's
// best block is the archive's tip. Blocks go in batches, which btcd runs in
// order.
func (n *Node) replay(ctx context.Context) error {
	height := n.arch.height()
	if height == 0 {
		return nil
	}
	start := time.Now()
	for from := 1; from <= height; {
		var cmds []any
		size := 0
		for h := from; h <= height && len(cmds) < fetchChunk && size < replayMaxBytes; h++ {
			raw, err := n.arch.block(h)
			if err != nil {
				return err
			}
			cmds = append(cmds, btcjson.NewSubmitBlockCmd(hex.EncodeToString(raw), nil))
			size += len(raw)
		}
		res, err := n.batch.Batch(ctx, cmds)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrReplay, err)
		}
		for i, r := range res {
			// btcd answers null when it accepts a block and a string
			// starting with "rejected:" when it does not.
			var verdict *string
			if err := decodeResult(r, "submitblock", &verdict); err != nil {
				return fmt.Errorf("%w: height %d: %w", ErrReplay, from+i, err)
			}
			if verdict != nil {
				return fmt.Errorf("%w: block %s at height %d: %s",
					ErrReplay, n.arch.hashes[from+i-1], from+i, *verdict)
			}
		}
		from += len(cmds)
	}
	best, err := n.bestHash(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReplay, err)
	}
	if best != n.arch.tip() {
		return fmt.Errorf("%w: best block is %s after replay, archive tip is %s",
			ErrReplay, best, n.arch.tip())
	}
	n.replayed = height
	n.replayTook = time.Since(start)
	n.log.Info("chain archive replayed", "blocks", height, "tip", best, "took", n.replayTook)
	return nil
}

// bestHash returns the hash of the node's best block.
func (n *Node) bestHash(ctx context.Context) (chainhash.Hash, error) {
	var s string
	if err := n.call(ctx, btcjson.NewGetBestBlockHashCmd(), &s); err != nil {
		return chainhash.Hash{}, fmt.Errorf("regtest: getbestblockhash: %w", err)
	}
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("regtest: getbestblockhash: %w", err)
	}
	return *h, nil
}
