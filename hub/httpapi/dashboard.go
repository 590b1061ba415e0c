package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
)

// dashboardFiles is the dashboard: plain HTML, CSS and JavaScript with no
// build step and nothing fetched from elsewhere (hubs run on closed
// networks), reading the JSON API with a credential the page asks for.
//
//go:embed dashboard/*
var dashboardFiles embed.FS

// routeDashboard serves the dashboard shell and its assets without a
// credential: they hold no data, and the page calls the API with the
// read-only credential the operator gives it.
func (h *Handler) routeDashboard() {
	sub, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	assets := http.StripPrefix("/dashboard/", http.FileServerFS(sub))
	h.add("GET", "/dashboard", AccessPublic, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		// The page must not be framed by another site, and runs only
		// its own scripts.
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	h.add("GET", "/dashboard/{asset}", AccessPublic, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		assets.ServeHTTP(w, r)
	})
}
