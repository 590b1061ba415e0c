// Package httpapi serves the hub's admin API and its dashboard over HTTP and
// holds the client that hubctl uses to call it. Requests carry a bearer
// credential: the root operator token from the data dir, or a scoped one
// (operator, read-only, provider:<id>) kept hashed in a CredStore. Every
// route is declared once in a table with the access it needs (routes.go);
// docs/openapi.yaml is checked against that table. One table (statusOf)
// maps domain errors to HTTP answers, and internal details are logged,
// never sent.
package httpapi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// Registry is what the admin API needs of the hub's registry.
type Registry interface {
	Enrol(ctx context.Context, q registry.EnrolRequest, actor string) (hub.Device, error)
	Revoke(ctx context.Context, id, actor, reason string) (hub.Device, error)
	Rotate(ctx context.Context, id string, newKey hub.PubKey, sig []byte, actor string) (hub.Device, error)
	Device(ctx context.Context, id string) (hub.Device, error)
	Devices(ctx context.Context) ([]hub.Device, error)
	UnreadableDevices(ctx context.Context) ([]hub.UnreadableRecord, error)
	RemoveUnreadable(ctx context.Context, id, actor, reason string) error
	Audit(ctx context.Context, from uint64, limit int) ([]hub.AuditEntry, error)
	// CheckPayees refuses, with an error wrapping hub.ErrInvalid, a
	// contract whose revenue splits pay anyone but an enrolled provider.
	CheckPayees(ctx context.Context, ids []string) error
}

// Info describes a running hub; hubctl info prints it.
type Info struct {
	PubKey    string `json:"pubkey"`
	P2PAddr   string `json:"p2p_addr"`
	AdminAddr string `json:"admin_addr"`
	// MetricsAddr is where Prometheus scrapes /metrics; empty when off.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	NATSURL     string `json:"nats_url,omitempty"`
	Network     string `json:"network"`
	Store       string `json:"store"`
	Sessions    int    `json:"sessions"`
	// SettlePeriodSeconds and SettleBlocks are the settlement schedule:
	// the open epoch is cut once it is that old or that many blocks
	// long, whichever comes first; 0 when that rule is off.
	SettlePeriodSeconds int64  `json:"settle_period_seconds,omitempty"`
	SettleBlocks        uint32 `json:"settle_blocks,omitempty"`
	// Settlement leadership: this instance's id in the lease, whether it
	// holds the lease, and the live lease (leader, fencing token,
	// expiry); the leader fields are empty while no instance holds it.
	SettleInstance     string     `json:"settle_instance,omitempty"`
	SettleLeading      bool       `json:"settle_leading,omitempty"`
	SettleLeader       string     `json:"settle_leader,omitempty"`
	SettleLeaderToken  uint64     `json:"settle_leader_token,omitempty"`
	SettleLeaseExpires *time.Time `json:"settle_lease_expires,omitempty"`
}

// HealthCheck reports whether one dependency answers.
type HealthCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config configures the admin API handler.
type Config struct {
	Registry Registry
	// Token is the operator credential expected as "Authorization: Bearer".
	Token  string
	Info   func() Info
	Health []HealthCheck
	Logger *slog.Logger
	// Contracts, when set, serves the contract and income endpoints.
	Contracts Contracts
	// Providers issues providers' NATS credentials; nil with an external NATS.
	Providers ProviderCredentials
	// Settlement, when set, serves the settlement, epoch and proof endpoints.
	Settlement Settlement
	// Creds, when set, keeps scoped credentials (operator, read-only,
	// provider) besides Token, and serves /v1/creds.
	Creds CredStore
	// Channels, when set, serves the channel, exposure and hold endpoints.
	Channels Channels
	// Receipts, when set, serves a channel's receipts.
	Receipts Receipts
	// CDRs, when set, serves the EV sessions' CDRs.
	CDRs CDRs
	// Deliveries, when set, serves the webhook delivery endpoints (list,
	// redeliver, test).
	Deliveries WebhookDeliveries
	// Webhooks, when set, serves /v1/webhooks (providers' webhook
	// endpoints).
	Webhooks Webhooks
	// History, when set, serves GET /v1/history (the dashboard's charts
	// and alerts).
	History History
	// Clock is the clock of credential timestamps; the system clock
	// when nil.
	Clock clock.Clock
}

// maxBody bounds a contract document's body; maxJSONBody every other
// request body, which are small.
const (
	maxBody     = 1 << 20
	maxJSONBody = 64 << 10
)

// Bounds of free-text request fields.
const (
	maxReasonLen = 500
	maxLabelLen  = 200
	maxURLLen    = 2048
	maxAddrLen   = 100
	maxScopeLen  = len(providerPrefix) + hub.MaxIDLen
)

// maxAuditPage bounds one page of the audit log.
const maxAuditPage = 1000

// Handler serves the admin API.
type Handler struct {
	cfg    Config
	mux    *http.ServeMux
	log    *slog.Logger
	routes []Route
	checks []HealthCheck // cfg.Health, bounded (BoundChecks)
}

// New returns the admin API handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Registry == nil || cfg.Info == nil {
		return nil, errors.New("httpapi: registry and info are required")
	}
	if len(cfg.Token) < 16 {
		return nil, errors.New("httpapi: operator token too short")
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger,
		checks: BoundChecks(cfg.Health, HealthTimeout)}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.cfg.Clock == nil {
		h.cfg.Clock = clock.NewDefaultClock()
	}
	if _, ok := cfg.Registry.(auditRecorder); cfg.Creds != nil && !ok {
		return nil, errors.New("httpapi: scoped credentials need a registry that audits (RecordAdmin)")
	}
	h.add("GET", "/healthz", AccessPublic, h.health)
	h.add("GET", "/v1/info", AccessRead, h.info)
	h.add("GET", "/v1/devices", AccessRead, h.listDevices)
	h.add("POST", "/v1/devices", AccessOperator, h.addDevice)
	h.add("GET", "/v1/devices/{id}", AccessRead, h.getDevice)
	h.add("POST", "/v1/devices/{id}/revoke", AccessOperator, h.revokeDevice)
	h.add("POST", "/v1/devices/{id}/rotate", AccessOperator, h.rotateDevice)
	h.add("GET", "/v1/devices/unreadable", AccessRead, h.unreadableDevices)
	h.add("POST", "/v1/devices/{id}/remove", AccessOperator, h.removeDevice)
	h.routePayout()
	h.add("GET", "/v1/audit", AccessRead, h.audit)
	if cfg.Creds != nil {
		h.add("POST", "/v1/creds", AccessOperator, h.createCred)
		h.add("GET", "/v1/creds", AccessOperator, h.listCreds)
		h.add("POST", "/v1/creds/{id}/revoke", AccessOperator, h.revokeCred)
	}
	h.routeProviders()
	h.routeContracts()
	h.routeSettlement()
	h.routeChannels()
	h.routeReceipts()
	h.routeCDRs()
	h.routeDeliveries()
	h.routeDashboard()
	h.routeWebhooks()
	h.routeHistory()
	return h, nil
}

// now is the handler's clock.
func (h *Handler) now() time.Time { return h.cfg.Clock.Now() }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// errorBody is every error answer's shape.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorCodes is the one table between the core's errors and the admin
// API's answers, read both ways: statusOf maps an error to its status and
// code, and the Go client maps a code back to the error (APIError.Unwrap),
// so callers of Client test answers with errors.Is. The first entry of a
// code is the error it reads back as. Messages of known errors are safe to
// show; anything else is reported as internal.
var errorCodes = []struct {
	err    error
	status int
	code   string
}{
	{errUnauthorized, http.StatusUnauthorized, "unauthorized"},
	{errForbidden, http.StatusForbidden, "forbidden"},
	// A cut or run that lost a race with another, or a run asked for
	// while one is under way.
	// A settlement run asked of an instance that does not hold the
	// settlement lease (or lost it mid-run): the message names the leader.
	{hub.ErrNotLeader, http.StatusMisdirectedRequest, "not_leader"},
	{hub.ErrEpochConflict, http.StatusConflict, "conflict"},
	{settlement.ErrBadTransition, http.StatusConflict, "conflict"},
	{hub.ErrRunOpen, http.StatusConflict, "conflict"},
	{settler.ErrPending, http.StatusConflict, "conflict"},
	{hub.ErrNotFound, http.StatusNotFound, "not_found"},
	{hub.ErrAlreadyExists, http.StatusConflict, "already_exists"},
	{hub.ErrRevoked, http.StatusConflict, "revoked"},
	{hub.ErrInvalid, http.StatusBadRequest, "invalid"},
	{hub.ErrBadSignature, http.StatusBadRequest, "invalid"},
	{errTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	// A record an older hub let through: the message names it and the
	// way out (POST /v1/devices/{id}/remove).
	{hub.ErrUnreadable, http.StatusConflict, "unreadable"},
	{hub.ErrAuditConflict, http.StatusServiceUnavailable, "busy"},
	// btcd is down, stopped or restarting: worth retrying.
	{btcdchain.ErrUnavailable, http.StatusServiceUnavailable, "chain_unavailable"},
}

// statusOf maps err to its HTTP status and code through errorCodes.
func statusOf(err error) (int, string) {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.status, c.code
		}
	}
	return http.StatusInternalServerError, "internal"
}

// errorOfCode is the error an answer's code stands for, or nil for a code
// errorCodes does not list ("internal", or one from a newer hub).
func errorOfCode(code string) error {
	for _, c := range errorCodes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := statusOf(err)
	// Errors from package hub wrap its sentinels, which carry the
	// package's prefix again ("hub: revoke X: hub: not found"): the
	// answer names it once.
	msg := strings.ReplaceAll(err.Error(), ": hub: ", ": ")
	if status == http.StatusInternalServerError {
		h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	writeJSON(w, status, errorBody{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errTooLarge answers a body past maxJSONBody (or maxBody) with 413.
var errTooLarge = errors.New("httpapi: request body too large")

// validator is a request body that checks its own fields once decoded:
// required fields present, keys on the curve, strings within bounds.
type validator interface{ validate() error }

// decode reads one JSON object of at most maxJSONBody bytes into q,
// refusing unknown fields, wrong types and trailing data, then validates
// it.
func decode(w http.ResponseWriter, r *http.Request, q validator) error {
	if err := decodeJSON(w, r, q, false); err != nil {
		return err
	}
	return q.validate()
}

// noBody accepts an empty body or "{}" on routes that take none, and
// refuses anything else the way decode does.
func noBody(w http.ResponseWriter, r *http.Request) error {
	return decodeJSON(w, r, &struct{}{}, true)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if optional && errors.Is(err, io.EOF) {
		return nil
	}
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.Join(terr, errors.New("trailing data after the JSON object"))
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return fmt.Errorf("%w: more than %d bytes", errTooLarge, tooLarge.Limit)
	case err != nil:
		return fmt.Errorf("%w: body: %v", hub.ErrInvalid, err)
	}
	return nil
}

// checkLen refuses a field longer than limit bytes, or an empty one when
// required.
func checkLen(field, s string, limit int, required bool) error {
	switch {
	case required && s == "":
		return fmt.Errorf("%w: %s is required", hub.ErrInvalid, field)
	case len(s) > limit:
		return fmt.Errorf("%w: %s is longer than %d bytes", hub.ErrInvalid, field, limit)
	}
	return nil
}

// checkKey refuses a missing key or one off the curve.
func checkKey(field string, k hub.PubKey) error {
	if err := k.Validate(); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// checkOwnerKind bounds the free-text fields of an enrolment.
func checkOwnerKind(owner, kind string) error {
	return errors.Join(checkLen("owner", owner, hub.MaxOwnerLen, false), checkLen("kind", kind, hub.MaxKindLen, false))
}

func (h *Handler) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.cfg.Info())
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	ds, err := h.cfg.Registry.Devices(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if ds == nil {
		ds = []hub.Device{}
	}
	writeJSON(w, http.StatusOK, ds)
}

// AddDeviceRequest is the body of POST /v1/devices.
type AddDeviceRequest struct {
	PubKey hub.PubKey `json:"pubkey"`
	Roles  []hub.Role `json:"roles"`
	Owner  string     `json:"owner,omitempty"`
	Kind   string     `json:"kind,omitempty"`
}

func (q *AddDeviceRequest) validate() error {
	if err := checkKey("pubkey", q.PubKey); err != nil {
		return err
	}
	if len(q.Roles) == 0 {
		return fmt.Errorf("%w: roles: at least one is required", hub.ErrInvalid)
	}
	for _, role := range q.Roles {
		if _, err := hub.ParseRole(string(role)); err != nil {
			return err
		}
	}
	return checkOwnerKind(q.Owner, q.Kind)
}

func (h *Handler) addDevice(w http.ResponseWriter, r *http.Request) {
	var q AddDeviceRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := h.cfg.Registry.Enrol(r.Context(), registry.EnrolRequest{
		Key: q.PubKey, Roles: q.Roles, Owner: q.Owner, Kind: q.Kind,
	}, actorOf(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := h.cfg.Registry.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// RevokeRequest is the body of POST /v1/devices/{id}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (q *RevokeRequest) validate() error { return checkLen("reason", q.Reason, maxReasonLen, false) }

func (h *Handler) revokeDevice(w http.ResponseWriter, r *http.Request) {
	var q RevokeRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	// Revocation is final: the registry takes a second revoke as a no-op,
	// the API answers it 409 revoked so a script learns it did nothing.
	id := r.PathValue("id")
	if d, err := h.cfg.Registry.Device(r.Context(), id); err == nil && d.Status == hub.StatusRevoked {
		h.fail(w, r, fmt.Errorf("device %s is already revoked: %w", id, hub.ErrRevoked))
		return
	}
	d, err := h.cfg.Registry.Revoke(r.Context(), id, actorOf(r), q.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// RotateRequest is the body of POST /v1/devices/{id}/rotate: the new key and
// the old key's BIP-340 signature over it, in hex.
type RotateRequest struct {
	NewPubKey hub.PubKey `json:"new_pubkey"`
	Sig       string     `json:"sig"`
}

func (q *RotateRequest) validate() error {
	if err := checkKey("new_pubkey", q.NewPubKey); err != nil {
		return err
	}
	if sig, err := hex.DecodeString(q.Sig); err != nil || len(sig) != 64 {
		return fmt.Errorf("%w: sig must be 64 bytes of hex", hub.ErrInvalid)
	}
	return nil
}

func (h *Handler) rotateDevice(w http.ResponseWriter, r *http.Request) {
	var q RotateRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	sig, _ := hex.DecodeString(q.Sig) // checked by validate
	d, err := h.cfg.Registry.Rotate(r.Context(), r.PathValue("id"), q.NewPubKey, sig, actorOf(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request) {
	from, limit := uint64(1), maxAuditPage
	if s := r.URL.Query().Get("from"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: from: %v", hub.ErrInvalid, err))
			return
		}
		from = v
	}
	if s := r.URL.Query().Get("limit"); s != "" {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 1 {
			h.fail(w, r, fmt.Errorf("%w: limit must be a positive integer", hub.ErrInvalid))
			return
		}
		limit = min(v, maxAuditPage)
	}
	es, err := h.cfg.Registry.Audit(r.Context(), from, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if es == nil {
		es = []hub.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, es)
}

// RemoveDeviceRequest is the body of POST /v1/devices/{id}/remove. Force
// must be true: removal deletes the record for good.
type RemoveDeviceRequest struct {
	Force  bool   `json:"force"`
	Reason string `json:"reason,omitempty"`
}

func (q *RemoveDeviceRequest) validate() error {
	if !q.Force {
		return fmt.Errorf("%w: removing a device record is final: set force", hub.ErrInvalid)
	}
	return checkLen("reason", q.Reason, maxReasonLen, false)
}

// removeDevice deletes a device record the hub cannot read (and its key
// index entries), audited. A readable device is refused: revoke it.
func (h *Handler) removeDevice(w http.ResponseWriter, r *http.Request) {
	var q RemoveDeviceRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.cfg.Registry.RemoveUnreadable(r.Context(), r.PathValue("id"), actorOf(r), q.Reason); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// unreadableDevices lists the device records GET /v1/devices leaves out
// because they do not decode.
func (h *Handler) unreadableDevices(w http.ResponseWriter, r *http.Request) {
	rs, err := h.cfg.Registry.UnreadableDevices(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if rs == nil {
		rs = []hub.UnreadableRecord{}
	}
	writeJSON(w, http.StatusOK, rs)
}
