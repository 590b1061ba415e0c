package httpapi

import (
	"context"
	"net/http"
	"net/url"

	"github.com/m2mhub/m2mhub/hub"
)

// CDRs is what the CDR endpoints read: the OCPI CDRs the hub issued for EV
// sessions paid against their holds (hub.CDRStore has it).
type CDRs interface {
	// CDR returns the CDR with id, or an error wrapping hub.ErrNotFound.
	CDR(ctx context.Context, id string) (hub.CDRRecord, error)
	// CDRs lists provider's CDRs ("" for every provider), newest first.
	CDRs(ctx context.Context, provider string) ([]hub.CDRRecord, error)
}

func (h *Handler) routeCDRs() {
	if h.cfg.CDRs == nil {
		return
	}
	h.add("GET", "/v1/cdrs", AccessOwn, h.listCDRs)
	h.add("GET", "/v1/cdrs/{id}", AccessOwn, h.getCDR)
}

// listCDRs answers GET /v1/cdrs[?provider=ID]: every provider's for the
// operator and read-only credentials, a provider's own for its credential.
func (h *Handler) listCDRs(w http.ResponseWriter, r *http.Request) {
	provider := r.URL.Query().Get("provider")
	if p, ok := PrincipalOf(r.Context()); ok && provider == "" {
		// A provider credential lists its own; the others every one's.
		if id, isProvider := p.Scope.Provider(); isProvider {
			provider = id
		}
	}
	if provider != "" {
		if err := ownerOnly(r, provider); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	out, err := h.cfg.CDRs.CDRs(r.Context(), provider)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if out == nil {
		out = []hub.CDRRecord{}
	}
	writeJSON(w, http.StatusOK, out)
}

// getCDR answers GET /v1/cdrs/{id}.
func (h *Handler) getCDR(w http.ResponseWriter, r *http.Request) {
	rec, err := h.cfg.CDRs.CDR(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := ownerOnly(r, rec.Provider); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// CDRs lists the CDRs of provider ("" for all the credential may see),
// newest first.
func (c *Client) CDRs(ctx context.Context, provider string) ([]hub.CDRRecord, error) {
	path := "/v1/cdrs"
	if provider != "" {
		path += "?" + url.Values{"provider": {provider}}.Encode()
	}
	var out []hub.CDRRecord
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// CDR returns the CDR with id.
func (c *Client) CDR(ctx context.Context, id string) (hub.CDRRecord, error) {
	var out hub.CDRRecord
	return out, c.do(ctx, http.MethodGet, "/v1/cdrs/"+url.PathEscape(id), nil, &out)
}
