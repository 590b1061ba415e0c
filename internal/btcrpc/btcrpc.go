// Package btcrpc is a small JSON-RPC client for btcd over HTTPS, shared by
// the chain adapter (settlement/btcdchain) and the regtest child
// (internal/regtest).
//
// It exists instead of rpcclient's HTTP POST mode because that mode runs
// every request of a client on one goroutine, retries a refused connection
// ten times with a growing backoff (minutes in all) and takes no context:
// one call to a stopped or dead btcd holds up every call behind it, and
// once its queue of 100 is full, SendCmd blocks its caller for good. Here
// every request is an independent HTTP request bound to its caller's
// context, so a deadline always ends it, and a restarted node is reached
// again by the next call.
package btcrpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/btcsuite/btcd/btcjson"
)

// ErrTransport marks a failure to get an answer from the node at all (it
// refused or dropped the connection, did not answer before the deadline,
// or answered something that is not JSON-RPC), as opposed to an RPC error
// the node returned, which is a *btcjson.RPCError.
var ErrTransport = errors.New("btcrpc: node unreachable")

// Config describes a node's RPC server.
type Config struct {
	// Host is "host:port".
	Host string
	// User and Pass are the RPC credentials.
	User string
	Pass string
	// Cert is the PEM certificate of the node's TLS RPC server.
	Cert []byte
}

// Client sends JSON-RPC calls and batches to one node. It is safe for
// concurrent use.
type Client struct {
	url  string
	user string
	pass string
	http *http.Client
}

// New returns a client for the node described by cfg. Keep-alives are off:
// btcd answers every RPC with "Connection: close", so no idle connection,
// or goroutine of one, outlives a call. Every call is therefore a new TLS
// connection; the client keeps the node's session tickets so each one after
// the first resumes the session instead of doing a full handshake (in a
// BenchmarkPay profile, whose hub polls a regtest node, the client's
// handshakes fell from 6.7 % of the CPU to 3 %). A Cert that holds no
// certificate is not refused here (as rpcclient did not): every call then
// fails the TLS check with an error that says so.
func New(cfg Config) *Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cfg.Cert)
	return &Client{
		url:  "https://" + cfg.Host + "/",
		user: cfg.User,
		pass: cfg.Pass,
		http: &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				RootCAs:            pool,
				MinVersion:         tls.VersionTLS12,
				ClientSessionCache: tls.NewLRUClientSessionCache(0),
			},
			DisableKeepAlives: true,
		}},
	}
}

// Result is the answer to one entry of a batch.
type Result struct {
	Result json.RawMessage
	Err    *btcjson.RPCError
}

// Call sends one command (a btcjson command value) and decodes its result
// into result, which may be nil. An RPC error of the node is returned as a
// *btcjson.RPCError; anything else wraps ErrTransport.
func (c *Client) Call(ctx context.Context, cmd any, result any) error {
	res, err := c.Batch(ctx, []any{cmd})
	if err != nil {
		return err
	}
	if res[0].Err != nil {
		return res[0].Err
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(res[0].Result, result); err != nil {
		return fmt.Errorf("btcrpc: decode result: %w", err)
	}
	return nil
}

// Batch sends cmds (btcjson command values) as one batch, one HTTPS round
// trip, and returns their results in the same order. btcd runs the entries
// of a batch one after another, in order. An error (wrapping ErrTransport)
// is returned only if the batch as a whole failed; each entry's own RPC
// error is in its result.
func (c *Client) Batch(ctx context.Context, cmds []any) ([]Result, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	var body bytes.Buffer
	body.WriteByte('[')
	for i, cmd := range cmds {
		req, err := btcjson.MarshalCmd(btcjson.RpcVersion1, uint64(i), cmd)
		if err != nil {
			return nil, fmt.Errorf("btcrpc: %w", err)
		}
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(req)
	}
	body.WriteByte(']')

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, &body)
	if err != nil {
		return nil, fmt.Errorf("btcrpc: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(c.user, c.pass)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTransport, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTransport, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %s", ErrTransport, resp.Status, bytes.TrimSpace(raw))
	}

	var replies []struct {
		Result json.RawMessage   `json:"result"`
		Error  *btcjson.RPCError `json:"error"`
		ID     *uint64           `json:"id"`
	}
	if err := json.Unmarshal(raw, &replies); err != nil {
		return nil, fmt.Errorf("%w: reply: %w", ErrTransport, err)
	}
	out := make([]Result, len(cmds))
	seen := make([]bool, len(cmds))
	for _, r := range replies {
		if r.ID == nil || *r.ID >= uint64(len(cmds)) || seen[*r.ID] {
			return nil, fmt.Errorf("%w: reply with unexpected id", ErrTransport)
		}
		seen[*r.ID] = true
		out[*r.ID] = Result{Result: r.Result, Err: r.Error}
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("%w: no reply to entry %d", ErrTransport, i)
		}
	}
	return out, nil
}

// Close releases the client's idle resources.
func (c *Client) Close() { c.http.CloseIdleConnections() }
