package httpapi

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
)

// Receipts is what GET /v1/channels/{outpoint}/receipts needs: the
// receipts the hub issued for a channel's payments, by sequence number
// (hub.ChannelStore has it).
type Receipts interface {
	// Receipts returns up to limit encoded receipts of channel op with
	// sequence numbers from from on, in order.
	Receipts(ctx context.Context, op wire.OutPoint, from uint64, limit int) ([][]byte, error)
}

// Paging bounds of the receipt list.
const (
	defaultReceiptsPage = 100
	maxReceiptsPage     = 1000
)

// ReceiptView is one receipt as the receipt list shows it; Receipt is its
// binary encoding in hex, what hubctl receipt verify reads.
type ReceiptView struct {
	ID         HexHash     `json:"id"`
	Channel    string      `json:"channel"`
	Seq        uint64      `json:"seq"`
	Payer      string      `json:"payer"`
	Payee      string      `json:"payee"`
	Amount     msat.Amount `json:"amount_msat"`
	Paid       msat.Amount `json:"paid_msat"`
	Time       time.Time   `json:"time"`
	EventCount uint32      `json:"events"`
	Memo       string      `json:"memo,omitempty"`
	Receipt    string      `json:"receipt"`
}

func (h *Handler) routeReceipts() {
	if h.cfg.Receipts == nil {
		return
	}
	h.add("GET", "/v1/channels/{outpoint}/receipts", AccessRead, h.listReceipts)
}

// listReceipts answers GET /v1/channels/{outpoint}/receipts[?from=SEQ][&limit=N].
func (h *Handler) listReceipts(w http.ResponseWriter, r *http.Request) {
	op, err := wire.NewOutPointFromString(r.PathValue("outpoint"))
	if err != nil {
		h.fail(w, r, fmt.Errorf("%w: outpoint must be txid:index: %v", hub.ErrInvalid, err))
		return
	}
	q := r.URL.Query()
	var from uint64
	if s := q.Get("from"); s != "" {
		if from, err = strconv.ParseUint(s, 10, 64); err != nil {
			h.fail(w, r, fmt.Errorf("%w: from must be a sequence number", hub.ErrInvalid))
			return
		}
	}
	limit := defaultReceiptsPage
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
			h.fail(w, r, fmt.Errorf("%w: limit must be a positive integer", hub.ErrInvalid))
			return
		}
		limit = min(limit, maxReceiptsPage)
	}
	raw, err := h.cfg.Receipts.Receipts(r.Context(), *op, from, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]ReceiptView, 0, len(raw))
	for _, b := range raw {
		var rc channel.Receipt
		if err := rc.UnmarshalBinary(b); err != nil {
			h.fail(w, r, fmt.Errorf("httpapi: stored receipt of %s: %w", op, err))
			return
		}
		out = append(out, ReceiptView{
			ID: rc.ID(), Channel: rc.Channel.String(), Seq: rc.Seq, Payer: rc.Payer, Payee: rc.Payee,
			Amount: rc.Amount, Paid: rc.Paid, Time: rc.Time.UTC(), EventCount: rc.EventCount, Memo: rc.Memo,
			Receipt: hex.EncodeToString(b),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// ChannelReceipts returns up to limit receipts of channel op from sequence
// number from on.
func (c *Client) ChannelReceipts(ctx context.Context, op wire.OutPoint, from uint64, limit int) ([]ReceiptView, error) {
	q := url.Values{}
	q.Set("from", strconv.FormatUint(from, 10))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []ReceiptView
	return out, c.do(ctx, http.MethodGet, "/v1/channels/"+op.String()+"/receipts?"+q.Encode(), nil, &out)
}
