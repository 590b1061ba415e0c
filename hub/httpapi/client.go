package httpapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// APIError is an error answer from the admin API. It wraps the error its
// code stands for (the server's table, errorCodes), so callers test it with
// errors.Is(err, hub.ErrNotFound) and the like; errors.As gives the status.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("hub answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// Unwrap returns the error e's code stands for, or nil for an internal error
// or a code this client does not know.
func (e *APIError) Unwrap() error { return errorOfCode(e.Code) }

// Client calls a hub's admin API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for the admin API at addr (host:port) using the
// operator token.
func NewClient(addr, token string) *Client {
	return &Client{
		base:  "http://" + addr,
		token: token,
		http:  &http.Client{Timeout: 30 * time.Second},
	}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("httpapi: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("httpapi: read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var eb errorBody
		_ = json.Unmarshal(data, &eb)
		return &APIError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("httpapi: decode answer: %w", err)
	}
	return nil
}

// Info returns the hub's identity and addresses.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var out Info
	return out, c.do(ctx, http.MethodGet, "/v1/info", nil, &out)
}

// AddDevice enrols a device.
func (c *Client) AddDevice(ctx context.Context, q AddDeviceRequest) (hub.Device, error) {
	var out hub.Device
	return out, c.do(ctx, http.MethodPost, "/v1/devices", q, &out)
}

// Devices lists the registry.
func (c *Client) Devices(ctx context.Context) ([]hub.Device, error) {
	var out []hub.Device
	return out, c.do(ctx, http.MethodGet, "/v1/devices", nil, &out)
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (hub.Device, error) {
	var out hub.Device
	return out, c.do(ctx, http.MethodGet, "/v1/devices/"+url.PathEscape(id), nil, &out)
}

// Revoke revokes a device.
func (c *Client) Revoke(ctx context.Context, id, reason string) (hub.Device, error) {
	var out hub.Device
	return out, c.do(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+"/revoke", RevokeRequest{Reason: reason}, &out)
}

// UnreadableDevices lists the device records the hub cannot read.
func (c *Client) UnreadableDevices(ctx context.Context) ([]hub.UnreadableRecord, error) {
	var out []hub.UnreadableRecord
	return out, c.do(ctx, http.MethodGet, "/v1/devices/unreadable", nil, &out)
}

// RemoveDevice deletes an unreadable device record for good.
func (c *Client) RemoveDevice(ctx context.Context, id, reason string) error {
	return c.do(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+"/remove", RemoveDeviceRequest{Force: true, Reason: reason}, nil)
}

// Rotate moves a device to a new key with the old key's signature.
func (c *Client) Rotate(ctx context.Context, id string, newKey hub.PubKey, sig []byte) (hub.Device, error) {
	var out hub.Device
	q := RotateRequest{NewPubKey: newKey, Sig: hex.EncodeToString(sig)}
	return out, c.do(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+"/rotate", q, &out)
}

// Audit returns one page of the audit log from seq from on.
func (c *Client) Audit(ctx context.Context, from uint64, limit int) ([]hub.AuditEntry, error) {
	var out []hub.AuditEntry
	path := "/v1/audit?from=" + strconv.FormatUint(from, 10) + "&limit=" + strconv.Itoa(limit)
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// VerifyAudit fetches the whole audit log page by page and checks its hash
// chain locally, so a tampered store cannot vouch for itself. It returns the
// verified head, or an error wrapping hub.ErrAuditBroken naming the first bad
// entry.
func (c *Client) VerifyAudit(ctx context.Context) (hub.AuditEntry, error) {
	var v hub.AuditVerifier
	for {
		page, err := c.Audit(ctx, v.Head().Seq+1, maxAuditPage)
		if err != nil {
			return hub.AuditEntry{}, err
		}
		for _, e := range page {
			if err := v.Next(e); err != nil {
				return v.Head(), err
			}
		}
		if len(page) < maxAuditPage {
			return v.Head(), nil
		}
	}
}
