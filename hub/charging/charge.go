package charging

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/shopspring/decimal"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/msat"
)

// volumeKey names one bandwidth billing window of one payer at one
// provider under one contract.
type volumeKey struct {
	provider, payer string
	contract        hub.Hash
	window          time.Time
}

// eventWindow is the recent event times of one device or provider, for
// max_event_rate rules. It keeps the newest keep times at most.
type eventWindow struct {
	times []time.Time
	keep  int
}

func (w *eventWindow) add(t time.Time, keep int) []time.Time {
	if keep > w.keep {
		w.keep = min(keep, MaxSecurityWindow)
	}
	w.times = append(w.times, t)
	if len(w.times) > 2*w.keep {
		// Amortised trim: drop the old half in one copy.
		w.times = append(w.times[:0], w.times[len(w.times)-w.keep:]...)
	}
	if n := len(w.times); n > keep {
		return w.times[n-keep:]
	}
	return w.times
}

// plan is one event priced and ready to record.
type plan struct {
	idx    int
	charge hub.Charge
	// volume is the bandwidth added to vkey when the charge is new.
	vkey   *volumeKey
	volume decimal.Decimal
	// release names the held charge (EventID) an end-of-job event
	// resolves.
	release string
	// counted: the event was added to the security windows.
	counted bool
	// kind is the contract's kind, for the Observer.
	kind contracts.Kind
	// hold is the hold the charge is paid against; endHold is a hold
	// to release once the charge is recorded, because the charge does
	// not need it (nothing to pay) or does not fit it (the charge is
	// then owed on the hold's channel like any other).
	hold, endHold *[16]byte
	// session is what the CDR of a held EV session is made from.
	session *heldSession
}

// holdEventID is the EventID of the charge that holds a conditional
// release job's amount: one per (provider, session), so a repeated start
// event holds once.
func holdEventID(session string) string { return "hold/" + session }

// ChargeUsage prices and records a batch of verified events and returns one
// outcome per event, in order. Everything it records is durable when it
// returns nil; an error means nothing of the batch was recorded and the
// whole batch may be retried (duplicates are then reported as such).
//
// Per event: the contract by hash, the payer (active, payer role) and the
// provider (active, provider role) are checked; the contract's security
// rules run over the hub's own recent view of both parties; the event is
// priced at its own time (bandwidth with the volume the hub counted in the
// billing window); and the charge is recorded against the payer's ready
// channel: owed within its credit limit, unpaid beyond it or without a
// channel. Owed charges are then requested from the payer by the flusher,
// many events per payment.
func (c *Service) ChargeUsage(ctx context.Context, evs []Usage) ([]Outcome, error) {
	out := make([]Outcome, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	now := c.clock.Now()
	c.warm(ctx, evs, now)
	chans, err := c.payerChannels(ctx, evs)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	plans, err := c.planBatch(ctx, evs, now, chans, out)
	freezes := c.freezes
	c.freezes = nil
	c.mu.Unlock()
	// Durable before the batch's charges, as a rule broken by one event
	// must stop the party before anything after it is recorded.
	c.freeze(ctx, freezes, now)
	if err != nil {
		return nil, err
	}
	if len(plans) == 0 {
		c.observeRejected(out)
		return out, nil
	}
	res, plans, err := c.record(ctx, plans, out)
	if err != nil {
		c.undoVolumes(plans)
		return nil, fmt.Errorf("record charges: %w", err)
	}

	var dups []plan
	var owed []hub.Charge
	var held []plan
	var endHolds [][16]byte
	unpaid := map[unpaidKey][]string{}
	resolved := map[string][]string{} // provider → held charges to close
	for i, r := range res {
		p := plans[i]
		o := &out[p.idx]
		o.Status, o.Amount = r.Stored.Status, r.Stored.Amount
		if r.Duplicate && !sameEvent(r.Stored, p.charge) {
			// Another event under a charged id: never taken for a
			// redelivery (that would drop it unseen), never charged
			// twice; the provider sees it dead-lettered.
			dups = append(dups, p)
			*o = Outcome{Outcome: metering.Outcome{Rejected: RejectIDConflict, Detail: conflictDetail(r.Stored, p.charge)}}
			continue
		}
		if r.Duplicate {
			o.Duplicate = true
			dups = append(dups, p)
			if c.cfg.Observer != nil {
				c.cfg.Observer.EventDuplicate()
			}
			continue
		}
		o.Charged = true
		if c.cfg.Observer != nil {
			c.cfg.Observer.EventCharged(p.kind, r.Stored.Status, r.Stored.Amount)
		}
		if p.endHold != nil {
			endHolds = append(endHolds, *p.endHold)
		}
		switch r.Stored.Status {
		case hub.ChargeOwed:
			if p.hold != nil {
				p.charge = r.Stored
				held = append(held, p)
				break
			}
			owed = append(owed, r.Stored)
		case hub.ChargeUnpaid:
			why := UnpaidCreditLimit
			if r.Stored.Channel == (btcwire.OutPoint{}) {
				why = UnpaidNoChannel
			}
			k := unpaidKey{provider: r.Stored.Provider, payer: r.Stored.Payer, reason: why}
			unpaid[k] = append(unpaid[k], r.Stored.EventID)
		}
		if p.release != "" {
			resolved[p.charge.Provider] = append(resolved[p.charge.Provider], p.release)
		}
	}
	c.undoVolumes(dups)
	if len(dups) > 0 {
		c.mu.Lock()
		for _, p := range dups {
			if p.counted {
				c.uncount(&evs[p.idx])
			}
		}
		c.mu.Unlock()
	}
	for prov, ids := range resolved {
		// The held amount is no longer owed by anyone: what the job
		// earned was charged by the end event itself. Unpaid marks the
		// hold as never to be paid out.
		if err := c.cfg.Charges.SetChargeStatus(ctx, prov, ids, hub.ChargeUnpaid, time.Time{}); err != nil {
			c.log.Error("closing conditional release holds", "provider", prov, "err", err)
		}
	}
	for _, id := range endHolds {
		c.releaseHold(ctx, id)
	}
	// Claimed first: a hubd that dies before asking leaves them to the
	// others' scans (claims.go).
	c.addOwed(c.claimed(ctx, owed))
	c.addHeld(c.claimedPlans(ctx, held))
	for k, ids := range unpaid {
		c.enforce(ctx, k, ids)
	}
	c.observeRejected(out)
	return out, nil
}

// record writes the plans' charges: those paid against a hold one at a
// time against it, the others in one call. It returns the results in the
// order of the plans it kept; a held charge its hold refuses (closed or
// exceeded since it was planned) is dropped, with its outcome set to
// RejectNoHold. On an error it returns the plans it did not record.
func (c *Service) record(ctx context.Context, plans []plan, out []Outcome) ([]hub.ChargeResult, []plan, error) {
	var plain []hub.Charge
	for i := range plans {
		if plans[i].hold == nil {
			plain = append(plain, plans[i].charge)
		}
	}
	var pres []hub.ChargeResult
	if len(plain) > 0 {
		var err error
		pres, err = c.cfg.Channels.RecordCharges(ctx, c.cfg.Charges, plain)
		if err == nil && len(pres) != len(plain) {
			err = fmt.Errorf("charging: charge store returned %d results for %d charges", len(pres), len(plain))
		}
		if err != nil {
			return nil, plans, err
		}
	}
	res := make([]hub.ChargeResult, 0, len(plans))
	kept := plans[:0:0]
	for _, p := range plans {
		if p.hold == nil {
			res, pres = append(res, pres[0]), pres[1:]
			kept = append(kept, p)
			continue
		}
		r, err := c.cfg.Channels.RecordHeldCharge(ctx, c.cfg.Charges, p.charge, *p.hold)
		if errors.Is(err, hub.ErrHoldRefused) {
			out[p.idx] = Outcome{Outcome: metering.Outcome{Rejected: RejectNoHold, Detail: err.Error()}}
			c.undoVolumes([]plan{p})
			continue
		}
		if err != nil {
			// The plain charges are durable (the batch's retry finds
			// them recorded); only the held ones are not.
			var unrecorded []plan
			for _, q := range plans {
				if q.hold != nil {
					unrecorded = append(unrecorded, q)
				}
			}
			return nil, unrecorded, err
		}
		res = append(res, r)
		kept = append(kept, p)
	}
	return res, kept, nil
}

// releaseHold ends a hold a session no longer needs.
func (c *Service) releaseHold(ctx context.Context, id [16]byte) {
	if _, err := c.cfg.Channels.ReleaseHold(ctx, id); err != nil {
		c.log.Warn("releasing a session's hold", "hold", fmt.Sprintf("%x", id[:]), "err", err)
	}
}

// rejection is why one event is not charged: a Reject* reason and a detail
// for the provider's operator. It is an error so that checking and pricing
// return (plan, error), and a store failure, which fails the whole batch,
// is told apart from it with errors.As.
type rejection struct {
	Reason, Detail string
}

func (r *rejection) Error() string { return r.Reason + ": " + r.Detail }

// sameEvent reports whether c, a charge about to be recorded, comes from
// the same event as stored, the charge already recorded under its
// (Provider, EventID): the same content digest, or, when either digest is
// unknown (a charge recorded before digests were kept), the same payer,
// contract, event time and quantity.
func sameEvent(stored, c hub.Charge) bool {
	if stored.Digest != (hub.Hash{}) && c.Digest != (hub.Hash{}) {
		return stored.Digest == c.Digest
	}
	return stored.Payer == c.Payer && stored.Contract == c.Contract && stored.EventTime.Equal(c.EventTime) &&
		(stored.Quantity == "" || c.Quantity == "" || stored.Quantity == c.Quantity)
}

// conflictDetail explains a RejectIDConflict for the provider's operator.
func conflictDetail(stored, c hub.Charge) string {
	what := fmt.Sprintf("event id %q", c.EventID)
	if session, ok := strings.CutPrefix(c.EventID, holdEventID("")); ok {
		what = fmt.Sprintf("conditional release session %q", session)
	}
	if stored.Digest != (hub.Hash{}) && c.Digest != (hub.Hash{}) {
		return fmt.Sprintf("%s was charged at %s for other content (digest %s, this event's %s); an id is charged once: send new usage under a new id",
			what, stored.Charged.Format(time.RFC3339), stored.Digest, c.Digest)
	}
	return fmt.Sprintf("%s was charged at %s for another payer, contract, time or quantity; an id is charged once: send new usage under a new id",
		what, stored.Charged.Format(time.RFC3339))
}

// payerChannels looks up, before ChargeUsage takes c.mu, the channel each
// payer of evs is charged on: the zero outpoint for a payer with no ready
// channel. RecordCharges checks the channel again in its own write.
func (c *Service) payerChannels(ctx context.Context, evs []Usage) (map[string]btcwire.OutPoint, error) {
	chans := make(map[string]btcwire.OutPoint)
	for i := range evs {
		payer := evs[i].Payer
		if _, ok := chans[payer]; ok {
			continue
		}
		op, err := c.cfg.Channels.PayerChannel(ctx, payer)
		if err != nil && !errors.Is(err, hub.ErrNotFound) {
			return nil, err
		}
		chans[payer] = op
	}
	return chans, nil
}

// planBatch checks and prices every event, filling out for the rejected
// ones; chans is payerChannels' answer. c.mu is held.
func (c *Service) planBatch(ctx context.Context, evs []Usage, now time.Time, chans map[string]btcwire.OutPoint, out []Outcome) ([]plan, error) {
	plans := make([]plan, 0, len(evs))
	heldHere := map[string]bool{} // hold ids planned in this batch
	for i := range evs {
		ev := &evs[i]
		p, err := c.planOne(ctx, ev, now, heldHere)
		var rej *rejection
		if errors.As(err, &rej) {
			out[i] = Outcome{Outcome: metering.Outcome{Rejected: rej.Reason, Detail: rej.Detail}}
			continue
		}
		if err != nil {
			c.undoVolumesLocked(plans)
			return nil, err
		}
		p.idx = i
		if p.charge.Status == hub.ChargeOwed && p.charge.Channel == (btcwire.OutPoint{}) {
			op := chans[ev.Payer]
			if op == (btcwire.OutPoint{}) {
				p.charge.Status = hub.ChargeUnpaid
			}
			p.charge.Channel = op
		}
		if p.charge.Status == hub.ChargeHeld {
			heldHere[p.charge.Provider+"\x00"+p.charge.EventID] = true
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// planOne checks and prices one event. A refused event comes back as a
// *rejection; any other error means the batch cannot be charged now (a
// store is down) and must be retried.
func (c *Service) planOne(ctx context.Context, ev *Usage, now time.Time, heldHere map[string]bool) (plan, error) {
	k, err := c.contract(ctx, ev.Contract)
	if errors.Is(err, hub.ErrNotFound) {
		return plan{}, &rejection{Reason: RejectUnknownContract, Detail: fmt.Sprintf("no contract %s", ev.Contract)}
	}
	if err != nil {
		return plan{}, err
	}
	payer, err := c.device(ctx, ev.Payer, now)
	switch {
	case errors.Is(err, hub.ErrNotFound):
		return plan{}, &rejection{Reason: RejectUnknownDevice, Detail: fmt.Sprintf("payer %q is not registered", ev.Payer)}
	case err != nil:
		return plan{}, err
	case payer.Status == hub.StatusRevoked:
		return plan{}, &rejection{Reason: RejectRevoked, Detail: fmt.Sprintf("payer %s is revoked", ev.Payer)}
	case payer.Status == hub.StatusFrozen:
		return plan{}, &rejection{Reason: RejectFrozen, Detail: fmt.Sprintf("payer %s is frozen", ev.Payer)}
	case !payer.HasRole(hub.RolePayer):
		return plan{}, &rejection{Reason: RejectNotPayer, Detail: fmt.Sprintf("%s has no payer role", ev.Payer)}
	}
	// The provider is not looked up again: the intake checked it is an
	// active provider when it verified the event's signature with the
	// provider's key (hub/natsintake), the one status check of an event.

	u := ev.Usage
	u.Device, u.Provider, u.EventTime = ev.Payer, ev.Provider, ev.Time
	u.CumulativeMB = contracts.Dec{}
	p := plan{counted: len(k.Security) > 0, kind: k.Kind}
	if p.counted {
		var rej *rejection
		if rej, p.counted = c.security(ctx, k, ev, u, now); rej != nil {
			return plan{}, rej
		}
	}
	p.charge = hub.Charge{
		Provider: ev.Provider, EventID: ev.ID, Payer: ev.Payer, Contract: ev.Contract,
		Status: hub.ChargeOwed, EventTime: ev.Time.UTC(), Charged: now.UTC(), Digest: ev.Digest,
	}
	var hold *hub.Hold
	if ev.Hold != nil {
		h, err := c.checkHold(ctx, k, ev)
		if err != nil {
			return plan{}, err
		}
		hold = &h
		p.charge.Channel = h.Channel
	}
	if k.Kind == contracts.KindConditionalRelease && u.End.IsZero() {
		// Start of a job: hold the contract's amount until the end
		// event's readings decide.
		if u.Session == "" {
			return plan{}, &rejection{Reason: RejectPrice, Detail: "a conditional release event needs a session"}
		}
		held, err := contracts.HoldMsat(k)
		if err != nil {
			return plan{}, &rejection{Reason: RejectPrice, Detail: err.Error()}
		}
		p.charge.EventID, p.charge.Amount, p.charge.Status = holdEventID(u.Session), held, hub.ChargeHeld
		return p, nil
	}
	if k.Kind == contracts.KindConditionalRelease {
		if err := c.checkHeld(ctx, ev.Provider, u.Session, heldHere); err != nil {
			return plan{}, err
		}
		p.release = holdEventID(u.Session)
	}
	if k.Kind == contracts.KindBandwidth {
		key := volumeKey{provider: ev.Provider, payer: ev.Payer, contract: ev.Contract, window: k.Bandwidth.WindowStart(ev.Time)}
		vol, err := c.volume(ctx, k, key, now)
		if err != nil {
			return plan{}, err
		}
		u.CumulativeMB = vol
		p.vkey, p.volume = &key, u.Quantity.Decimal
		p.charge.Quantity = u.Quantity.Decimal.String()
	}
	b, err := contracts.Price(k, u)
	switch {
	case errors.Is(err, contracts.ErrContractMismatch):
		return plan{}, &rejection{Reason: RejectContractMismatch, Detail: err.Error()}
	case err != nil:
		return plan{}, &rejection{Reason: RejectPrice, Detail: err.Error()}
	}
	p.charge.Amount, p.charge.Fee = b.TotalMsat, b.FeeMsat
	p.charge.Shares = sharesOf(k, ev.Provider, b.ProviderMsat)
	if p.release != "" {
		if held, err := contracts.HoldMsat(k); err == nil && held > b.TotalMsat {
			p.charge.Withheld = held - b.TotalMsat
		}
	}
	if b.TotalMsat == 0 {
		// Nothing to pay (a refunded job, a free period): recorded so
		// the event is charged once, never requested.
		p.charge.Status = hub.ChargePaid
	}
	if hold != nil {
		id := hold.ID
		if p.charge.Status == hub.ChargeOwed && b.TotalMsat <= hold.Remaining() {
			p.hold = &id
			p.session = &heldSession{contract: k, usage: u, breakdown: b, attrs: ev.Attributes, signed: ev.SignedData, meterID: ev.MeterID}
		} else {
			p.endHold = &id
		}
	}
	if p.vkey != nil {
		c.volumes[*p.vkey] = contracts.D(c.volumes[*p.vkey].Add(p.volume))
	}
	return p, nil
}

// sharesOf divides the provider's part of a charge by the contract's
// revenue splits and returns the other payees' shares: none that is zero,
// and none to the provider itself (a split naming the charge's own
// provider adds to its part). Whatever they leave is the provider's
// (hub.Charge.ProviderPart), so the charge conserves to the msat.
func sharesOf(k *contracts.Contract, provider string, part msat.Amount) []hub.Share {
	if len(k.Splits) == 0 {
		return nil
	}
	var out []hub.Share
	for _, s := range k.SplitShares(provider, part)[1:] {
		if s.Msat != 0 && s.Payee != provider {
			out = append(out, hub.Share{Payee: s.Payee, Msat: s.Msat})
		}
	}
	return out
}

// checkHold finds the active hold a session's last event names: it must be
// the provider's, on the payer's channel, and the contract an EV charging
// one.
func (c *Service) checkHold(ctx context.Context, k *contracts.Contract, ev *Usage) (hub.Hold, error) {
	if k.Kind != contracts.KindEVCharging {
		return hub.Hold{}, &rejection{Reason: RejectNoHold, Detail: fmt.Sprintf("a %s contract is not paid against a hold", k.Kind)}
	}
	h, err := c.cfg.Channels.Hold(ctx, *ev.Hold)
	switch {
	case errors.Is(err, hub.ErrHoldRefused):
		return hub.Hold{}, &rejection{Reason: RejectNoHold, Detail: err.Error()}
	case err != nil:
		return hub.Hold{}, err
	case h.Provider != ev.Provider || h.DeviceID != ev.Payer:
		return hub.Hold{}, &rejection{Reason: RejectNoHold, Detail: fmt.Sprintf("hold %x is not between %s and %s", ev.Hold[:], ev.Payer, ev.Provider)}
	}
	return h, nil
}

// checkHeld finds the held charge an end-of-job event resolves: it returns
// a *rejection when there is none.
func (c *Service) checkHeld(ctx context.Context, provider, session string, heldHere map[string]bool) error {
	if session == "" {
		return &rejection{Reason: RejectNoHold, Detail: "a conditional release event needs a session"}
	}
	id := holdEventID(session)
	if heldHere[provider+"\x00"+id] {
		return nil
	}
	h, err := c.cfg.Charges.Charge(ctx, provider, id)
	switch {
	case errors.Is(err, hub.ErrNotFound):
		return &rejection{Reason: RejectNoHold, Detail: fmt.Sprintf("no job started for session %q", session)}
	case err != nil:
		return err
	case h.Status != hub.ChargeHeld:
		// Resolved before: the end event is a repeat under a new id.
		return &rejection{Reason: RejectNoHold, Detail: fmt.Sprintf("job %q already ended", session)}
	}
	return nil
}

// security runs k's rules over the hub's recent view of both parties and
// freezes whoever broke one. The hub's own clock times the windows: a
// provider cannot spread a flood by back-dating its events.
//
// It returns a rejection when ev must not be charged, and whether ev stays
// counted in the windows.
func (c *Service) security(ctx context.Context, k *contracts.Contract, ev *Usage, u contracts.Usage, now time.Time) (*rejection, bool) {
	keep := 1
	for _, r := range k.Security {
		if r.Rule == contracts.RuleMaxEventRate && r.Limit != nil {
			keep = max(keep, int(min(r.Limit.IntPart(), MaxSecurityWindow-1))+1)
		}
	}
	w := contracts.Window{
		Device: ev.Payer, Provider: ev.Provider, Now: now, Readings: u.Readings,
		DeviceEvents:   c.window("d/"+ev.Payer).add(now, keep),
		ProviderEvents: c.window("p/"+ev.Provider).add(now, keep),
	}
	f, broken := contracts.CheckSecurity(k, w)
	if !broken {
		return nil, true
	}
	// A redelivered event was counted when it was first charged: it is
	// not a new one and must not trip a rule (a batch redelivered after a
	// restart would otherwise freeze an honest party). Looking it up only
	// here keeps the store off the common path.
	if _, err := c.cfg.Charges.Charge(ctx, ev.Provider, ev.ID); err == nil {
		c.uncount(ev)
		return nil, false
	}
	reason := fmt.Sprintf("contract %s security rule %d (%s): %s", ev.Contract, f.Rule, k.Security[f.Rule].Rule, f.Reason)
	// The party is frozen for the rest of the batch at once; the durable
	// freeze runs once the lock is released (freeze).
	c.freezes = append(c.freezes, freeze{subject: f.Subject, reason: reason})
	if v, ok := c.devices[f.Subject]; ok {
		v.d.Status = hub.StatusFrozen
		c.devices[f.Subject] = v
	}
	return &rejection{Reason: RejectSecurity, Detail: reason}, true
}

// uncount takes back the newest time counted for ev's parties: charging
// found ev was a duplicate.
func (c *Service) uncount(ev *Usage) {
	for _, key := range []string{"d/" + ev.Payer, "p/" + ev.Provider} {
		if w := c.windows[key]; w != nil && len(w.times) > 0 {
			w.times = w.times[:len(w.times)-1]
		}
	}
}

func (c *Service) window(key string) *eventWindow {
	w := c.windows[key]
	if w == nil {
		w = &eventWindow{}
		c.windows[key] = w
	}
	return w
}

// undoVolumes takes back the bandwidth counted for plans that were not
// recorded (duplicates, or a batch that failed).
func (c *Service) undoVolumes(plans []plan) {
	if len(plans) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.undoVolumesLocked(plans)
}

func (c *Service) undoVolumesLocked(plans []plan) {
	for _, p := range plans {
		if p.vkey != nil {
			c.volumes[*p.vkey] = contracts.D(c.volumes[*p.vkey].Sub(p.volume))
		}
	}
}
