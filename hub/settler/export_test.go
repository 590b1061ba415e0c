package settler

import (
	"context"

	"github.com/m2mhub/m2mhub/settlement"
)

// LedgerOf builds the ledger of the closed epoch ep from the store, as a
// run of ep does.
func (s *Service) LedgerOf(ctx context.Context, ep settlement.Epoch) (*settlement.Ledger, error) {
	el, err := s.buildLedger(ctx, ep)
	if err != nil {
		return nil, err
	}
	return el.ledger, nil
}
