package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// Scope is what a credential may do: ScopeOperator, ScopeReadOnly, or
// "provider:<device id>" (see ProviderScope).
type Scope string

// The fixed scopes. A provider scope names its device and is made with
// ProviderScope.
const (
	// ScopeOperator may call every endpoint, including the ones that
	// change the hub.
	ScopeOperator Scope = "operator"
	// ScopeReadOnly may read everything and change nothing; the dashboard
	// uses it.
	ScopeReadOnly Scope = "read-only"
)

const providerPrefix = "provider:"

// ProviderScope is the scope of a credential that sees only the data of
// provider device id.
func ProviderScope(id string) Scope { return Scope(providerPrefix + id) }

// Provider returns the device id of a provider scope.
func (s Scope) Provider() (string, bool) {
	id, ok := strings.CutPrefix(string(s), providerPrefix)
	return id, ok && id != ""
}

// ParseScope checks s is operator, read-only or provider:<id>.
func ParseScope(s string) (Scope, error) {
	sc := Scope(s)
	if _, ok := sc.Provider(); ok || sc == ScopeOperator || sc == ScopeReadOnly {
		return sc, nil
	}
	return "", fmt.Errorf("%w: scope %q: want operator, read-only or provider:<device id>", hub.ErrInvalid, s)
}

// Credential is a scoped bearer credential of the admin API. Only the
// SHA-256 of its token is kept, so a copy of the credentials file grants
// nothing.
type Credential struct {
	ID      string    `json:"id"`
	Scope   Scope     `json:"scope"`
	Label   string    `json:"label,omitempty"`
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
	// Revoked is set once; a revoked credential is kept for the record.
	Revoked *time.Time `json:"revoked,omitempty"`
}

// CredStore keeps scoped credentials. credfile.Store implements it.
type CredStore interface {
	// Add stores a new credential; it returns an error wrapping
	// hub.ErrAlreadyExists if its id is taken.
	Add(ctx context.Context, c Credential) error
	// ByHash returns the credential whose token hashes to sum, revoked
	// or not, or an error wrapping hub.ErrNotFound.
	ByHash(ctx context.Context, sum string) (Credential, error)
	// List returns every credential, oldest first.
	List(ctx context.Context) ([]Credential, error)
	// Revoke marks credential id revoked at t and returns it; it returns
	// hub.ErrNotFound for an unknown id and hub.ErrRevoked for one
	// already revoked.
	Revoke(ctx context.Context, id string, t time.Time) (Credential, error)
}

// TokenHash is the hex SHA-256 of a bearer token, the form stored.
func TokenHash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// NewToken returns a fresh credential id and bearer token. The token has
// 256 random bits; the id is public and names it in lists and audits.
func NewToken() (id, token string, err error) {
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	return hex.EncodeToString(b[:8]), "m2m_" + hex.EncodeToString(b[8:]), nil
}

// CreateCredRequest is the body of POST /v1/creds. For the provider scope
// Scope is "provider" and Device names the provider.
type CreateCredRequest struct {
	Scope  string `json:"scope"`
	Device string `json:"device,omitempty"`
	Label  string `json:"label,omitempty"`
}

// CreatedCred answers POST /v1/creds: the credential and its token, which
// is shown this once.
type CreatedCred struct {
	Credential
	Token string `json:"token"`
}

// auditCred records credential changes in the hub's audit log. The
// registry has RecordAdmin; a handler without it cannot manage
// credentials (New refuses that configuration).
func (h *Handler) auditCred(ctx context.Context, c Credential, action, actor string) error {
	ar, ok := h.cfg.Registry.(auditRecorder)
	if !ok {
		return errors.New("httpapi: registry cannot audit credentials")
	}
	_, err := ar.RecordAdmin(ctx, "cred:"+c.ID, actor, map[string]string{
		"action": action, "scope": string(c.Scope), "label": c.Label,
	})
	return err
}

func (q *CreateCredRequest) validate() error {
	return errors.Join(
		checkLen("scope", q.Scope, maxScopeLen, true),
		checkLen("device", q.Device, hub.MaxIDLen, false),
		checkLen("label", q.Label, maxLabelLen, false),
	)
}

func (h *Handler) createCred(w http.ResponseWriter, r *http.Request) {
	var q CreateCredRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	scope := Scope(q.Scope)
	switch {
	case q.Scope == "provider" || strings.HasPrefix(q.Scope, providerPrefix):
		dev := q.Device
		if id, ok := Scope(q.Scope).Provider(); ok {
			dev = id
		}
		d, err := h.cfg.Registry.Device(ctx, dev)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !d.HasRole(hub.RoleProvider) {
			h.fail(w, r, fmt.Errorf("%w: %s is not a provider", hub.ErrInvalid, d.ID))
			return
		}
		scope = ProviderScope(d.ID)
	case q.Device != "":
		h.fail(w, r, fmt.Errorf("%w: device is only for the provider scope", hub.ErrInvalid))
		return
	}
	if _, err := ParseScope(string(scope)); err != nil {
		h.fail(w, r, err)
		return
	}
	id, tok, err := NewToken()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	c := Credential{ID: id, Scope: scope, Label: q.Label, Hash: TokenHash(tok), Created: h.now().UTC()}
	// Audit first: a credential that exists must have its record.
	if err := h.auditCred(ctx, c, "cred-created", actorOf(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.cfg.Creds.Add(ctx, c); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, CreatedCred{Credential: c, Token: tok})
}

func (h *Handler) listCreds(w http.ResponseWriter, r *http.Request) {
	cs, err := h.cfg.Creds.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if cs == nil {
		cs = []Credential{}
	}
	writeJSON(w, http.StatusOK, cs)
}

func (h *Handler) revokeCred(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	c, err := h.cfg.Creds.Revoke(ctx, r.PathValue("id"), h.now().UTC())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.auditCred(ctx, c, "cred-revoked", actorOf(r)); err != nil {
		// Revoked already; the failure to record it is the operator's
		// to see, not a reason to undo the revocation.
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// CreateCred creates a scoped credential; the answer holds its token,
// shown once.
func (c *Client) CreateCred(ctx context.Context, q CreateCredRequest) (CreatedCred, error) {
	var out CreatedCred
	return out, c.do(ctx, http.MethodPost, "/v1/creds", q, &out)
}

// Creds lists the scoped credentials (without tokens).
func (c *Client) Creds(ctx context.Context) ([]Credential, error) {
	var out []Credential
	return out, c.do(ctx, http.MethodGet, "/v1/creds", nil, &out)
}

// RevokeCred revokes credential id at once.
func (c *Client) RevokeCred(ctx context.Context, id string) (Credential, error) {
	var out Credential
	return out, c.do(ctx, http.MethodPost, "/v1/creds/"+url.PathEscape(id)+"/revoke", nil, &out)
}
