package httpapi

import (
	"context"
	"net/http"
	"net/url"

	"github.com/m2mhub/m2mhub/hub/webhook"
)

// WebhookDeliveries is what the delivery endpoints need of the webhook
// dispatcher. *webhook.Dispatcher satisfies it. Redeliver and Test return
// errors wrapping hub.ErrNotFound for an unknown delivery or endpoint.
type WebhookDeliveries interface {
	Deliveries(ctx context.Context) ([]webhook.Delivery, error)
	Redeliver(ctx context.Context, id string) (webhook.Delivery, error)
	Test(ctx context.Context, endpointID string) (webhook.Delivery, error)
}

var _ WebhookDeliveries = (*webhook.Dispatcher)(nil)

// routeDeliveries registers the delivery endpoints when the handler was
// given the dispatcher.
func (h *Handler) routeDeliveries() {
	if h.cfg.Deliveries == nil {
		return
	}
	h.add("GET", "/v1/webhooks/deliveries", AccessOperator, h.listDeliveries)
	h.add("POST", "/v1/webhooks/deliveries/{id}/redeliver", AccessOperator, h.redeliver)
	h.add("POST", "/v1/webhooks/{id}/test", AccessOperator, h.testWebhook)
}

func (h *Handler) listDeliveries(w http.ResponseWriter, r *http.Request) {
	ds, err := h.cfg.Deliveries.Deliveries(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

func (h *Handler) redeliver(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := h.cfg.Deliveries.Redeliver(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, d)
}

func (h *Handler) testWebhook(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := h.cfg.Deliveries.Test(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, d)
}

// WebhookDeliveries lists pending and dead webhook deliveries.
func (c *Client) WebhookDeliveries(ctx context.Context) ([]webhook.Delivery, error) {
	var out []webhook.Delivery
	return out, c.do(ctx, http.MethodGet, "/v1/webhooks/deliveries", nil, &out)
}

// Redeliver queues a dead delivery again.
func (c *Client) Redeliver(ctx context.Context, id string) (webhook.Delivery, error) {
	var out webhook.Delivery
	return out, c.do(ctx, http.MethodPost, "/v1/webhooks/deliveries/"+url.PathEscape(id)+"/redeliver", nil, &out)
}

// TestWebhook queues a ping to one endpoint.
func (c *Client) TestWebhook(ctx context.Context, endpointID string) (webhook.Delivery, error) {
	var out webhook.Delivery
	return out, c.do(ctx, http.MethodPost, "/v1/webhooks/"+url.PathEscape(endpointID)+"/test", nil, &out)
}
