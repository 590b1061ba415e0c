package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/webhook"
)

// Webhooks is what the webhook endpoints need: the registry of providers'
// webhook endpoints. *webhook.Endpoints satisfies it. Add returns an
// error wrapping hub.ErrInvalid for a bad URL; Remove one wrapping
// hub.ErrNotFound for an unknown id.
type Webhooks interface {
	Add(ctx context.Context, provider, url string) (webhook.Endpoint, error)
	List(ctx context.Context) ([]webhook.Endpoint, error)
	Remove(ctx context.Context, id string) error
}

// AddWebhookRequest is the body of POST /v1/webhooks.
type AddWebhookRequest struct {
	Provider string `json:"provider"`
	URL      string `json:"url"`
}

// routeWebhooks registers the webhook endpoints when the handler was given
// a Webhooks registry. They are operator-only: a secret is a credential.
func (h *Handler) routeWebhooks() {
	if h.cfg.Webhooks == nil {
		return
	}
	h.add("POST", "/v1/webhooks", AccessOperator, h.addWebhook)
	h.add("GET", "/v1/webhooks", AccessOperator, h.listWebhooks)
	h.add("DELETE", "/v1/webhooks/{id}", AccessOperator, h.removeWebhook)
}

// addWebhook registers an endpoint for a registered provider and answers
// with its secret, shown this once.
func (q *AddWebhookRequest) validate() error {
	return errors.Join(checkLen("provider", q.Provider, hub.MaxIDLen, true), checkLen("url", q.URL, maxURLLen, true))
}

func (h *Handler) addWebhook(w http.ResponseWriter, r *http.Request) {
	var q AddWebhookRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := h.cfg.Registry.Device(r.Context(), q.Provider)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !d.HasRole(hub.RoleProvider) {
		h.fail(w, r, fmt.Errorf("%w: %s is not a provider", hub.ErrInvalid, q.Provider))
		return
	}
	ep, err := h.cfg.Webhooks.Add(r.Context(), q.Provider, q.URL)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ep)
}

func (h *Handler) listWebhooks(w http.ResponseWriter, r *http.Request) {
	eps, err := h.cfg.Webhooks.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if eps == nil {
		eps = []webhook.Endpoint{}
	}
	writeJSON(w, http.StatusOK, eps)
}

func (h *Handler) removeWebhook(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.cfg.Webhooks.Remove(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// AddWebhook registers a provider's webhook URL; the answer holds the
// secret, shown once.
func (c *Client) AddWebhook(ctx context.Context, provider, rawURL string) (webhook.Endpoint, error) {
	var out webhook.Endpoint
	return out, c.do(ctx, http.MethodPost, "/v1/webhooks", AddWebhookRequest{Provider: provider, URL: rawURL}, &out)
}

// Webhooks lists the webhook endpoints, without secrets.
func (c *Client) Webhooks(ctx context.Context) ([]webhook.Endpoint, error) {
	var out []webhook.Endpoint
	return out, c.do(ctx, http.MethodGet, "/v1/webhooks", nil, &out)
}

// RemoveWebhook deletes a webhook endpoint.
func (c *Client) RemoveWebhook(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/webhooks/"+url.PathEscape(id), nil, nil)
}
