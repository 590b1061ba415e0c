package httpapi

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
)

// Channels is what the channel, exposure and hold endpoints read of the
// hub's channel manager; *channels.Manager implements it. Channel returns an
// error wrapping hub.ErrNotFound for an unknown outpoint.
type Channels interface {
	ListChannels(ctx context.Context, statuses ...hub.ChannelStatus) ([]hub.ChannelRecord, error)
	ChannelsOf(ctx context.Context, deviceID string) ([]hub.ChannelRecord, error)
	Channel(ctx context.Context, op wire.OutPoint) (hub.ChannelRecord, error)
	Exposure(ctx context.Context) (channels.Exposure, error)
	Expiring(ctx context.Context, within uint32) (uint32, []hub.ChannelRecord, error)
	HoldsOf(ctx context.Context, deviceID string) ([]hub.Hold, error)
}

var _ Channels = (*channels.Manager)(nil)

// DefaultExpiringWithin is the window of GET /v1/channels/expiring without
// ?within: one day of blocks.
const DefaultExpiringWithin = 144

// ChannelView is a channel as the API shows it.
type ChannelView struct {
	// Outpoint is the funding output "txid:index"; empty while the
	// channel waits for its funding.
	Outpoint string            `json:"outpoint"`
	DeviceID string            `json:"device_id"`
	Status   hub.ChannelStatus `json:"status"`
	Capacity btcutil.Amount    `json:"capacity_sat"`
	Expiry   uint32            `json:"expiry_height"`
	Seq      uint64            `json:"seq"`
	// Paid is the device's cumulative payment to the hub; Owed service
	// charged on credit; Balance what is still the device's
	// (capacity − paid − owed).
	Paid     msat.Amount `json:"paid_msat"`
	Owed     msat.Amount `json:"owed_msat"`
	Balance  msat.Amount `json:"balance_msat"`
	MinDepth uint32      `json:"min_depth"`
	CloseTx  string      `json:"close_txid,omitempty"`
	Created  time.Time   `json:"created"`
	Updated  time.Time   `json:"updated"`
}

func channelView(r hub.ChannelRecord) ChannelView {
	v := ChannelView{
		DeviceID: r.DeviceID, Status: r.Status, Capacity: r.Capacity, Expiry: r.Expiry,
		Seq: r.Seq, Paid: r.Paid, Owed: r.Owed, MinDepth: r.MinDepth,
		Created: r.CreatedAt.UTC(), Updated: r.UpdatedAt.UTC(),
	}
	if r.Funding != (wire.OutPoint{}) {
		v.Outpoint = r.Funding.String()
	}
	if c := msat.FromSatoshis(r.Capacity); c > r.Paid+r.Owed {
		v.Balance = c - r.Paid - r.Owed
	}
	if r.CloseTx != nil {
		v.CloseTx = r.CloseTx.String()
	}
	return v
}

func channelViews(rs []hub.ChannelRecord) []ChannelView {
	out := make([]ChannelView, 0, len(rs))
	for _, r := range rs {
		out = append(out, channelView(r))
	}
	return out
}

// ExpiringView answers GET /v1/channels/expiring.
type ExpiringView struct {
	// Height is the best block height the window counts from.
	Height   uint32        `json:"height"`
	Within   uint32        `json:"within"`
	Channels []ChannelView `json:"channels"`
}

// HoldView is a hold as the API shows it.
type HoldView struct {
	ID        string         `json:"id"`
	Channel   string         `json:"channel"`
	DeviceID  string         `json:"device_id"`
	Provider  string         `json:"provider"`
	Max       msat.Amount    `json:"max_msat"`
	Captured  msat.Amount    `json:"captured_msat"`
	Remaining msat.Amount    `json:"remaining_msat"`
	Status    hub.HoldStatus `json:"status"`
	Expires   time.Time      `json:"expires"`
	Memo      string         `json:"memo,omitempty"`
	Created   time.Time      `json:"created"`
}

func holdView(h hub.Hold) HoldView {
	return HoldView{
		ID: hex.EncodeToString(h.ID[:]), Channel: h.Channel.String(), DeviceID: h.DeviceID,
		Provider: h.Provider, Max: h.Max, Captured: h.Captured, Remaining: h.Remaining(),
		Status: h.Status, Expires: h.Expires.UTC(), Memo: h.Memo, Created: h.CreatedAt.UTC(),
	}
}

// routeChannels registers the channel endpoints when the handler was
// given Channels.
func (h *Handler) routeChannels() {
	if h.cfg.Channels == nil {
		return
	}
	h.add("GET", "/v1/channels", AccessRead, h.listChannels)
	h.add("GET", "/v1/channels/expiring", AccessRead, h.expiringChannels)
	h.add("GET", "/v1/channels/{outpoint}", AccessRead, h.getChannel)
	h.add("GET", "/v1/exposure", AccessRead, h.exposure)
	h.add("GET", "/v1/holds", AccessRead, h.listHolds)
}

// listChannels answers GET /v1/channels[?device=ID][&status=S].
func (h *Handler) listChannels(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var rs []hub.ChannelRecord
	var err error
	if dev := q.Get("device"); dev != "" {
		rs, err = h.cfg.Channels.ChannelsOf(r.Context(), dev)
	} else if st := q.Get("status"); st != "" {
		rs, err = h.cfg.Channels.ListChannels(r.Context(), hub.ChannelStatus(st))
	} else {
		rs, err = h.cfg.Channels.ListChannels(r.Context())
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if st := q.Get("status"); st != "" && q.Get("device") != "" {
		kept := rs[:0]
		for _, c := range rs {
			if string(c.Status) == st {
				kept = append(kept, c)
			}
		}
		rs = kept
	}
	writeJSON(w, http.StatusOK, channelViews(rs))
}

func (h *Handler) getChannel(w http.ResponseWriter, r *http.Request) {
	op, err := wire.NewOutPointFromString(r.PathValue("outpoint"))
	if err != nil {
		h.fail(w, r, fmt.Errorf("%w: outpoint must be txid:index: %v", hub.ErrInvalid, err))
		return
	}
	c, err := h.cfg.Channels.Channel(r.Context(), *op)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, channelView(c))
}

func (h *Handler) exposure(w http.ResponseWriter, r *http.Request) {
	x, err := h.cfg.Channels.Exposure(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, x)
}

// expiringChannels answers GET /v1/channels/expiring[?within=N blocks].
func (h *Handler) expiringChannels(w http.ResponseWriter, r *http.Request) {
	within := uint64(DefaultExpiringWithin)
	if s := r.URL.Query().Get("within"); s != "" {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: within must be a block count", hub.ErrInvalid))
			return
		}
		within = v
	}
	height, rs, err := h.cfg.Channels.Expiring(r.Context(), uint32(within))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ExpiringView{Height: height, Within: uint32(within), Channels: channelViews(rs)})
}

// listHolds answers GET /v1/holds[?device=ID][&status=S].
func (h *Handler) listHolds(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	hs, err := h.cfg.Channels.HoldsOf(r.Context(), q.Get("device"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]HoldView, 0, len(hs))
	for _, x := range hs {
		if st := q.Get("status"); st != "" && string(x.Status) != st {
			continue
		}
		out = append(out, holdView(x))
	}
	writeJSON(w, http.StatusOK, out)
}

// ChannelList returns the channels of device, or every channel when device
// is empty.
func (c *Client) ChannelList(ctx context.Context, device string) ([]ChannelView, error) {
	q := url.Values{}
	if device != "" {
		q.Set("device", device)
	}
	var out []ChannelView
	return out, c.do(ctx, http.MethodGet, "/v1/channels?"+q.Encode(), nil, &out)
}

// ChannelShow returns the channel funded by outpoint ("txid:index").
func (c *Client) ChannelShow(ctx context.Context, outpoint string) (ChannelView, error) {
	var out ChannelView
	return out, c.do(ctx, http.MethodGet, "/v1/channels/"+url.PathEscape(outpoint), nil, &out)
}

// Exposure returns what the hub stands to lose if every device vanished.
func (c *Client) Exposure(ctx context.Context) (channels.Exposure, error) {
	var out channels.Exposure
	return out, c.do(ctx, http.MethodGet, "/v1/exposure", nil, &out)
}

// Expiring returns the open channels expiring within blocks of the tip.
func (c *Client) Expiring(ctx context.Context, within uint32) (ExpiringView, error) {
	var out ExpiringView
	return out, c.do(ctx, http.MethodGet, "/v1/channels/expiring?within="+strconv.FormatUint(uint64(within), 10), nil, &out)
}

// Holds returns the holds on device's channels, or on every open channel
// when device is empty.
func (c *Client) Holds(ctx context.Context, device string) ([]HoldView, error) {
	q := url.Values{}
	if device != "" {
		q.Set("device", device)
	}
	var out []HoldView
	return out, c.do(ctx, http.MethodGet, "/v1/holds?"+q.Encode(), nil, &out)
}
