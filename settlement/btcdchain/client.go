// Package btcdchain adapts a btcd node's JSON-RPC interface to what the hub
// needs from the base chain: the tip height, broadcasting transactions,
// looking up transactions and unspent outputs, address history, and, on test
// networks, mining. It also holds the hub's own on-chain wallet (Wallet).
//
// Every call takes a context and is also bounded by Config.CallTimeout, so
// a node that is stopped, dead or restarting costs a caller at most that
// long and yields ErrUnavailable; each call is its own HTTPS request, so
// the first call after the node is back reaches it again.
package btcdchain

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/internal/btcrpc"
)

// Errors returned by this package.
var (
	// ErrNotFound means the node knows no such transaction or unspent
	// output (for an output: never created, or already spent).
	ErrNotFound = errors.New("btcdchain: not found")

	// ErrRejected means the node refused a transaction (invalid, double
	// spend, fee too low, non-standard).
	ErrRejected = errors.New("btcdchain: transaction rejected")

	// ErrMiningUnsupported means Mine was called on a network where blocks
	// cannot be mined on demand.
	ErrMiningUnsupported = errors.New("btcdchain: mining unsupported on this network")

	// ErrWrongNetwork means the node runs a different network than
	// Config.Params.
	ErrWrongNetwork = errors.New("btcdchain: node is on a different network")

	// ErrUnavailable means the node gave no answer: it refused or dropped
	// the connection (down, restarting) or did not answer within the
	// call's deadline (stopped, overloaded). The call may be retried.
	ErrUnavailable = errors.New("btcdchain: chain unavailable")

	// ErrInsufficientFunds means the wallet's spendable outputs do not
	// cover the amount and fee.
	ErrInsufficientFunds = errors.New("btcdchain: insufficient funds")
)

// Config configures a Client.
type Config struct {
	// Host is the node's RPC address, "host:port".
	Host string
	// User and Pass are the RPC credentials.
	User string
	Pass string
	// Cert is the PEM certificate of the node's TLS RPC server. If empty,
	// it is read from CertPath.
	Cert     []byte
	CertPath string
	// Params is the network the node is expected to run.
	Params *chaincfg.Params
	// CallTimeout bounds each call (Mine's grows with the blocks asked
	// for) when the caller's context allows longer. Zero means
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// Logger receives diagnostics. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultCallTimeout bounds one RPC call when Config.CallTimeout is zero:
// far above a healthy node's answer (milliseconds), short enough that a
// settlement plan or a health probe behind a dead node returns promptly.
const DefaultCallTimeout = 10 * time.Second

// Client talks to one btcd node over TLS JSON-RPC (HTTP POST mode).
type Client struct {
	rpc     *btcrpc.Client
	params  *chaincfg.Params
	timeout time.Duration
	log     *slog.Logger
}

// New returns a Client for the node in cfg. It does not contact the node; use
// Healthy to check that it answers and runs the expected network.
func New(cfg Config) (*Client, error) {
	if cfg.Host == "" {
		return nil, errors.New("btcdchain: Config.Host is required")
	}
	if cfg.Params == nil {
		return nil, errors.New("btcdchain: Config.Params is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cert := cfg.Cert
	if len(cert) == 0 {
		if cfg.CertPath == "" {
			return nil, errors.New("btcdchain: Config.Cert or CertPath is required")
		}
		var err error
		if cert, err = os.ReadFile(cfg.CertPath); err != nil {
			return nil, fmt.Errorf("btcdchain: %w", err)
		}
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	rpc := btcrpc.New(btcrpc.Config{Host: cfg.Host, User: cfg.User, Pass: cfg.Pass, Cert: cert})
	return &Client{rpc: rpc, params: cfg.Params, timeout: cfg.CallTimeout, log: cfg.Logger}, nil
}

// Close releases the client's idle connections. Calls made after it still
// work; it exists for symmetry with the other adapters.
func (c *Client) Close() error {
	c.rpc.Close()
	return nil
}

// Params returns the network the client expects.
func (c *Client) Params() *chaincfg.Params { return c.params }

// call sends one JSON-RPC command and decodes its result into result (which
// may be nil), within ctx and the client's call timeout. A node that gives
// no answer yields ErrUnavailable; an answer that is an error, the node's
// *btcjson.RPCError.
func (c *Client) call(ctx context.Context, cmd any, result any) error {
	return c.callWithin(ctx, c.timeout, cmd, result)
}

func (c *Client) callWithin(ctx context.Context, d time.Duration, cmd any, result any) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := c.rpc.Call(ctx, cmd, result)
	if errors.Is(err, btcrpc.ErrTransport) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// rpcCode returns the JSON-RPC error code in err, if any.
func rpcCode(err error) (btcjson.RPCErrorCode, bool) {
	var rerr *btcjson.RPCError
	if errors.As(err, &rerr) {
		return rerr.Code, true
	}
	return 0, false
}

// Healthy returns nil if the node answers and runs Config.Params' network,
// ErrWrongNetwork if it runs another, or the transport error.
func (c *Client) Healthy(ctx context.Context) error {
	var info struct {
		Chain  string `json:"chain"`
		Blocks int32  `json:"blocks"`
	}
	if err := c.call(ctx, btcjson.NewGetBlockChainInfoCmd(), &info); err != nil {
		return fmt.Errorf("btcdchain: getblockchaininfo: %w", err)
	}
	if info.Chain != c.params.Name {
		return fmt.Errorf("%w: node runs %q, want %q", ErrWrongNetwork, info.Chain, c.params.Name)
	}
	return nil
}

// BlockCount returns the height of the best block.
func (c *Client) BlockCount(ctx context.Context) (int32, error) {
	var n int32
	if err := c.call(ctx, btcjson.NewGetBlockCountCmd(), &n); err != nil {
		return 0, fmt.Errorf("btcdchain: getblockcount: %w", err)
	}
	return n, nil
}

// Mine mines n blocks to the node's --miningaddr and returns their hashes. It
// returns ErrMiningUnsupported unless the network allows CPU mining (regtest,
// simnet).
func (c *Client) Mine(ctx context.Context, n uint32) ([]chainhash.Hash, error) {
	if !c.params.GenerateSupported {
		return nil, fmt.Errorf("%w: %s", ErrMiningUnsupported, c.params.Name)
	}
	// Mining takes time per block, on a loaded machine tens of
	// milliseconds each.
	d := c.timeout + time.Duration(n)*50*time.Millisecond
	var hexes []string
	if err := c.callWithin(ctx, d, btcjson.NewGenerateCmd(n), &hexes); err != nil {
		return nil, fmt.Errorf("btcdchain: generate %d: %w", n, err)
	}
	hashes := make([]chainhash.Hash, len(hexes))
	for i, h := range hexes {
		if err := chainhash.Decode(&hashes[i], h); err != nil {
			return nil, fmt.Errorf("btcdchain: generate: %w", err)
		}
	}
	return hashes, nil
}

// MineEvery mines a block every interval on a regtest node until the
// returned stop is called, for tests and tools that fund channels and must
// see them confirm (the hub mines nothing itself). Errors are ignored: a
// node that is restarting just misses a tick.
func (c *Client) MineEvery(ctx context.Context, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				_, _ = c.Mine(ctx, 1)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// SendRawTransaction broadcasts tx and returns its id. A transaction the node
// refuses yields ErrRejected with the node's reason.
func (c *Client) SendRawTransaction(ctx context.Context, tx *wire.MsgTx) (chainhash.Hash, error) {
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return chainhash.Hash{}, fmt.Errorf("btcdchain: %w", err)
	}
	// btcd's own form of the command; rpcclient's SendRawTransaction would
	// first probe the backend version with a blocking getinfo.
	allowHighFees := false
	cmd := btcjson.NewSendRawTransactionCmd(hex.EncodeToString(buf.Bytes()), &allowHighFees)
	var txid string
	if err := c.call(ctx, cmd, &txid); err != nil {
		if _, ok := rpcCode(err); ok {
			return chainhash.Hash{}, fmt.Errorf("%w: %w", ErrRejected, err)
		}
		return chainhash.Hash{}, fmt.Errorf("btcdchain: sendrawtransaction: %w", err)
	}
	var h chainhash.Hash
	if err := chainhash.Decode(&h, txid); err != nil {
		return chainhash.Hash{}, fmt.Errorf("btcdchain: sendrawtransaction: %w", err)
	}
	return h, nil
}

// TxInfo is a transaction and where it stands on chain.
type TxInfo struct {
	Tx *wire.MsgTx
	// Confirmations is 0 while the transaction is in the mempool.
	Confirmations int64
	// BlockHash is nil while the transaction is in the mempool.
	BlockHash *chainhash.Hash
}

// rawTxResult is the part of a verbose transaction answer this package uses.
// btcjson's own result types disagree with btcd on some field types.
type rawTxResult struct {
	Hex           string `json:"hex"`
	BlockHash     string `json:"blockhash"`
	Confirmations int64  `json:"confirmations"`
}

func (r rawTxResult) decode() (TxInfo, error) {
	b, err := hex.DecodeString(r.Hex)
	if err != nil {
		return TxInfo{}, fmt.Errorf("btcdchain: tx hex: %w", err)
	}
	tx := new(wire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(b)); err != nil {
		return TxInfo{}, fmt.Errorf("btcdchain: tx decode: %w", err)
	}
	info := TxInfo{Tx: tx, Confirmations: r.Confirmations}
	if r.BlockHash != "" {
		info.BlockHash = new(chainhash.Hash)
		if err := chainhash.Decode(info.BlockHash, r.BlockHash); err != nil {
			return TxInfo{}, fmt.Errorf("btcdchain: block hash: %w", err)
		}
	}
	return info, nil
}

// GetTx returns a transaction from the mempool or the chain (the node needs
// --txindex for confirmed ones), or ErrNotFound.
func (c *Client) GetTx(ctx context.Context, txid chainhash.Hash) (TxInfo, error) {
	verbose := 1
	var res rawTxResult
	if err := c.call(ctx, btcjson.NewGetRawTransactionCmd(txid.String(), &verbose), &res); err != nil {
		if code, ok := rpcCode(err); ok && code == btcjson.ErrRPCNoTxInfo {
			return TxInfo{}, fmt.Errorf("%w: tx %s", ErrNotFound, txid)
		}
		return TxInfo{}, fmt.Errorf("btcdchain: getrawtransaction: %w", err)
	}
	return res.decode()
}

// Confirmations returns how many blocks confirm txid: 0 in the mempool,
// ErrNotFound if the node does not know it.
func (c *Client) Confirmations(ctx context.Context, txid chainhash.Hash) (int64, error) {
	info, err := c.GetTx(ctx, txid)
	if err != nil {
		return 0, err
	}
	return info.Confirmations, nil
}

// TxOut is an unspent transaction output as the node sees it.
type TxOut struct {
	Value    btcutil.Amount
	PkScript []byte
	// Confirmations is 0 for an output created in the mempool.
	Confirmations int64
	Coinbase      bool
}

// TxOut looks up an unspent output. With includeMempool, an output created by
// a mempool transaction is found too. An output spent on chain or unknown
// yields ErrNotFound. Unlike bitcoind, btcd still returns an output that only
// a mempool transaction spends; MempoolSpenders answers that question.
func (c *Client) TxOut(ctx context.Context, op wire.OutPoint, includeMempool bool) (TxOut, error) {
	var res *btcjson.GetTxOutResult
	cmd := btcjson.NewGetTxOutCmd(op.Hash.String(), op.Index, &includeMempool)
	if err := c.call(ctx, cmd, &res); err != nil {
		return TxOut{}, fmt.Errorf("btcdchain: gettxout: %w", err)
	}
	if res == nil {
		return TxOut{}, fmt.Errorf("%w: output %s", ErrNotFound, op)
	}
	script, err := hex.DecodeString(res.ScriptPubKey.Hex)
	if err != nil {
		return TxOut{}, fmt.Errorf("btcdchain: gettxout script: %w", err)
	}
	// gettxout reports the value as a float in BTC; NewAmount rounds it to
	// the exact satoshi, which a float64 holds without loss up to 21e6 BTC.
	value, err := btcutil.NewAmount(res.Value)
	if err != nil {
		return TxOut{}, fmt.Errorf("btcdchain: gettxout value: %w", err)
	}
	return TxOut{
		Value:         value,
		PkScript:      script,
		Confirmations: res.Confirmations,
		Coinbase:      res.Coinbase,
	}, nil
}

// MempoolSpenders returns, for each outpoint, the id of the mempool
// transaction spending it, or nil if none does.
func (c *Client) MempoolSpenders(ctx context.Context, ops []wire.OutPoint) ([]*chainhash.Hash, error) {
	var res []btcjson.GetTxSpendingPrevOutResult
	if err := c.call(ctx, btcjson.NewGetTxSpendingPrevOutCmd(ops), &res); err != nil {
		return nil, fmt.Errorf("btcdchain: gettxspendingprevout: %w", err)
	}
	if len(res) != len(ops) {
		return nil, fmt.Errorf("btcdchain: gettxspendingprevout: %d answers for %d outpoints", len(res), len(ops))
	}
	spenders := make([]*chainhash.Hash, len(ops))
	for i, r := range res {
		if r.SpendingTxid == "" {
			continue
		}
		spenders[i] = new(chainhash.Hash)
		if err := chainhash.Decode(spenders[i], r.SpendingTxid); err != nil {
			return nil, fmt.Errorf("btcdchain: gettxspendingprevout: %w", err)
		}
	}
	return spenders, nil
}

// AddressTxs returns every transaction that pays to or spends from addr,
// confirmed ones oldest first, then those in the mempool. It needs a node
// run with --addrindex. An address never used yields an empty slice.
func (c *Client) AddressTxs(ctx context.Context, addr btcutil.Address) ([]TxInfo, error) {
	const page = 1000
	var all []TxInfo
	for skip := 0; ; skip += page {
		verbose, count, vinExtra, reverse := 1, page, 0, false
		skip := skip
		cmd := btcjson.NewSearchRawTransactionsCmd(addr.EncodeAddress(),
			&verbose, &skip, &count, &vinExtra, &reverse, nil)
		var res []rawTxResult
		if err := c.call(ctx, cmd, &res); err != nil {
			if code, ok := rpcCode(err); ok && code == btcjson.ErrRPCNoTxInfo {
				// btcd answers "no information" both for an
				// unused address and for a skip past the end.
				return all, nil
			}
			return nil, fmt.Errorf("btcdchain: searchrawtransactions: %w", err)
		}
		for _, r := range res {
			info, err := r.decode()
			if err != nil {
				return nil, err
			}
			all = append(all, info)
		}
		if len(res) < page {
			return all, nil
		}
	}
}
