package httpapi_test

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"
	"go.yaml.in/yaml/v3"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/httpapi/credfile"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/webhook"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// fixedChain is a test-only chain for the channel manager's read paths:
// a fixed tip height, and nothing else (the manager is never started, so
// nothing watches or broadcasts).
type fixedChain struct{ height int32 }

func (c fixedChain) BlockCount(context.Context) (int32, error) { return c.height, nil }
func (fixedChain) TxOut(context.Context, wire.OutPoint, bool) (hub.TxOut, error) {
	return hub.TxOut{}, errors.New("fixedChain: no outputs")
}
func (fixedChain) Confirmations(context.Context, chainhash.Hash) (int64, error) {
	return 0, errors.New("fixedChain: no transactions")
}
func (fixedChain) SendRawTransaction(context.Context, *wire.MsgTx) (chainhash.Hash, error) {
	return chainhash.Hash{}, errors.New("fixedChain: no broadcast")
}

type noSessions struct{}

// fakeNATS is a test-only provider credential issuer: it remembers one
// made-up nkey per provider (the real issuer needs an embedded NATS).
type fakeNATS struct{ users map[string]string }

func (f *fakeNATS) IssueNATS(_ context.Context, id string) (string, []byte, error) {
	f.users[id] = "U" + strings.ToUpper(id)
	return f.users[id], []byte("SU" + id), nil
}

func (f *fakeNATS) NATSUsers(context.Context) (map[string]string, error) { return f.users, nil }

func (noSessions) Session(string) (*session.Session, bool) { return nil, false }

// fullAPI is an admin API with every optional part of httpapi.Config
// configured, so its route table is the complete one: a real registry,
// contract store and channel manager over one bolt store, scoped
// credentials and webhook endpoints in real files, a fake NATS issuer and
// the fake settlement service.
type fullAPI struct {
	srv      *httptest.Server
	h        *httpapi.Handler
	store    *boltstore.Store
	reg      *registry.Registry
	creds    *credfile.Store
	credPath string
}

func newFullAPI(t *testing.T) *fullAPI {
	t.Helper()
	dir := t.TempDir()
	store, err := boltstore.New(boltstore.Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := httpapi.JoinContracts(httpapi.ContractsConfig{Store: store, Auditor: reg, Incomes: incomesOf{store}})
	if err != nil {
		t.Fatal(err)
	}
	hubKey, _ := btcec.NewPrivateKey()
	chans, err := channels.New(channels.Config{
		Store: store, Devices: reg, Sessions: noSessions{}, Chain: fixedChain{height: 500},
		HubKey: hubKey, PayoutScript: []byte{0x51}, Params: &chaincfg.RegressionNetParams,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chans.Close() })
	credPath := filepath.Join(dir, "creds.json")
	creds, err := credfile.New(credfile.Config{Path: credPath})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhook.OpenEndpoints(filepath.Join(dir, "webhooks.json"), nil, webhook.AddressPolicy{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	outbox, err := webhook.New(webhook.Config{OutboxPath: filepath.Join(dir, "outbox.db"), Endpoints: hooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outbox.Close() })
	cfg := httpapi.Config{
		Registry: reg, Token: token, Contracts: cs, Settlement: mustFakeSettlement(t),
		Creds: creds, Channels: chans, Webhooks: hooks, Receipts: store, Deliveries: outbox, CDRs: store,
		Providers: &fakeNATS{users: map[string]string{}},
		Info:      testInfo,
		Health:    []httpapi.HealthCheck{{Name: "store", Check: func(context.Context) error { return nil }}},
		Logger:    slog.New(slog.DiscardHandler), Clock: clock.NewDefaultClock(),
		History: mustHistory(t),
	}
	// Routes are registered only for the parts that are configured; a
	// field added to Config later and left out here would hide its routes
	// from the spec and authorisation tests.
	v := reflect.ValueOf(cfg)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("fullAPI leaves httpapi.Config.%s unset: its routes would go unchecked", v.Type().Field(i).Name)
		}
	}
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, h))
	t.Cleanup(srv.Close)
	return &fullAPI{srv: srv, h: h, store: store, reg: reg, creds: creds, credPath: credPath}
}

// addCred stores a credential with scope directly and returns its token.
func (a *fullAPI) addCred(t *testing.T, scope httpapi.Scope) (id, tok string) {
	t.Helper()
	id, tok, err := httpapi.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	err = a.creds.Add(context.Background(), httpapi.Credential{ID: id, Scope: scope, Hash: httpapi.TokenHash(tok), Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return id, tok
}

func (a *fullAPI) call(t *testing.T, method, path, tok string) int {
	t.Helper()
	var body *strings.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	} else {
		body = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, a.srv.URL+path, body)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestOpenAPIMatchesRoutes checks docs/openapi.yaml against the route
// table both ways: every served route is documented with its method, path
// and access level, and the spec documents no route that is not served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
		Comps   struct {
			SecuritySchemes map[string]any `yaml:"securitySchemes"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("openapi.yaml does not parse: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1.x", spec.OpenAPI)
	}
	documented := map[string]map[string]any{}
	for path, ops := range spec.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = op
		}
	}
	a := newFullAPI(t)
	served := map[string]bool{}
	for _, r := range a.h.Routes() {
		key := r.Method + " " + r.Pattern
		served[key] = true
		op, ok := documented[key]
		if !ok {
			t.Errorf("%s is served but not in docs/openapi.yaml", key)
			continue
		}
		if got := op["x-access"]; got != string(r.Access) {
			t.Errorf("%s: spec x-access %v, route needs %s", key, got, r.Access)
		}
		sec, _ := op["security"].([]any)
		if r.Access == httpapi.AccessPublic {
			if len(sec) != 0 {
				t.Errorf("%s: public route documents security %v", key, sec)
			}
			continue
		}
		if len(sec) != 1 {
			t.Errorf("%s: want one security requirement, have %v", key, sec)
			continue
		}
		req, _ := sec[0].(map[string]any)
		scopes, _ := req["bearer"].([]any)
		want := map[httpapi.Access][]any{
			httpapi.AccessOperator: {"operator"},
			httpapi.AccessRead:     {"operator", "read-only"},
			httpapi.AccessOwn:      {"operator", "read-only", "provider"},
		}[r.Access]
		if !slices.Equal(scopes, want) {
			t.Errorf("%s: spec scopes %v, want %v", key, scopes, want)
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("%s is in docs/openapi.yaml but not served", key)
		}
	}
	if _, ok := spec.Comps.SecuritySchemes["bearer"]; !ok {
		t.Error("no bearer security scheme")
	}
}

// TestAuthorizationMatrix calls every route with every kind of
// credential: none, a wrong one, a revoked one, operator, read-only, the
// provider whose data the request asks for, and another provider.
func TestAuthorizationMatrix(t *testing.T) {
	a := newFullAPI(t)
	_, opTok := a.addCred(t, httpapi.ScopeOperator)
	_, roTok := a.addCred(t, httpapi.ScopeReadOnly)
	_, ownTok := a.addCred(t, httpapi.ProviderScope("gantry-7"))
	_, otherTok := a.addCred(t, httpapi.ProviderScope("meter-3"))
	revID, revTok := a.addCred(t, httpapi.ScopeOperator)
	if _, err := a.creds.Revoke(context.Background(), revID, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A receipt of gantry-7's from the fake settlement's tree.
	f := mustFakeSettlement(t)
	var receiptID string
	for id := range f.receipts {
		receiptID = hex.EncodeToString(id[:])
		break
	}
	// A CDR of gantry-7's.
	const cdrID = "CDR0123"
	if err := a.store.PutCDR(context.Background(), hubtest.ExampleCDR(t, "../..", cdrID, "gantry-7", time.Now())); err != nil {
		t.Fatal(err)
	}
	sample := strings.NewReplacer(
		"{id}", "nosuchid", "{hash}", strings.Repeat("00", 32),
		"{outpoint}", strings.Repeat("00", 32)+":0", "{asset}", "app.js",
	)
	path := func(r httpapi.Route) string {
		switch r.Pattern {
		case "/v1/income":
			return "/v1/income?provider=gantry-7"
		case "/v1/receipts/{id}/proof":
			return "/v1/receipts/" + receiptID + "/proof"
		case "/v1/cdrs":
			return "/v1/cdrs?provider=gantry-7"
		case "/v1/cdrs/{id}":
			return "/v1/cdrs/" + cdrID
		}
		return sample.Replace(r.Pattern)
	}
	// Contracts are published tariffs: every provider reads all of them.
	ownerless := map[string]bool{"GET /v1/contracts": true, "GET /v1/contracts/{hash}": true}

	type who struct {
		name string
		tok  string
	}
	cols := []who{{"none", ""}, {"wrong", "m2m_" + strings.Repeat("ab", 32)}, {"revoked", revTok},
		{"root", token}, {"operator", opTok}, {"read-only", roTok}, {"provider-own", ownTok}, {"provider-other", otherTok}}
	routes := a.h.Routes()
	if len(routes) < 30 {
		t.Fatalf("only %d routes: the full API should serve every part", len(routes))
	}
	for _, r := range routes {
		key := r.Method + " " + r.Pattern
		for _, c := range cols {
			// denied is the status the credential must get, 0 when
			// it must be let through.
			denied := 0
			switch {
			case r.Access == httpapi.AccessPublic:
			case c.name == "none", c.name == "wrong", c.name == "revoked":
				denied = http.StatusUnauthorized
			case c.name == "root", c.name == "operator":
			case c.name == "read-only":
				if r.Access == httpapi.AccessOperator {
					denied = http.StatusForbidden
				}
			case c.name == "provider-own":
				if r.Access != httpapi.AccessOwn {
					denied = http.StatusForbidden
				}
			case c.name == "provider-other" && key == "GET /v1/receipts/{id}/proof":
				// Another's receipt looks like no receipt at all.
				denied = http.StatusNotFound
			case c.name == "provider-other":
				if r.Access != httpapi.AccessOwn || !ownerless[key] {
					denied = http.StatusForbidden
				}
			}
			t.Run(strings.ReplaceAll(key, "/", "_")+"/"+c.name, func(t *testing.T) {
				got := a.call(t, r.Method, path(r), c.tok)
				switch {
				case denied != 0 && got != denied:
					t.Fatalf("%s as %s: status %d, want %d", key, c.name, got, denied)
				case denied == 0 && (got == http.StatusUnauthorized || got == http.StatusForbidden || got >= 500):
					t.Fatalf("%s as %s: status %d, want it let through", key, c.name, got)
				}
			})
		}
	}
}

// TestCredsLifecycle creates a credential through the API, uses it,
// revokes it, and checks the audit log and the file on disk.
func TestCredsLifecycle(t *testing.T) {
	a := newFullAPI(t)
	ctx := context.Background()
	root := httpapi.NewClient(strings.TrimPrefix(a.srv.URL, "http://"), token)
	k, _ := btcec.NewPrivateKey()
	prov, err := root.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(k.PubKey()), Roles: []hub.Role{hub.RoleProvider}})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := btcec.NewPrivateKey()
	payer, err := root.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(kp.PubKey()), Roles: []hub.Role{hub.RolePayer}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ErrInvalid", func(t *testing.T) {
		for _, q := range []httpapi.CreateCredRequest{
			{Scope: "admin"}, {Scope: "provider", Device: payer.ID}, {Scope: "read-only", Device: prov.ID},
		} {
			_, err := root.CreateCred(ctx, q)
			var api *httpapi.APIError
			if !errors.As(err, &api) || api.Status != http.StatusBadRequest {
				t.Errorf("%+v: %v, want 400", q, err)
			}
		}
		_, err := root.CreateCred(ctx, httpapi.CreateCredRequest{Scope: "provider", Device: "nosuch"})
		var api *httpapi.APIError
		if !errors.As(err, &api) || api.Status != http.StatusNotFound {
			t.Errorf("unknown provider: %v, want 404", err)
		}
	})

	ro, err := root.CreateCred(ctx, httpapi.CreateCredRequest{Scope: "read-only", Label: "dashboard"})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := root.CreateCred(ctx, httpapi.CreateCredRequest{Scope: "provider", Device: prov.ID})
	if err != nil {
		t.Fatal(err)
	}
	if pc.Scope != httpapi.ProviderScope(prov.ID) || ro.Scope != httpapi.ScopeReadOnly {
		t.Fatalf("scopes %s, %s", pc.Scope, ro.Scope)
	}

	t.Run("FileHoldsHashesOnly", func(t *testing.T) {
		fi, err := os.Stat(a.credPath)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
		b, _ := os.ReadFile(a.credPath)
		if strings.Contains(string(b), ro.Token) || !strings.Contains(string(b), httpapi.TokenHash(ro.Token)) {
			t.Error("the file must hold the token's hash and never the token")
		}
		// A fresh store over the same file sees the same credentials.
		again, err := credfile.New(credfile.Config{Path: a.credPath})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := again.ByHash(ctx, httpapi.TokenHash(pc.Token)); err != nil || c.ID != pc.ID {
			t.Errorf("reopened: %+v, %v", c, err)
		}
	})

	roc := httpapi.NewClient(strings.TrimPrefix(a.srv.URL, "http://"), ro.Token)
	if _, err := roc.Devices(ctx); err != nil {
		t.Fatalf("read-only lists devices: %v", err)
	}
	pcl := httpapi.NewClient(strings.TrimPrefix(a.srv.URL, "http://"), pc.Token)
	in, err := pcl.Income(ctx, "", time.Time{}, time.Time{})
	if err != nil || in.Provider != prov.ID {
		t.Fatalf("provider's own income by default: %+v, %v", in, err)
	}
	if _, err := root.RevokeCred(ctx, ro.ID); err != nil {
		t.Fatal(err)
	}
	_, err = roc.Devices(ctx)
	var api *httpapi.APIError
	if !errors.As(err, &api) || api.Status != http.StatusUnauthorized {
		t.Fatalf("revoked credential: %v, want 401", err)
	}
	if _, err := root.RevokeCred(ctx, ro.ID); !errors.As(err, &api) || api.Status != http.StatusConflict {
		t.Fatalf("revoking twice: %v, want 409", err)
	}
	list, err := root.Creds(ctx)
	if err != nil || len(list) != 2 || list[0].Revoked == nil || list[1].Revoked != nil {
		t.Fatalf("creds list %+v, %v", list, err)
	}

	es, err := root.Audit(ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range es {
		if strings.HasPrefix(e.Subject, "cred:") {
			actions = append(actions, e.Subject+" "+e.Actor+" "+string(e.Detail))
		}
	}
	if len(actions) != 3 || !strings.Contains(actions[0], "cred-created") || !strings.Contains(actions[2], "cred-revoked") ||
		!strings.Contains(actions[2], "cred:"+ro.ID) {
		t.Fatalf("audit of credentials: %q", actions)
	}
	if _, err := root.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
}
