package charging

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
)

// Kinds of ProviderMessage.
const (
	ProviderMsgReceipt  = "receipt"
	ProviderMsgReceipts = "receipts"
	ProviderMsgUnpaid   = "unpaid"
	// ProviderMsgShare tells a revenue split's payee of a receipt that
	// paid charges it has a share of.
	ProviderMsgShare = "share"
)

// ProviderMessage is what the hub publishes on receipts.<provider>: a
// receipt for events paid, or an enforcement notice for events nobody will
// pay (stop serving the payer). Every value is a string, as in usage events.
type ProviderMessage struct {
	Kind string `json:"kind"`
	// Receipt is the hex channel.Receipt (version 2) and Events the ids
	// it covers (kind "receipt").
	Receipt string   `json:"receipt,omitempty"`
	Events  []string `json:"events,omitempty"`
	// Receipts are several receipts at once (kind "receipts"): the
	// receipts paid to the provider since the last message, gathered so
	// that receipts do not queue behind one stored message each.
	Receipts []PaidReceipt `json:"receipts,omitempty"`
	// Payer, EventIDs, Reason and StopService describe unpaid events
	// (kind "unpaid").
	Payer       string   `json:"payer,omitempty"`
	EventIDs    []string `json:"event_ids,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	StopService string   `json:"stop_service,omitempty"`
	// CDR is the OCPI CDR of an EV session paid against its hold, and
	// Events the event ids it covers (kind "cdr").
	CDR json.RawMessage `json:"cdr,omitempty"`
	// Shares, with Receipt and Events (kind "share", to a payee of a
	// revenue split): the payee's share of each event of the receipt
	// that gives it one. The receipt pays the provider that metered the
	// events; the shares are the payee's part of it.
	Shares []EventShare `json:"shares,omitempty"`
	// Paid, with kind "share", is when the hub marked the receipt's
	// charges paid (hub.Charge.Paid): the settlement of the epoch that
	// holds it, not the receipt's, pays the shares.
	Paid time.Time `json:"paid,omitzero"`
}

// EventShare is a payee's share of one charged event.
type EventShare struct {
	EventID string      `json:"event_id"`
	Msat    msat.Amount `json:"msat"`
}

// PaidReceipt is one receipt of a "receipts" message: the hex
// channel.Receipt (version 2) and the ids of the events it covers.
type PaidReceipt struct {
	Receipt string   `json:"receipt"`
	Events  []string `json:"events"`
}

// ReceiptsSubject is the subject the hub publishes a provider's receipts and
// enforcement notices on.
func ReceiptsSubject(provider string) string { return "receipts." + provider }

// unpaidKey groups unpaid events into one enforcement notice.
type unpaidKey struct{ provider, payer, reason string }

// payKey is one stream of owed charges paid by one request at a time.
type payKey struct {
	payer, provider string
	contract        hub.Hash
	channel         btcwire.OutPoint
	// hold is the hold a session's charge is paid against; zero for
	// charges paid from the channel's free capacity.
	hold [16]byte
}

// payGroup is owed charges gathered for one payment request.
type payGroup struct {
	key    payKey
	ids    []string
	amount msat.Amount
	// reqID and sent are set once requested; retry is when an offline
	// payer is asked again.
	reqID uint64
	sent  time.Time
	retry time.Time
	// session, for a group paid against a hold (one charge), makes the
	// session's CDR once it is paid.
	session *heldSession
	// shares are the other payees' shares of the group's charges, by
	// payee, told to each once the group is paid.
	shares map[string][]EventShare
	// root is the events root of the request last sent for the group,
	// recorded in the store, its fence in the charges' claims, when
	// recorded is set (askRequest).
	root     hub.Hash
	recorded bool
	// owed is when its first charge was queued, answered when the
	// payer's answer was heard (ChargeWaits).
	owed, answered time.Time
}

// add adds a charge to the group.
func (g *payGroup) add(ch *hub.Charge, now time.Time) {
	if g.owed.IsZero() {
		g.owed = now
	}
	g.ids, g.amount = append(g.ids, ch.EventID), g.amount+ch.Amount
	for _, sh := range ch.Shares {
		g.addShares(sh.Payee, EventShare{EventID: ch.EventID, Msat: sh.Msat})
	}
}

// merge adds later's charges, owed while g was being requested, to g.
func (g *payGroup) merge(later *payGroup) {
	if g.owed.IsZero() || (!later.owed.IsZero() && later.owed.Before(g.owed)) {
		g.owed = later.owed
	}
	g.ids, g.amount = append(g.ids, later.ids...), g.amount+later.amount
	for payee, ss := range later.shares {
		g.addShares(payee, ss...)
	}
}

// addShares adds a payee's shares of the group's charges.
func (g *payGroup) addShares(payee string, ss ...EventShare) {
	if g.shares == nil {
		g.shares = make(map[string][]EventShare)
	}
	g.shares[payee] = append(g.shares[payee], ss...)
}

// payEvent is a listener callback queued for the flusher.
type payEvent struct {
	reqID   uint64
	receipt []byte // paid
	code    string
	message string // refused, or why it failed
	failed  bool   // can no longer be paid: ask again
	at      time.Time
}

// addOwed queues newly owed charges, claimed, for their payers' next
// requests; a charge queued already is not queued twice.
func (c *Service) addOwed(cs []hub.Charge) {
	if len(cs) == 0 {
		return
	}
	kick := false
	now := c.clock.Now()
	c.pay.Lock()
	for i := range cs {
		ch := &cs[i]
		if c.holdLocked(ch.Provider, ch.EventID) {
			continue
		}
		k := payKey{payer: ch.Payer, provider: ch.Provider, contract: ch.Contract, channel: ch.Channel}
		g := c.pending[k]
		if g == nil {
			g = &payGroup{key: k}
			c.pending[k] = g
		}
		g.add(ch, now)
		if g.amount >= c.cfg.FlushThreshold {
			kick = true
		}
	}
	c.pay.Unlock()
	if kick {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// addHeld queues the charges of held sessions, each its own request
// against its hold.
func (c *Service) addHeld(ps []plan) {
	if len(ps) == 0 {
		return
	}
	now := c.clock.Now()
	c.pay.Lock()
	for _, p := range ps {
		ch := &p.charge
		if c.holdLocked(ch.Provider, ch.EventID) {
			continue
		}
		k := payKey{payer: ch.Payer, provider: ch.Provider, contract: ch.Contract, channel: ch.Channel, hold: *p.hold}
		p.session.eventID = ch.EventID
		g := c.pending[k]
		if g == nil {
			g = &payGroup{key: k}
			c.pending[k] = g
		}
		// A second event naming the hold is paid with the first (the
		// hold's remainder bounds both); the CDR is the last one's.
		g.add(ch, now)
		g.session = p.session
	}
	c.pay.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// ChargePaid implements ChargeListener: it queues the news for the flusher.
func (c *Service) ChargePaid(reqID uint64, receipt []byte) {
	c.queue(payEvent{reqID: reqID, receipt: receipt})
}

// ChargeRefused implements ChargeListener.
func (c *Service) ChargeRefused(reqID uint64, code, message string) {
	c.queue(payEvent{reqID: reqID, code: code, message: message})
}

// ChargeFailed implements ChargeListener: the request's charges are asked
// for again (on the device's next session).
func (c *Service) ChargeFailed(reqID uint64, reason string) {
	c.queue(payEvent{reqID: reqID, failed: true, message: reason})
}

func (c *Service) queue(ev payEvent) {
	ev.at = c.clock.Now()
	c.paidMu.Lock()
	c.paidQ = append(c.paidQ, ev)
	c.paidMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run is the flusher: every FlushInterval (or when kicked) it settles the
// answered requests, times out the silent ones and requests what is owed.
//
// The answered requests' durable part (charges marked paid, receipts
// published: a store write and a JetStream write per provider) runs beside
// the flusher, up to settleAhead rounds at once: the flusher frees their
// keys first and goes on requesting, so the charges owed meanwhile are not
// asked for only after the last round's receipts are out.
func (c *Service) run() {
	c.scanOnce.Do(func() { c.scanOwed(c.ctx, true) })
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.clock.TickAfter(c.cfg.FlushInterval):
		case <-c.kick:
		}
		if ans := c.answered(); len(ans) > 0 {
			select {
			case c.settling <- struct{}{}:
			case <-c.ctx.Done():
				return
			}
			go func() {
				defer func() { <-c.settling }()
				c.finish(c.ctx, ans)
			}()
		}
		c.flush(c.ctx, false)
	}
}

// settleAhead bounds the settle rounds the flusher leaves running. A round
// takes a JetStream write and two store commits, hundreds of ms under full
// payment load, while the flusher starts one every FlushInterval: with too
// few tokens the flusher waits for a token and stops requesting meanwhile.
const settleAhead = 32

// Flush requests every owed group now and settles answered requests; the
// flusher does the same every FlushInterval. Tests and shutdown use it.
// It returns once every request answered before it is settled and the
// requests it sent have been handed on (or failed).
func (c *Service) Flush(ctx context.Context) {
	c.scanOnce.Do(func() { c.scanOwed(ctx, true) })
	c.settle(ctx)
	c.waitSettles()
	c.flush(ctx, true)
}

// waitSettles returns once the settle rounds the flusher left running are
// done: it takes every token, which also holds new rounds back meanwhile.
func (c *Service) waitSettles() {
	for range settleAhead {
		c.settling <- struct{}{}
	}
	for range settleAhead {
		<-c.settling
	}
}

// answerDone is a request the device answered, with its answer.
type answerDone struct {
	g  *payGroup
	ev payEvent
}

// settle handles the device answers queued by the listener (answered,
// then finish).
func (c *Service) settle(ctx context.Context) {
	c.finish(ctx, c.answered())
}

// answered takes the device answers queued by the listener and frees
// their keys for the next requests.
func (c *Service) answered() []answerDone {
	c.paidMu.Lock()
	evs := c.paidQ
	c.paidQ = nil
	c.paidMu.Unlock()
	c.pay.Lock()
	defer c.pay.Unlock()
	var answered []answerDone
	var early []payEvent
	now := c.clock.Now()
	for _, ev := range evs {
		if g := c.inflight[ev.reqID]; g != nil && ev.failed {
			// Nothing can pay it any more: its charges go back to
			// pending, for the next request.
			delete(c.inflight, ev.reqID)
			c.log.Info("payment request failed, asking again", "payer", g.key.payer, "provider", g.key.provider,
				"events", len(g.ids), "reason", ev.message)
			c.unbusyLocked(g, false, now)
		} else if g != nil {
			g.answered = ev.at
			delete(c.inflight, ev.reqID)
			delete(c.busy, g.key)
			answered = append(answered, answerDone{g, ev})
		} else if c.sending > 0 && now.Sub(ev.at) < c.cfg.RequestTimeout {
			// The answer to a request still on its way: its id is
			// known once RequestPayment returns (the device may pay
			// before that). Others are of requests given up on.
			early = append(early, ev)
		}
	}
	if len(early) > 0 {
		c.paidMu.Lock()
		c.paidQ = append(early, c.paidQ...)
		c.paidMu.Unlock()
	}
	return answered
}

// finish makes answered requests durable: paid groups are marked paid (one
// store call per provider) and their receipts published; refused ones get
// an enforcement notice.
func (c *Service) finish(ctx context.Context, answered []answerDone) {
	paid := map[string][]*payGroup{}
	receipts := map[*payGroup][]byte{}
	for _, a := range answered {
		if a.ev.receipt != nil {
			paid[a.g.key.provider] = append(paid[a.g.key.provider], a.g)
			receipts[a.g] = a.ev.receipt
		}
	}
	// Each provider's paid charges are marked and its receipts published
	// in few messages, providers side by side: JetStream stores every
	// message with a synchronous write, so one message per receipt, one
	// after another, would cap receipts at a few hundred per second
	// under load (issue: metered income waiting behind payments).
	var wg sync.WaitGroup
	slots := make(chan struct{}, settleParallel)
	for prov, gs := range paid {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			c.settleProvider(ctx, prov, gs, receipts)
		}()
	}
	wg.Wait()
	for _, a := range answered {
		c.unhold(a.g.key.provider, a.g.ids)
		if a.ev.receipt != nil {
			// The CDR of a session paid against its hold follows its
			// receipt, published above.
			if a.g.key.hold != ([16]byte{}) {
				c.endSession(ctx, a.g)
			}
			continue
		}
		c.log.Info("payer refused charges", "payer", a.g.key.payer, "provider", a.g.key.provider,
			"events", len(a.g.ids), "code", a.ev.code, "message", a.ev.message)
		if err := c.cfg.Charges.SetChargeStatus(ctx, a.g.key.provider, a.g.ids, hub.ChargeUnpaid, time.Time{}); err != nil {
			c.log.Error("marking refused charges unpaid", "err", err)
		}
		if a.g.key.hold != ([16]byte{}) {
			c.releaseHold(ctx, a.g.key.hold) // the session is over, unpaid
		}
		c.enforce(ctx, unpaidKey{provider: a.g.key.provider, payer: a.g.key.payer, reason: UnpaidPolicyRefused}, a.g.ids)
	}
}

// settleParallel bounds the providers settled at once by one settle.
const settleParallel = 16

// maxReceiptsMsg bounds the receipts (hex and event ids) gathered into one
// "receipts" message, well under NATS's default 1 MB payload limit.
const maxReceiptsMsg = 256 << 10

// settleProvider settles one provider's paid groups: it publishes their
// receipts (tellProvider), then marks the charges of the groups told paid,
// in one store call, and deletes their requests' records.
//
// Publishing comes first so that a hubd dying between the two loses no
// receipt: the charges are still owed, their payment stored and their
// request's record kept, and whichever hubd claims them next settles them
// again from the stored payment (scanOwed). The provider may then hear a
// receipt twice: receipts reach it at least once. JetStream stores a
// repeat of the same message once within its duplicate window (the hub
// names each message by its content), and a provider counts a receipt
// once by its content (the Go client's Meter does). A group whose message
// could not be published is not marked paid: its claims are released, so
// a scan publishes it again.
//
// The charges' paid time is now, when they are marked, not their
// receipts' times: settlement posts a charge's fee and shares in the epoch
// of its paid time (hub.ChargeStore.ChargesPaid), and an epoch's ledger
// may be built between a receipt timed before its cut and the marking of
// that receipt's charges; with the receipt's time such a charge would
// never be posted. With the marking's time it is posted by the epoch open
// when it is marked, once: the store stamps no earlier than that epoch's
// start, read atomically with the mark, so a cut between the clock read
// and the store write cannot leave it in an epoch already built.
func (c *Service) settleProvider(ctx context.Context, prov string, gs []*payGroup, receipts map[*payGroup][]byte) {
	told, untold := c.tellProvider(ctx, prov, gs, receipts)
	c.observeTold(told)
	for _, g := range untold {
		c.log.Warn("receipt not published, its charges left to the scan", "payer", g.key.payer, "provider", prov, "events", len(g.ids))
		c.toScan(ctx, prov, g.ids)
	}
	if len(told) == 0 {
		return
	}
	var ids []string
	for _, g := range told {
		ids = append(ids, g.ids...)
	}
	paidAt := c.clock.Now().UTC()
	if err := c.cfg.Charges.SetChargeStatus(ctx, prov, ids, hub.ChargePaid, paidAt); err != nil {
		// Still owed, with their records: the scan settles them again
		// once their claims expire.
		c.log.Error("marking charges paid", "provider", prov, "events", len(ids), "err", err)
		return
	}
	c.dropRecords(ctx, prov, told)
	c.tellPayees(ctx, prov, told, receipts, paidAt)
}

// tellProvider publishes the receipts of one provider's paid groups: one
// "receipt" message for a lone receipt, else "receipts" messages of up to
// maxReceiptsMsg bytes each. It returns the groups whose message was
// published and those whose message failed.
func (c *Service) tellProvider(ctx context.Context, prov string, gs []*payGroup, receipts map[*payGroup][]byte) (told, untold []*payGroup) {
	if len(gs) == 1 {
		err := c.tryPublish(ctx, prov, ProviderMessage{
			Kind: ProviderMsgReceipt, Receipt: hex.EncodeToString(receipts[gs[0]]), Events: gs[0].ids,
		})
		if err != nil {
			return nil, gs
		}
		return gs, nil
	}
	var (
		batch []PaidReceipt
		in    []*payGroup // the groups of batch
		size  int
	)
	send := func() {
		if c.tryPublish(ctx, prov, ProviderMessage{Kind: ProviderMsgReceipts, Receipts: batch}) != nil {
			untold = append(untold, in...)
		} else {
			told = append(told, in...)
		}
		batch, in, size = nil, nil, 0
	}
	for _, g := range gs {
		r := PaidReceipt{Receipt: hex.EncodeToString(receipts[g]), Events: g.ids}
		n := len(r.Receipt) + 64
		for _, id := range g.ids {
			n += len(id) + 3
		}
		if len(batch) > 0 && size+n > maxReceiptsMsg {
			send()
		}
		batch = append(batch, r)
		in = append(in, g)
		size += n
	}
	send()
	return told, untold
}

// tellPayees tells each payee of a revenue split of the paid groups' receipts,
// one "share" message per receipt and payee, after the provider's own, with
// the time the charges were marked paid: the paid time the store kept,
// which is later than paidAt when an epoch was cut between the clock read
// and the store write (hub.ChargeStore.SetChargeStatus), so the payee
// counts its shares in the epoch that settles them. It costs one store
// read per group with shares; paidAt stands in when the read fails.
func (c *Service) tellPayees(ctx context.Context, prov string, gs []*payGroup, receipts map[*payGroup][]byte, paidAt time.Time) {
	for _, g := range gs {
		if len(g.shares) == 0 {
			continue
		}
		paid := paidAt
		if st, err := c.cfg.Charges.Charge(ctx, prov, g.ids[0]); err != nil {
			c.log.Error("reading the paid time of a split charge", "provider", prov, "event", g.ids[0], "err", err)
		} else if !st.Paid.IsZero() {
			paid = st.Paid
		}
		for payee, shares := range g.shares {
			c.publish(ctx, payee, ProviderMessage{
				Kind: ProviderMsgShare, Receipt: hex.EncodeToString(receipts[g]), Events: g.ids, Shares: shares, Paid: paid,
			})
		}
	}
}

// requestParallel bounds the payment requests on their way at once. Each
// waits for a store commit (askRequest) shared with the payments, tens of
// ms to over 100 ms under full payment load, so the bound caps requests
// per second at about requestParallel / that wait: at 64 the owed charges
// of a load test at full payment load waited 0.7 s (p50) to 5.4 s (p99)
// for a slot, at 512 they wait 9 / 95 ms (README, Performance).
const requestParallel = 512

// flush sends one payment request per pending group whose key has none in
// flight, and gives up on requests unanswered for RequestTimeout. The
// requests go out side by side, each on its own goroutine: one routed to
// another instance waits for that instance's answer (up to its attempts,
// 6 s for a stalled holder), and waiting for each in turn held up every
// other payer's request and the settling of answered ones, so under load
// payers' owed charges grew past the credit limit on a hub of several
// instances (charges then recorded unpaid). With wait, flush returns once
// its requests have been sent.
func (c *Service) flush(ctx context.Context, wait bool) {
	now := c.clock.Now()
	c.pay.Lock()
	var expired []*payGroup
	for id, g := range c.inflight {
		if now.Sub(g.sent) >= c.cfg.RequestTimeout {
			delete(c.inflight, id)
			delete(c.busy, g.key)
			expired = append(expired, g)
		}
	}
	var ready []*payGroup
	for k, g := range c.pending {
		if c.busy[k] || now.Before(g.retry) {
			continue
		}
		delete(c.pending, k)
		c.busy[k] = true
		ready = append(ready, g)
	}
	c.pay.Unlock()

	for _, g := range expired {
		c.expire(ctx, g)
	}
	var sent sync.WaitGroup
send:
	for i, g := range ready {
		select {
		case c.reqSlots <- struct{}{}:
		default:
			// Every slot is taken: the rest go at the next flush.
			for _, g := range ready[i:] {
				c.unbusy(g, false, now)
			}
			break send
		}
		c.pay.Lock()
		c.sending++
		c.pay.Unlock()
		sent.Add(1)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer sent.Done()
			c.request(ctx, g, now)
			<-c.reqSlots
			c.pay.Lock()
			c.sending--
			c.pay.Unlock()
			c.paidMu.Lock()
			queued := len(c.paidQ) > 0
			c.paidMu.Unlock()
			if queued {
				// Answers that came before the id was known are
				// settled now.
				select {
				case c.kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	if wait {
		sent.Wait()
	}
}

// request asks the payer to pay g. An offline payer is asked again after a
// second; its charges meanwhile stay owed on credit, and once the credit is
// used up new ones are recorded unpaid and the provider told to stop.
func (c *Service) request(ctx context.Context, g *payGroup, now time.Time) {
	root, n, err := channel.EventsRoot(g.ids)
	if err != nil {
		c.log.Error("events root", "err", err)
		c.unbusy(g, false, now)
		return
	}
	fence := c.askRequest(ctx, g, root, now)
	if fence == nil {
		return
	}
	r := hub.PaymentRequest{
		Listener: c, Payer: g.key.payer, Payee: g.key.provider, Channel: g.key.channel, Amount: g.amount,
		Contract: g.key.contract, EventsRoot: root, EventCount: n,
		Memo: fmt.Sprintf("%d events", n), Fence: fence,
	}
	if g.key.hold != ([16]byte{}) {
		hold := g.key.hold
		r.Hold, r.Memo = &hold, "session "+g.session.usage.Session
	}
	id, err := c.cfg.Channels.RequestPayment(ctx, r)
	if err != nil {
		c.log.Debug("payment request not sent", "payer", g.key.payer, "err", err)
		c.unbusy(g, true, now)
		return
	}
	c.pay.Lock()
	g.reqID, g.sent = id, now
	c.inflight[id] = g
	c.pay.Unlock()
}

// expire gives up on g's request, unanswered for RequestTimeout: once
// voided (its late payment refused), the charges stay owed on the payer's
// channel (its credit is used up by them) and the provider is told to
// stop. When the store cannot void it, it is kept in flight and voided at
// a later flush: until then its payment may still be made, and heard.
func (c *Service) expire(ctx context.Context, g *payGroup) {
	done, err := c.voidRequest(ctx, g)
	if err != nil {
		c.log.Warn("unanswered charge request not given up yet", "payer", g.key.payer, "provider", g.key.provider, "err", err)
		c.pay.Lock()
		c.inflight[g.reqID] = g
		c.busy[g.key] = true
		c.pay.Unlock()
		return
	}
	c.cfg.Channels.CancelPayment(g.reqID)
	if done {
		c.enforce(ctx, unpaidKey{provider: g.key.provider, payer: g.key.payer, reason: UnpaidNoAnswer}, g.ids)
	}
}

// unbusy puts a group that could not be requested back into pending,
// merged with what was owed since.
func (c *Service) unbusy(g *payGroup, wait bool, now time.Time) {
	c.pay.Lock()
	defer c.pay.Unlock()
	c.unbusyLocked(g, wait, now)
}

// unbusyLocked is unbusy with c.pay held.
func (c *Service) unbusyLocked(g *payGroup, wait bool, now time.Time) {
	delete(c.busy, g.key)
	if later := c.pending[g.key]; later != nil {
		g.merge(later)
	}
	if wait {
		g.retry = now.Add(time.Second)
	}
	c.pending[g.key] = g
}

// enforce tells a provider that ids will not be paid by payer: stop
// serving it.
func (c *Service) enforce(ctx context.Context, k unpaidKey, ids []string) {
	c.log.Info("unpaid charges", "provider", k.provider, "payer", k.payer, "reason", k.reason, "events", len(ids))
	if c.cfg.Observer != nil {
		c.cfg.Observer.EventsUnpaid(k.reason, len(ids))
	}
	c.publish(ctx, k.provider, ProviderMessage{
		Kind: ProviderMsgUnpaid, Payer: k.payer, EventIDs: ids, Reason: k.reason, StopService: "true",
	})
}

// publish publishes m to provider, logging a failure.
func (c *Service) publish(ctx context.Context, provider string, m ProviderMessage) {
	_ = c.tryPublish(ctx, provider, m)
}

// tryPublish publishes m to provider and returns the error it logged.
func (c *Service) tryPublish(ctx context.Context, provider string, m ProviderMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		c.log.Error("encoding provider message", "err", err)
		return err
	}
	if err := c.cfg.Publisher.Publish(ctx, ReceiptsSubject(provider), b); err != nil {
		c.log.Error("publishing to provider", "provider", provider, "kind", m.Kind, "err", err)
		return err
	}
	return nil
}
