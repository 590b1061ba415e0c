package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/m2mhub/m2mhub/msat"
)

// CDRRecord is an OCPI Charge Detail Record the hub issued for an EV
// session paid against its hold, with what it is looked up by.
type CDRRecord struct {
	// ID is the CDR's own id (its "id" field).
	ID       string `json:"id"`
	Provider string `json:"provider"`
	Payer    string `json:"payer"`
	Session  string `json:"session"`
	// Events are the usage event ids the CDR covers.
	Events []string `json:"events"`
	// TotalMsat is what the payer's channel paid for the session.
	TotalMsat msat.Amount `json:"total_msat"`
	Created   time.Time   `json:"created"`
	// CDR is the OCPI CDR document (contracts.CDR as JSON).
	CDR json.RawMessage `json:"cdr"`
}

// Validate checks what every store requires of a CDR record: an id, a
// provider and a JSON document. Errors wrap ErrInvalid.
func (r CDRRecord) Validate() error {
	if r.ID == "" || r.Provider == "" || !json.Valid(r.CDR) {
		return fmt.Errorf("%w: a CDR record needs an id, a provider and a JSON document", ErrInvalid)
	}
	return nil
}

// CDRStore keeps the CDRs the hub issued. A CDR never changes once issued.
type CDRStore interface {
	// PutCDR stores r under its ID; storing an ID that is already there
	// is a no-op. It returns an error wrapping ErrInvalid for a record
	// Validate refuses.
	PutCDR(ctx context.Context, r CDRRecord) error
	// CDR returns the CDR with id, or ErrNotFound.
	CDR(ctx context.Context, id string) (CDRRecord, error)
	// CDRs lists the CDRs of provider ("" for every provider), newest
	// (by Created) first.
	CDRs(ctx context.Context, provider string) ([]CDRRecord, error)
}
