package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/registry"
)

// Contracts is what the contract and income endpoints need: the contract
// store, an audit log to record publications in, and income sums.
// Each method returns errors wrapping hub.ErrNotFound or hub.ErrInvalid
// where they apply.
type Contracts interface {
	PutContract(ctx context.Context, c hub.ContractRecord) error
	Contract(ctx context.Context, h hub.Hash) (hub.ContractRecord, error)
	Contracts(ctx context.Context) ([]hub.ContractRecord, error)
	RecordEvent(ctx context.Context, kind, subject, actor string, detail any) (hub.AuditEntry, error)
	Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error)
}

// ContractsConfig joins the three parts of Contracts that live in
// different hub components; cmd/hubd wires it from the store, the registry
// and the charging service.
type ContractsConfig struct {
	Store   hub.ContractStore
	Auditor interface {
		RecordEvent(ctx context.Context, kind, subject, actor string, detail any) (hub.AuditEntry, error)
	}
	Incomes interface {
		Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error)
	}
}

// JoinContracts returns the Contracts of cfg's parts.
func JoinContracts(cfg ContractsConfig) (Contracts, error) {
	if cfg.Store == nil || cfg.Auditor == nil || cfg.Incomes == nil {
		return nil, errors.New("httpapi: contracts need a store, an auditor and incomes")
	}
	return joined{cfg}, nil
}

type joined struct{ ContractsConfig }

func (j joined) PutContract(ctx context.Context, c hub.ContractRecord) error {
	return j.Store.PutContract(ctx, c)
}
func (j joined) Contract(ctx context.Context, h hub.Hash) (hub.ContractRecord, error) {
	return j.Store.Contract(ctx, h)
}
func (j joined) Contracts(ctx context.Context) ([]hub.ContractRecord, error) {
	return j.Store.Contracts(ctx)
}
func (j joined) RecordEvent(ctx context.Context, kind, subject, actor string, detail any) (hub.AuditEntry, error) {
	return j.Auditor.RecordEvent(ctx, kind, subject, actor, detail)
}
func (j joined) Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error) {
	return j.Incomes.Income(ctx, provider, from, to)
}

// routeContracts registers the contract and income endpoints when the
// handler was given Contracts.
func (h *Handler) routeContracts() {
	if h.cfg.Contracts == nil {
		return
	}
	h.add("POST", "/v1/contracts", AccessOperator, h.publishContract)
	// Contracts are the tariffs providers publish under; every provider
	// may read them.
	h.add("GET", "/v1/contracts", AccessOwn, h.listContracts)
	h.add("GET", "/v1/contracts/{hash}", AccessOwn, h.getContract)
	h.add("GET", "/v1/income", AccessOwn, h.income)
}

// publishContract parses the posted document strictly, stores its
// canonical form under its hash and audits the publication. Publishing the
// same document again answers 200 with the stored record; a new one 201.
func (h *Handler) publishContract(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		h.fail(w, r, fmt.Errorf("%w: more than %d bytes", errTooLarge, tooLarge.Limit))
		return
	}
	if err != nil {
		h.fail(w, r, fmt.Errorf("%w: body: %v", hub.ErrInvalid, err))
		return
	}
	k, err := contracts.Parse(body)
	if err != nil {
		h.fail(w, r, fmt.Errorf("%w: %v", hub.ErrInvalid, err))
		return
	}
	hash := hub.Hash(k.Hash())
	ctx := r.Context()
	if have, err := h.cfg.Contracts.Contract(ctx, hash); err == nil {
		writeJSON(w, http.StatusOK, have)
		return
	} else if !errors.Is(err, hub.ErrNotFound) {
		h.fail(w, r, err)
		return
	}
	// A new contract pays its splits only to enrolled providers; one
	// published before keeps answering as it was.
	payees := make([]string, len(k.Splits))
	for i, s := range k.Splits {
		payees[i] = s.Payee
	}
	if err := h.cfg.Registry.CheckPayees(ctx, payees); err != nil {
		h.fail(w, r, err)
		return
	}
	rec := hub.ContractRecord{
		Hash: hash, Kind: string(k.Kind), Name: k.ID, Version: int(k.Version),
		Document: k.Canonical(), Published: time.Now().UTC(),
	}
	if err := h.cfg.Contracts.PutContract(ctx, rec); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.cfg.Contracts.RecordEvent(ctx, registry.AuditContractPublish, hash.String(), actorOf(r), map[string]any{
		"kind": rec.Kind, "id": rec.Name, "version": rec.Version,
	}); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, rec)
}

func (h *Handler) listContracts(w http.ResponseWriter, r *http.Request) {
	cs, err := h.cfg.Contracts.Contracts(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if cs == nil {
		cs = []hub.ContractRecord{}
	}
	writeJSON(w, http.StatusOK, cs)
}

func (h *Handler) getContract(w http.ResponseWriter, r *http.Request) {
	var hash hub.Hash
	if err := hash.UnmarshalText([]byte(r.PathValue("hash"))); err != nil {
		h.fail(w, r, fmt.Errorf("%w: contract hash: %v", hub.ErrInvalid, err))
		return
	}
	c, err := h.cfg.Contracts.Contract(r.Context(), hash)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// income answers GET /v1/income?provider=ID&from=RFC3339&to=RFC3339; from
// defaults to the epoch, to to now.
func (h *Handler) income(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	provider := q.Get("provider")
	if provider == "" {
		// A provider credential asks for its own income by default.
		provider = ownProvider(r)
	}
	if provider == "" {
		h.fail(w, r, fmt.Errorf("%w: provider is required", hub.ErrInvalid))
		return
	}
	if err := ownerOnly(r, provider); err != nil {
		h.fail(w, r, err)
		return
	}
	from, to := time.Unix(0, 0).UTC(), time.Now().UTC()
	for name, dst := range map[string]*time.Time{"from": &from, "to": &to} {
		if s := q.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				h.fail(w, r, fmt.Errorf("%w: %s: %v", hub.ErrInvalid, name, err))
				return
			}
			*dst = t
		}
	}
	in, err := h.cfg.Contracts.Income(r.Context(), provider, from, to)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// PublishContract posts a contract document and returns the stored record.
func (c *Client) PublishContract(ctx context.Context, doc []byte) (hub.ContractRecord, error) {
	var out hub.ContractRecord
	return out, c.do(ctx, http.MethodPost, "/v1/contracts", json.RawMessage(doc), &out)
}

// Contracts lists the published contracts, newest first.
func (c *Client) Contracts(ctx context.Context) ([]hub.ContractRecord, error) {
	var out []hub.ContractRecord
	return out, c.do(ctx, http.MethodGet, "/v1/contracts", nil, &out)
}

// Contract returns the contract with hash h.
func (c *Client) Contract(ctx context.Context, h hub.Hash) (hub.ContractRecord, error) {
	var out hub.ContractRecord
	return out, c.do(ctx, http.MethodGet, "/v1/contracts/"+h.String(), nil, &out)
}

// Income returns a provider's income over charges recorded in [from, to);
// zero times leave the bound to the hub's default.
func (c *Client) Income(ctx context.Context, provider string, from, to time.Time) (charging.Income, error) {
	q := url.Values{"provider": {provider}}
	if !from.IsZero() {
		q.Set("from", from.UTC().Format(time.RFC3339))
	}
	if !to.IsZero() {
		q.Set("to", to.UTC().Format(time.RFC3339))
	}
	var out charging.Income
	return out, c.do(ctx, http.MethodGet, "/v1/income?"+q.Encode(), nil, &out)
}
