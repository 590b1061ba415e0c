package httpapi

import (
	"net/http"

	"github.com/m2mhub/m2mhub/hub/history"
)

// History is the hub's in-memory record of its recent figures.
// *metrics.Sampler satisfies it.
type History interface {
	// View returns the kept samples, oldest first, and the alert
	// conditions holding at the latest one.
	View() history.View
}

// routeHistory registers GET /v1/history when the handler has a History.
func (h *Handler) routeHistory() {
	if h.cfg.History == nil {
		return
	}
	h.add("GET", "/v1/history", AccessRead, h.history)
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	v := h.cfg.History.View()
	if v.Samples == nil {
		v.Samples = []history.Sample{}
	}
	if v.Alerts == nil {
		v.Alerts = []history.Alert{}
	}
	writeJSON(w, http.StatusOK, v)
}
