package httpapi_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/m2mhub/m2mhub/hub/httpapi"
)

// specPath is the published API description every response is checked
// against.
const specPath = "../../docs/openapi.yaml"

var (
	specOnce   sync.Once
	specDoc    *openapi3.T
	specRouter routers.Router
	specErr    error
)

// loadSpec loads docs/openapi.yaml with kin-openapi and validates it as an
// OpenAPI 3.1 document: structure, $refs, schemas, examples and defaults,
// and no stray keys (a flow mapping split by an unquoted comma shows up as
// an unknown sibling field).
func loadSpec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(specPath)
		if err != nil {
			specErr = err
			return
		}
		opts := []openapi3.ValidationOption{
			openapi3.EnableSchemaFormatValidation(), openapi3.EnableSchemaPatternValidation(),
			openapi3.EnableSchemaDefaultsValidation(), openapi3.EnableExamplesValidation(),
			openapi3.EnableMultiError(),
		}
		if specErr = doc.Validate(loader.Context, opts...); specErr != nil {
			return
		}
		// The router matches requests on the servers' host; the tests'
		// servers listen on random ports, so route on paths only.
		routed := *doc
		routed.Servers = nil
		specDoc = doc
		specRouter, specErr = legacy.NewRouter(&routed)
	})
	if specErr != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", specPath, specErr)
	}
	return specDoc, specRouter
}

// TestOpenAPIValid validates the spec with a real OpenAPI library and
// checks what third-party linters ask of every operation: a unique
// operationId, a summary, a 4XX answer, and the servers on hubd's default
// admin port.
func TestOpenAPIValid(t *testing.T) {
	doc, _ := loadSpec(t)
	if len(doc.Servers) == 0 || !strings.HasSuffix(doc.Servers[0].URL, ":9737") {
		t.Errorf("servers %v: want hubd's default admin address, port 9737", doc.Servers)
	}
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			key := method + " " + path
			switch {
			case op.OperationID == "":
				t.Errorf("%s has no operationId", key)
			case ids[op.OperationID] != "":
				t.Errorf("%s and %s share operationId %s", key, ids[op.OperationID], op.OperationID)
			}
			ids[op.OperationID] = key
			if op.Summary == "" {
				t.Errorf("%s has no summary", key)
			}
			has4xx := false
			for code := range op.Responses.Map() {
				has4xx = has4xx || strings.HasPrefix(code, "4")
			}
			if !has4xx && !strings.HasPrefix(path, "/dashboard") && path != "/healthz" {
				t.Errorf("%s documents no 4XX answer", key)
			}
		}
	}
}

// checkedHandler wraps h so that every answer it gives is validated
// against docs/openapi.yaml: the route must be documented, the status
// documented for it, and the body must match the status's schema.
func checkedHandler(t testing.TB, h http.Handler) http.Handler {
	_, router := loadSpec(t)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body)

		// A route the handler was not configured to serve answers the
		// mux's plain-text 404.
		if rec.Code == http.StatusNotFound && strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
			return
		}
		route, params, err := router.FindRoute(r)
		if err != nil {
			// An unrouted path answers 404 or 405 from the mux; anything
			// else served there is undocumented.
			if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s answered %d but is not in %s: %v", r.Method, r.URL.Path, rec.Code, specPath, err)
			}
			return
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route},
			Status:                 rec.Code,
			Header:                 rec.Header(),
			Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		}
		in.SetBodyBytes(bytes.Clone(body))
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s %s answered %d %s\nwhich %s does not describe: %v", r.Method, r.URL.RequestURI(), rec.Code, truncate(body, 400), specPath, err)
		}
	})
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// testInfo is what a hub on the embedded defaults answers to /v1/info.
func testInfo() httpapi.Info {
	return httpapi.Info{
		PubKey: "02" + strings.Repeat("ab", 32), P2PAddr: "127.0.0.1:9736", AdminAddr: "127.0.0.1:9737",
		MetricsAddr: "127.0.0.1:9738", NATSURL: "nats://127.0.0.1:9739", Network: "regtest", Store: "bolt:/tmp/hub.db",
		SettlePeriodSeconds: 3600, SettleBlocks: 144,
	}
}
