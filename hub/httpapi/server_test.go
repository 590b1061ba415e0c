package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
)

const token = "0123456789abcdef0123456789abcdef"

// newAPI serves the admin API over a real registry on a real bolt store.
func newAPI(t *testing.T) (*httptest.Server, *httpapi.Client) {
	t.Helper()
	store, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{
		Registry: reg, Token: token,
		Info: testInfo,
		Health: []httpapi.HealthCheck{
			{Name: "store", Check: func(context.Context) error { return nil }},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, h))
	t.Cleanup(srv.Close)
	return srv, httpapi.NewClient(strings.TrimPrefix(srv.URL, "http://"), token)
}

func TestAuthorization(t *testing.T) {
	srv, _ := newAPI(t)
	for _, c := range []struct {
		name, path, auth string
		want             int
	}{
		{"NoCredential", "/v1/devices", "", http.StatusUnauthorized},
		{"WrongCredential", "/v1/devices", "Bearer nope", http.StatusUnauthorized},
		{"WrongScheme", "/v1/devices", "Basic " + token, http.StatusUnauthorized},
		{"OK", "/v1/devices", "Bearer " + token, http.StatusOK},
		{"InfoOK", "/v1/info", "Bearer " + token, http.StatusOK},
		{"AuditNoCredential", "/v1/audit", "", http.StatusUnauthorized},
		{"HealthNeedsNone", "/healthz", "", http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+c.path, nil)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}

func TestErrorTable(t *testing.T) {
	srv, cl := newAPI(t)
	ctx := context.Background()
	k, _ := btcec.NewPrivateKey()
	key := hub.PubKeyOf(k.PubKey())
	if _, err := cl.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: key, Roles: []hub.Role{hub.RolePayer}}); err != nil {
		t.Fatal(err)
	}
	status := func(err error) int {
		var api *httpapi.APIError
		if !errors.As(err, &api) {
			t.Fatalf("not an API error: %v", err)
		}
		return api.Status
	}
	t.Run("ErrAlreadyExists", func(t *testing.T) {
		_, err := cl.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: key, Roles: []hub.Role{hub.RolePayer}})
		if status(err) != http.StatusConflict || !errors.Is(err, hub.ErrAlreadyExists) {
			t.Fatal(err)
		}
		if strings.Count(err.Error(), "already exists") != 1 || strings.Contains(err.Error(), "hub: hub:") {
			t.Fatalf("message names the error more than once: %v", err)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		if _, err := cl.Revoke(ctx, "dev-nope", ""); status(err) != http.StatusNotFound || !errors.Is(err, hub.ErrNotFound) || errors.Is(err, hub.ErrInvalid) {
			t.Fatal(err)
		}
	})
	t.Run("ErrInvalidNoRole", func(t *testing.T) {
		k2, _ := btcec.NewPrivateKey()
		_, err := cl.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(k2.PubKey())})
		if status(err) != http.StatusBadRequest || !errors.Is(err, hub.ErrInvalid) {
			t.Fatal(err)
		}
	})
	t.Run("ErrInvalidBody", func(t *testing.T) {
		for _, body := range []string{`{`, `{"pubkey":"zz","roles":["payer"]}`, `{"pubkey":"` + key.String() + `","roles":["payer"],"extra":1}`} {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/devices", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("%s: status %d", body, resp.StatusCode)
			}
		}
	})
	t.Run("AuditVerifies", func(t *testing.T) {
		head, err := cl.VerifyAudit(ctx)
		if err != nil || head.Seq != 1 {
			t.Fatalf("head %d, %v", head.Seq, err)
		}
	})
}
