package charging

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// What makes every owed charge asked for by one live hubd: each charge a
// Service queues for a request it first claims in the store
// (hub.ChargeStore.ClaimCharges) under its Instance, and it renews the
// claims of every charge it holds (queued, asked for, or asked for and
// given up on) every claimRenew. Every claimScan each Service reads the
// owed charges, claims those nobody holds — charges whose recorder died
// before asking for them or while asking, or a JetStream redelivery's
// that the receiving instance took for duplicates — settles those whose
// payments are stored (settleStored) and asks for the rest. A charge
// under a live claim is never asked for by another hubd; one under none
// is asked for by whoever claims it first, at any time, not only at a
// restart.

// Claim timing: a claim outlives claimTTL without renewal, so a charge of
// a killed hubd is asked for again between claimTTL and claimTTL +
// claimScan after the kill; a request it had out is paid or given up on
// within that by the device (or the payment is stored, and found).
const (
	claimTTL   = 15 * time.Second
	claimRenew = 3 * time.Second
	claimScan  = 5 * time.Second
)

// claimChunk bounds the charges claimed in one store call (one Redis
// script run).
const claimChunk = 1024

// chargeKey names one charge.
type chargeKey struct{ provider, id string }

// randomID is a fresh random name: a claim owner (each process's claims
// are its own), or a request's token.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// The claims also fence the requests (requests.go): each names the
// request last sent for its charge, and the payment of any other is
// refused.

// claimed returns the charges of cs that this Service holds a claim on
// now, claiming them. A charge another hubd holds is left to it; on a
// store error none is returned: the scan claims them later.
func (c *Service) claimed(ctx context.Context, cs []hub.Charge) []hub.Charge {
	keep := c.claimMask(ctx, cs)
	var out []hub.Charge
	for i := range cs {
		if keep[i] {
			out = append(out, cs[i])
		}
	}
	return out
}

// claimedPlans is claimed for held sessions' plans.
func (c *Service) claimedPlans(ctx context.Context, ps []plan) []plan {
	cs := make([]hub.Charge, len(ps))
	for i := range ps {
		cs[i] = ps[i].charge
	}
	keep := c.claimMask(ctx, cs)
	var out []plan
	for i := range ps {
		if keep[i] {
			out = append(out, ps[i])
		}
	}
	return out
}

// claimMask claims cs and says which this Service holds.
func (c *Service) claimMask(ctx context.Context, cs []hub.Charge) []bool {
	byProv := map[string][]int{}
	for i := range cs {
		byProv[cs[i].Provider] = append(byProv[cs[i].Provider], i)
	}
	keep := make([]bool, len(cs))
	for prov, idx := range byProv {
		ids := make([]string, len(idx))
		for j, i := range idx {
			ids[j] = cs[i].EventID
		}
		got, err := c.claim(ctx, prov, ids)
		if err != nil {
			c.log.Warn("owed charges not claimed, left for the scan", "provider", prov, "charges", len(ids), "err", err)
			continue
		}
		for j, i := range idx {
			keep[i] = got[j]
		}
	}
	return keep
}

// claim claims (or renews) provider's charges ids, claimChunk at a time.
func (c *Service) claim(ctx context.Context, prov string, ids []string) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for chunk := range slices.Chunk(ids, claimChunk) {
		got, err := c.cfg.Charges.ClaimCharges(ctx, prov, chunk, c.cfg.Instance, claimTTL)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// holdLocked records a charge as held by this Service (c.pay held) and
// says whether it was held already.
func (c *Service) holdLocked(prov, id string) (had bool) {
	k := chargeKey{prov, id}
	if c.held[k] {
		return true
	}
	c.held[k] = true
	return false
}

// unhold forgets charges that are no longer owed (paid, or unpaid for
// good): their claims expire.
func (c *Service) unhold(prov string, ids []string) {
	c.pay.Lock()
	for _, id := range ids {
		delete(c.held, chargeKey{prov, id})
	}
	c.pay.Unlock()
}

// heldByProvider is the charges held now, by provider.
func (c *Service) heldByProvider() map[string][]string {
	c.pay.Lock()
	defer c.pay.Unlock()
	out := map[string][]string{}
	for k := range c.held {
		out[k.provider] = append(out[k.provider], k.id)
	}
	return out
}

// renewClaims renews the claims of every charge held.
func (c *Service) renewClaims(ctx context.Context) {
	for prov, ids := range c.heldByProvider() {
		got, err := c.claim(ctx, prov, ids)
		if err != nil {
			c.log.Error("renewing charge claims", "provider", prov, "charges", len(ids), "err", err)
			continue
		}
		if lost := len(ids) - countTrue(got); lost > 0 {
			// Renewed too late: another hubd claimed them and asks for
			// them too. Only a renewal stalled beyond claimTTL does this.
			c.log.Error("charge claims lost to another instance", "provider", prov, "charges", lost)
		}
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// releaseClaims, at Close, releases the claims of every charge held, so
// that another hubd asks for them at its next scan: those still pending,
// and those asked for, whose requests can then no longer be paid (the
// fence). A payment of such a request stored before the release is found
// by the next scan's settleStored, which settles it instead of asking.
func (c *Service) releaseClaims(ctx context.Context) {
	byProv := c.heldByProvider()
	for _, prov := range slices.Sorted(maps.Keys(byProv)) {
		if err := c.cfg.Charges.ReleaseCharges(ctx, prov, byProv[prov], c.cfg.Instance); err != nil {
			c.log.Warn("releasing charge claims", "provider", prov, "err", err)
		}
	}
}

// claimLoop renews the claims every claimRenew and scans the owed
// charges every claimScan, until the Service closes.
func (c *Service) claimLoop() {
	renew := c.clock.TickAfter(claimRenew)
	scan := c.clock.TickAfter(claimScan)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-renew:
			c.renewClaims(c.ctx)
			renew = c.clock.TickAfter(claimRenew)
		case <-scan:
			c.scanOwed(c.ctx, false)
			scan = c.clock.TickAfter(claimScan)
		}
	}
}
