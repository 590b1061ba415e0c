package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Access is what a route asks of the caller's credential.
type Access string

// Access levels, from open to closed.
const (
	// AccessPublic needs no credential (health probes, the dashboard
	// shell, which asks for its own credential).
	AccessPublic Access = "public"
	// AccessOwn admits the operator, read-only credentials, and provider
	// credentials for their own data: the handler checks ownership
	// (allowOwner) and answers 403 for another provider's data.
	AccessOwn Access = "own"
	// AccessRead admits the operator and read-only credentials.
	AccessRead Access = "read"
	// AccessOperator admits only operator credentials.
	AccessOperator Access = "operator"
)

// Route is one endpoint of the admin API. The table of them (Routes) is
// what the mux serves, what docs/openapi.yaml is checked against, and what
// the authorisation matrix test walks.
type Route struct {
	Method  string
	Pattern string // net/http pattern path, e.g. /v1/devices/{id}
	Access  Access
	handler http.HandlerFunc
}

// Routes returns the routes this handler serves, in registration order.
func (h *Handler) Routes() []Route { return append([]Route(nil), h.routes...) }

// add registers a route in the table and the mux.
func (h *Handler) add(method, pattern string, access Access, f http.HandlerFunc) {
	rt := Route{Method: method, Pattern: pattern, Access: access, handler: f}
	h.routes = append(h.routes, rt)
	var hd http.Handler = f
	if access != AccessPublic {
		hd = h.guard(access, f)
	}
	h.mux.Handle(method+" "+pattern, hd)
}

// Principal is who made a request: the credential's id and scope.
type Principal struct {
	// ID is "root" for the bootstrap operator token in the data dir, or
	// the scoped credential's id.
	ID    string
	Scope Scope
}

// actor is how audit entries name the principal.
func (p Principal) actor() string {
	if p.ID == "root" {
		return "operator"
	}
	return "cred:" + p.ID
}

type principalKey struct{}

// PrincipalOf returns the principal of an authenticated request.
func PrincipalOf(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// actorOf names the request's principal in audit entries.
func actorOf(r *http.Request) string {
	if p, ok := PrincipalOf(r.Context()); ok {
		return p.actor()
	}
	return "operator"
}

var (
	errUnauthorized = errors.New("httpapi: missing or wrong credential")
	errForbidden    = errors.New("httpapi: credential's scope does not allow this")
)

// authenticate finds the principal of the request's bearer token: the
// root operator token, or an unrevoked scoped credential.
func (h *Handler) authenticate(r *http.Request) (Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return Principal{}, errUnauthorized
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(h.cfg.Token)) == 1 {
		return Principal{ID: "root", Scope: ScopeOperator}, nil
	}
	if h.cfg.Creds == nil {
		return Principal{}, errUnauthorized
	}
	// Looking up by hash is safe against timing: the lookup key is a
	// hash the caller cannot steer byte by byte.
	c, err := h.cfg.Creds.ByHash(r.Context(), TokenHash(tok))
	switch {
	case err != nil:
		return Principal{}, errUnauthorized
	case c.Revoked != nil:
		return Principal{}, fmt.Errorf("%w: revoked", errUnauthorized)
	}
	return Principal{ID: c.ID, Scope: c.Scope}, nil
}

// permits reports whether scope may call a route of access a (ownership of
// AccessOwn data is the handler's to check).
func permits(s Scope, a Access) bool {
	switch s {
	case ScopeOperator:
		return true
	case ScopeReadOnly:
		return a != AccessOperator
	}
	_, isProvider := s.Provider()
	return isProvider && a == AccessOwn
}

// guard admits requests whose credential's scope permits access.
func (h *Handler) guard(access Access, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="m2mhub"`)
			h.fail(w, r, err)
			return
		}
		if !permits(p.Scope, access) {
			h.fail(w, r, fmt.Errorf("%w: %s needs %s", errForbidden, r.URL.Path, access))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// auth guards an operator-only handler. It is kept for endpoints
// registered outside the route table; new routes use add.
func (h *Handler) auth(next http.HandlerFunc) http.Handler { return h.guard(AccessOperator, next) }

// ownerOnly returns errForbidden when the request comes from a provider
// credential whose device is none of owners. Operator and read-only
// credentials see everyone's data.
func ownerOnly(r *http.Request, owners ...string) error {
	p, ok := PrincipalOf(r.Context())
	if !ok {
		return errUnauthorized
	}
	id, isProvider := p.Scope.Provider()
	if !isProvider {
		return nil
	}
	for _, o := range owners {
		if o == id {
			return nil
		}
	}
	return fmt.Errorf("%w: another provider's data", errForbidden)
}

// ownProvider is the provider a provider credential speaks for, or "".
func ownProvider(r *http.Request) string {
	p, _ := PrincipalOf(r.Context())
	id, _ := p.Scope.Provider()
	return id
}
