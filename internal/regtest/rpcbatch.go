package regtest

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

// batchClient sends JSON-RPC batches to btcd: many calls in one HTTPS round
// trip. btcd answers every RPC with "Connection: close", so each call costs a
// TCP and TLS handshake (about 5 ms on this project's machines); archiving or
// replaying hundreds of blocks one call at a time would take seconds. btcd
// runs the entries of a batch one after another, in order, which replay
// relies on.
type batchClient struct {
	url  string
	user string
	pass string
	http *http.Client
}

// newBatchClient returns a client for the node described by rpc. Keep-alives
// are off since btcd closes every connection anyway, so no idle connection
// or its goroutines outlive a call.
func newBatchClient(rpc RPCConfig) (*batchClient, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rpc.Cert) {
		return nil, errors.New("regtest: rpc certificate unreadable")
	}
	return &batchClient{
		url:  "https://" + rpc.Host + "/",
		user: rpc.User,
		pass: rpc.Pass,
		http: &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		}},
	}, nil
}

// batchResult is the answer to one entry of a batch.
type batchResult struct {
	Result json.RawMessage
	Err    *btcjson.RPCError
}

// do sends cmds (btcjson command values) as one batch and returns their
// results in the same order. An error is returned only if the batch as a
// whole failed; each entry's own RPC error is in its result.
func (c *batchClient) do(ctx context.Context, cmds []any) ([]batchResult, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	var body bytes.Buffer
	body.WriteByte('[')
	for i, cmd := range cmds {
		req, err := btcjson.MarshalCmd(btcjson.RpcVersion1, uint64(i), cmd)
		if err != nil {
			return nil, fmt.Errorf("regtest: rpc batch: %w", err)
		}
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(req)
	}
	body.WriteByte(']')

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, &body)
	if err != nil {
		return nil, fmt.Errorf("regtest: rpc batch: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(c.user, c.pass)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("regtest: rpc batch: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("regtest: rpc batch: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("regtest: rpc batch: %s: %s", resp.Status, bytes.TrimSpace(raw))
	}

	var replies []struct {
		Result json.RawMessage   `json:"result"`
		Error  *btcjson.RPCError `json:"error"`
		ID     *uint64           `json:"id"`
	}
	if err := json.Unmarshal(raw, &replies); err != nil {
		return nil, fmt.Errorf("regtest: rpc batch reply: %w", err)
	}
	out := make([]batchResult, len(cmds))
	seen := make([]bool, len(cmds))
	for _, r := range replies {
		if r.ID == nil || *r.ID >= uint64(len(cmds)) || seen[*r.ID] {
			return nil, fmt.Errorf("regtest: rpc batch reply with unexpected id")
		}
		seen[*r.ID] = true
		out[*r.ID] = batchResult{Result: r.Result, Err: r.Error}
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("regtest: rpc batch: no reply to entry %d", i)
		}
	}
	return out, nil
}

// close releases the client's idle resources.
func (c *batchClient) close() { c.http.CloseIdleConnections() }
