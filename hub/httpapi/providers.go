package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/metering"
)

// ProviderCredentials issues per-provider NATS credentials on the hub's
// embedded NATS (natsembed.Issuer). Without it (an external NATS) providers
// are enrolled and the operator configures their NATS users by hand.
type ProviderCredentials interface {
	// IssueNATS creates (or replaces) provider id's NATS user and returns
	// its public nkey and its seed; the seed is not kept by the hub.
	IssueNATS(ctx context.Context, providerID string) (nkeyPub string, seed []byte, err error)
	// NATSUsers returns the public nkey of every provider user, by id.
	NATSUsers(ctx context.Context) (map[string]string, error)
}

// ProviderCredsIssuer is a ProviderCredentials that issues NATS
// decentralised-auth credentials (internal/natsjwt: a user JWT signed by
// the hub's account key, with its seed, as one .creds file) rather than a
// bare nkey seed. The handler prefers it when the configured
// ProviderCredentials has it.
type ProviderCredsIssuer interface {
	IssueNATSCreds(ctx context.Context, providerID string) (userPub string, creds []byte, err error)
}

// auditRecorder is the registry's audit entry point for admin actions; the
// hub's Registry has it, and issuing credentials is recorded there.
type auditRecorder interface {
	RecordAdmin(ctx context.Context, subject, actor string, detail any) (hub.AuditEntry, error)
}

// AddProviderRequest is the body of POST /v1/providers.
type AddProviderRequest struct {
	PubKey hub.PubKey `json:"pubkey"`
	Owner  string     `json:"owner,omitempty"`
	Kind   string     `json:"kind,omitempty"`
}

// ProviderNATS is what a provider needs to publish usage and read its
// receipts. Seed is shown once, in the answer to POST /v1/providers.
type ProviderNATS struct {
	User string `json:"user"` // public nkey
	Seed string `json:"seed,omitempty"`
	// Creds is the .creds file (user JWT and seed) when the hub signs
	// NATS users as an account (operator mode); shown once, like Seed.
	Creds            string `json:"creds,omitempty"`
	UsageSubject     string `json:"usage_subject"`
	ReceiptsSubject  string `json:"receipts_subject"`
	ReceiptsStream   string `json:"receipts_stream"`
	ReceiptsConsumer string `json:"receipts_consumer"`
	InboxPrefix      string `json:"inbox_prefix"`
}

// Provider is a provider device with its NATS user, if it has one.
type Provider struct {
	Device hub.Device    `json:"device"`
	NATS   *ProviderNATS `json:"nats,omitempty"`
}

func providerNATS(id, user string, seed []byte) *ProviderNATS {
	return &ProviderNATS{
		User: user, Seed: string(seed),
		UsageSubject: metering.UsageSubject(id), ReceiptsSubject: metering.ReceiptsSubject(id),
		ReceiptsStream: metering.ReceiptsStream, ReceiptsConsumer: metering.ReceiptsConsumer(id),
		InboxPrefix: metering.InboxPrefix(id),
	}
}

// routeProviders registers the provider endpoints.
func (h *Handler) routeProviders() {
	h.add("GET", "/v1/providers", AccessRead, h.listProviders)
	h.add("POST", "/v1/providers", AccessOperator, h.addProvider)
}

// addProvider enrols a provider (or finds the one enrolled with that key)
// and issues it a fresh NATS user. Posting again for the same key replaces
// its NATS credentials, which is how an operator recovers a lost seed.
func (q *AddProviderRequest) validate() error {
	if err := checkKey("pubkey", q.PubKey); err != nil {
		return err
	}
	return checkOwnerKind(q.Owner, q.Kind)
}

func (h *Handler) addProvider(w http.ResponseWriter, r *http.Request) {
	var q AddProviderRequest
	if err := decode(w, r, &q); err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	status := http.StatusCreated
	d, err := h.cfg.Registry.Enrol(ctx, registry.EnrolRequest{
		Key: q.PubKey, Roles: []hub.Role{hub.RoleProvider}, Owner: q.Owner, Kind: q.Kind,
	}, actorOf(r))
	if errors.Is(err, hub.ErrAlreadyExists) {
		status = http.StatusOK
		d, err = h.cfg.Registry.Device(ctx, hub.DeviceID(q.PubKey))
		switch {
		case err != nil:
			err = fmt.Errorf("%w: the key belongs to another device", hub.ErrAlreadyExists)
		case !d.HasRole(hub.RoleProvider):
			err = fmt.Errorf("%w: %s is enrolled without the provider role", hub.ErrAlreadyExists, d.ID)
		case d.Status == hub.StatusRevoked:
			err = fmt.Errorf("%w: %s", hub.ErrRevoked, d.ID)
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := Provider{Device: d}
	if h.cfg.Providers != nil {
		var user string
		var seed, creds []byte
		var err error
		if ci, ok := h.cfg.Providers.(ProviderCredsIssuer); ok {
			user, creds, err = ci.IssueNATSCreds(ctx, d.ID)
		} else {
			user, seed, err = h.cfg.Providers.IssueNATS(ctx, d.ID)
		}
		if err != nil {
			h.fail(w, r, fmt.Errorf("issue NATS credentials: %w", err))
			return
		}
		out.NATS = providerNATS(d.ID, user, seed)
		out.NATS.Creds = string(creds)
		if ar, ok := h.cfg.Registry.(auditRecorder); ok {
			detail := map[string]string{"action": "nats-credentials-issued", "nkey": user}
			if _, err := ar.RecordAdmin(ctx, d.ID, actorOf(r), detail); err != nil {
				h.log.Error("audit of issued NATS credentials failed", "provider", d.ID, "err", err)
			}
		}
	}
	writeJSON(w, status, out)
}

func (h *Handler) listProviders(w http.ResponseWriter, r *http.Request) {
	ds, err := h.cfg.Registry.Devices(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	users := map[string]string{}
	if h.cfg.Providers != nil {
		if users, err = h.cfg.Providers.NATSUsers(r.Context()); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	out := []Provider{}
	for _, d := range ds {
		if !d.HasRole(hub.RoleProvider) {
			continue
		}
		p := Provider{Device: d}
		if u, ok := users[d.ID]; ok {
			p.NATS = providerNATS(d.ID, u, nil)
		}
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, out)
}

// AddProvider enrols a provider and returns its NATS credentials (the seed
// only this once).
func (c *Client) AddProvider(ctx context.Context, q AddProviderRequest) (Provider, error) {
	var out Provider
	return out, c.do(ctx, http.MethodPost, "/v1/providers", q, &out)
}

// Providers lists the providers and their NATS users.
func (c *Client) Providers(ctx context.Context) ([]Provider, error) {
	var out []Provider
	return out, c.do(ctx, http.MethodGet, "/v1/providers", nil, &out)
}
