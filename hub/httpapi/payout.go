package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"

	"github.com/m2mhub/m2mhub/hub"
)

// PayoutSetter is the part of the registry that sets payout scripts.
// *registry.Registry satisfies it; POST /v1/devices/{id}/payout is served only
// when Config.Registry does.
type PayoutSetter interface {
	SetPayout(ctx context.Context, id string, pkScript []byte, actor string) (hub.Device, error)
}

// PayoutRequest is the body of POST /v1/devices/{id}/payout: a bitcoin
// address of the hub's network, or "" to clear the payout (earnings are
// then carried).
type PayoutRequest struct {
	Address string `json:"address"`
}

// routePayout registers the payout endpoint when the registry can set
// payouts.
func (h *Handler) routePayout() {
	if _, ok := h.cfg.Registry.(PayoutSetter); ok {
		h.add("POST", "/v1/devices/{id}/payout", AccessOperator, h.setPayout)
	}
}

func (q *PayoutRequest) validate() error { return checkLen("address", q.Address, maxAddrLen, false) }

func (h *Handler) setPayout(w http.ResponseWriter, r *http.Request) {
	var q PayoutRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	var script []byte
	if q.Address != "" {
		params, err := networkParams(h.cfg.Info().Network)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		addr, err := btcutil.DecodeAddress(q.Address, params)
		if err != nil || !addr.IsForNet(params) {
			h.fail(w, r, fmt.Errorf("%w: %q is not a %s address", hub.ErrInvalid, q.Address, params.Name))
			return
		}
		if script, err = txscript.PayToAddrScript(addr); err != nil {
			h.fail(w, r, fmt.Errorf("%w: %v", hub.ErrInvalid, err))
			return
		}
	}
	d, err := h.cfg.Registry.(PayoutSetter).SetPayout(r.Context(), r.PathValue("id"), script, actorOf(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// networkParams finds the parameters of the network Info names.
func networkParams(name string) (*chaincfg.Params, error) {
	for _, p := range []*chaincfg.Params{
		&chaincfg.MainNetParams, &chaincfg.TestNet3Params, &chaincfg.TestNet4Params,
		&chaincfg.SigNetParams, &chaincfg.SimNetParams, &chaincfg.RegressionNetParams,
	} {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("httpapi: unknown network %q", name)
}

// SetPayout sets (or, with address "", clears) a device's payout address.
func (c *Client) SetPayout(ctx context.Context, id, address string) (hub.Device, error) {
	var out hub.Device
	return out, c.do(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+"/payout", PayoutRequest{Address: address}, &out)
}
