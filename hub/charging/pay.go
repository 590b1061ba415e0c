package charging

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
)

// Kinds of ProviderMessage.
const (
	ProviderMsgReceipt = "receipt"
	ProviderMsgUnpaid  = "unpaid"
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
	// Payer, EventIDs, Reason and StopService describe unpaid events
	// (kind "unpaid").
	Payer       string   `json:"payer,omitempty"`
	EventIDs    []string `json:"event_ids,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	StopService string   `json:"stop_service,omitempty"`
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
}

// payEvent is a listener callback queued for the flusher.
type payEvent struct {
	reqID   uint64
	receipt []byte // paid
	code    string
	message string // refused
}

// addOwed queues newly owed charges for their payers' next requests.
func (c *Service) addOwed(cs []hub.Charge) {
	if len(cs) == 0 {
		return
	}
	kick := false
	c.pay.Lock()
	for i := range cs {
		ch := &cs[i]
		k := payKey{payer: ch.Payer, provider: ch.Provider, contract: ch.Contract, channel: ch.Channel}
		g := c.pending[k]
		if g == nil {
			g = &payGroup{key: k}
			c.pending[k] = g
		}
		g.ids = append(g.ids, ch.EventID)
		g.amount += ch.Amount
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

// ChargePaid implements ChargeListener: it queues the news for the flusher.
func (c *Service) ChargePaid(reqID uint64, receipt []byte) {
	c.queue(payEvent{reqID: reqID, receipt: receipt})
}

// ChargeRefused implements ChargeListener.
func (c *Service) ChargeRefused(reqID uint64, code, message string) {
	c.queue(payEvent{reqID: reqID, code: code, message: message})
}

func (c *Service) queue(ev payEvent) {
	c.pay.Lock()
	c.paidQ = append(c.paidQ, ev)
	c.pay.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run is the flusher: every FlushInterval (or when kicked) it settles the
// answered requests, times out the silent ones and requests what is owed.
func (c *Service) run() {
	c.reloadOnce.Do(func() { c.reloadOwed(c.ctx) })
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.clock.TickAfter(c.cfg.FlushInterval):
		case <-c.kick:
		}
		c.settle(c.ctx)
		c.flush(c.ctx)
	}
}

// Flush requests every owed group now and settles answered requests; the
// flusher does the same every FlushInterval. Tests and shutdown use it.
func (c *Service) Flush(ctx context.Context) {
	c.reloadOnce.Do(func() { c.reloadOwed(ctx) })
	c.settle(ctx)
	c.flush(ctx)
}

// settle handles the device answers queued by the listener: paid groups
// are marked paid (one store call per provider) and their receipts
// published; refused ones get an enforcement notice.
func (c *Service) settle(ctx context.Context) {
	c.pay.Lock()
	evs := c.paidQ
	c.paidQ = nil
	type done struct {
		g  *payGroup
		ev payEvent
	}
	var answered []done
	for _, ev := range evs {
		if g := c.inflight[ev.reqID]; g != nil {
			delete(c.inflight, ev.reqID)
			delete(c.busy, g.key)
			answered = append(answered, done{g, ev})
		}
	}
	c.pay.Unlock()

	paid := map[string][]string{}
	for _, a := range answered {
		if a.ev.receipt != nil {
			paid[a.g.key.provider] = append(paid[a.g.key.provider], a.g.ids...)
		}
	}
	for prov, ids := range paid {
		if err := c.cfg.Charges.SetChargeStatus(ctx, prov, ids, hub.ChargePaid); err != nil {
			c.log.Error("marking charges paid", "provider", prov, "events", len(ids), "err", err)
		}
	}
	for _, a := range answered {
		if a.ev.receipt != nil {
			c.publish(ctx, a.g.key.provider, ProviderMessage{
				Kind: ProviderMsgReceipt, Receipt: hex.EncodeToString(a.ev.receipt), Events: a.g.ids,
			})
			continue
		}
		c.log.Info("payer refused charges", "payer", a.g.key.payer, "provider", a.g.key.provider,
			"events", len(a.g.ids), "code", a.ev.code, "message", a.ev.message)
		if err := c.cfg.Charges.SetChargeStatus(ctx, a.g.key.provider, a.g.ids, hub.ChargeUnpaid); err != nil {
			c.log.Error("marking refused charges unpaid", "err", err)
		}
		c.enforce(ctx, unpaidKey{provider: a.g.key.provider, payer: a.g.key.payer, reason: UnpaidPolicyRefused}, a.g.ids)
	}
}

// flush sends one payment request per pending group whose key has none in
// flight, and gives up on requests unanswered for RequestTimeout.
func (c *Service) flush(ctx context.Context) {
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
		// The charges stay owed on the payer's channel (its credit is
		// used up by them); the provider is told to stop.
		c.cfg.Channels.CancelPayment(g.reqID)
		c.enforce(ctx, unpaidKey{provider: g.key.provider, payer: g.key.payer, reason: UnpaidNoAnswer}, g.ids)
	}
	for _, g := range ready {
		c.request(ctx, g, now)
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
	id, err := c.cfg.Channels.RequestPayment(ctx, hub.PaymentRequest{
		Listener: c, Payer: g.key.payer, Payee: g.key.provider, Channel: g.key.channel, Amount: g.amount,
		Contract: g.key.contract, EventsRoot: root, EventCount: n,
		Memo: fmt.Sprintf("%d events", n),
	})
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

// unbusy puts a group that could not be requested back into pending,
// merged with what was owed since.
func (c *Service) unbusy(g *payGroup, wait bool, now time.Time) {
	c.pay.Lock()
	defer c.pay.Unlock()
	delete(c.busy, g.key)
	if later := c.pending[g.key]; later != nil {
		g.ids = append(g.ids, later.ids...)
		g.amount += later.amount
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

func (c *Service) publish(ctx context.Context, provider string, m ProviderMessage) {
	b, err := json.Marshal(m)
	if err != nil {
		c.log.Error("encoding provider message", "err", err)
		return
	}
	if err := c.cfg.Publisher.Publish(ctx, ReceiptsSubject(provider), b); err != nil {
		c.log.Error("publishing to provider", "provider", provider, "kind", m.Kind, "err", err)
	}
}
