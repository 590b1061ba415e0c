package charging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
)

// ProviderMsgCDR is the kind of the ProviderMessage carrying the OCPI CDR
// of an EV session paid against its hold.
const ProviderMsgCDR = "cdr"

// heldSession is what a held EV session's CDR is made of: the contract
// and usage the hub priced, and the event's attributes.
type heldSession struct {
	contract  *contracts.Contract
	usage     contracts.Usage
	breakdown contracts.Breakdown
	attrs     map[string]string
	eventID   string
	// signed and meterID are the event's checked signed readings and
	// their meter, if it carried any.
	signed  *contracts.SignedData
	meterID string
}

// cdr builds the session's OCPI CDR. Its M2MHub section's total is the
// charge, which the payer's channel paid against the hold.
func (s *heldSession) cdr() (*contracts.CDR, error) {
	attr := func(k, def string) string {
		if v := s.attrs[k]; v != "" {
			return v
		}
		return def
	}
	var cc, party string
	for _, t := range s.contract.EVCharging.Tariffs {
		if t.Name() == s.breakdown.Tariff {
			cc, party = t.CountryCode, t.PartyID
		}
	}
	sum := sha256.Sum256([]byte(s.usage.Provider + "\x00" + s.eventID))
	return contracts.NewCDR(s.contract, s.usage, s.breakdown, contracts.CDRSession{
		CountryCode: attr(contracts.CDRAttrCountryCode, cc), PartyID: attr(contracts.CDRAttrPartyID, party),
		ID: "CDR" + hex.EncodeToString(sum[:16]), SessionID: s.usage.Session,
		Token: contracts.CDRToken{
			CountryCode: attr(contracts.CDRAttrCountryCode, cc), PartyID: attr(contracts.CDRAttrPartyID, party),
			UID: attr(contracts.CDRAttrTokenUID, s.usage.Device), Type: attr(contracts.CDRAttrTokenType, "APP_USER"), ContractID: s.usage.Device,
		},
		AuthMethod: "AUTH_REQUEST",
		Location: contracts.CDRLocation{
			ID: attr(contracts.CDRAttrLocationID, s.usage.Provider), EvseUID: attr(contracts.CDRAttrEvseUID, "1"),
			EvseID: attr(contracts.CDRAttrEvseID, ""), ConnectorID: attr(contracts.CDRAttrConnectorID, "1"),
		},
		MeterID: s.meterID, SignedData: s.signed,
		LastUpdated: s.usage.End,
	})
}

// endSession closes a held session once its charge is paid: the hold is
// released (what the payment captured is kept, the rest is freed), and
// the session's CDR is published to the provider beside the receipt.
func (c *Service) endSession(ctx context.Context, g *payGroup) {
	captured, err := c.cfg.Channels.ReleaseHold(ctx, g.key.hold)
	if err != nil {
		c.log.Error("releasing a paid session's hold", "hold", fmt.Sprintf("%x", g.key.hold[:]), "err", err)
	} else if captured != g.amount {
		c.log.Error("a session's hold captured another amount than its charge",
			"hold", fmt.Sprintf("%x", g.key.hold[:]), "captured", captured, "charged", g.amount)
	}
	cdr, err := g.session.cdr()
	if err != nil {
		c.log.Warn("no CDR for the session", "session", g.session.usage.Session, "err", err)
		return
	}
	b, err := json.Marshal(cdr)
	if err != nil {
		c.log.Error("encoding a CDR", "err", err)
		return
	}
	if c.cfg.CDRs != nil {
		err := c.cfg.CDRs.PutCDR(ctx, hub.CDRRecord{ID: cdr.ID, Provider: g.key.provider, Payer: g.key.payer,
			Session: g.session.usage.Session, Events: g.ids, TotalMsat: cdr.M2MHub.TotalMsat, Created: c.clock.Now().UTC(), CDR: b})
		if err != nil {
			// Published all the same: the provider has it, and the
			// operator sees the error.
			c.log.Error("storing a CDR", "cdr", cdr.ID, "err", err)
		}
	}
	c.publish(ctx, g.key.provider, ProviderMessage{Kind: ProviderMsgCDR, CDR: b, Events: g.ids})
}
