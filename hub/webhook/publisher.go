package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/settlement"
)

// Publisher is a hub.Publisher that hands every message to next (NATS)
// and also queues the provider messages (receipts and unpaid notices on
// receipts.<provider>) as webhooks, so a provider back end gets what its
// NATS consumer gets.
type Publisher struct {
	next charging.Publisher
	d    *Dispatcher
}

var _ charging.Publisher = (*Publisher)(nil)

// NewPublisher wraps next.
func NewPublisher(next charging.Publisher, d *Dispatcher) *Publisher {
	return &Publisher{next: next, d: d}
}

// Envelope is the body of every webhook: the event type, the provider it
// is for, and the event itself (for receipts and unpaid notices, the
// hub.ProviderMessage published on NATS).
type Envelope struct {
	Type     string          `json:"type"`
	Provider string          `json:"provider,omitempty"`
	Data     json.RawMessage `json:"data"`
}

// Publish publishes data to next and, for a provider message, queues it
// as a webhook. Both are tried; the errors of both are returned.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte) error {
	err := p.next.Publish(ctx, subject, data)
	provider, ok := strings.CutPrefix(subject, charging.ReceiptsSubject(""))
	if !ok {
		return err
	}
	var m charging.ProviderMessage
	if jerr := json.Unmarshal(data, &m); jerr != nil {
		return errors.Join(err, fmt.Errorf("webhook: provider message: %w", jerr))
	}
	if m.Kind == charging.ProviderMsgReceipts {
		// Several receipts in one NATS message: a webhook per receipt,
		// each the "receipt" message it would have been on its own.
		errs := []error{err}
		for _, r := range m.Receipts {
			one, jerr := json.Marshal(charging.ProviderMessage{Kind: charging.ProviderMsgReceipt, Receipt: r.Receipt, Events: r.Events})
			if jerr != nil {
				errs = append(errs, jerr)
				continue
			}
			errs = append(errs, p.enqueue(ctx, provider, EventReceipt, one))
		}
		return errors.Join(errs...)
	}
	event := EventReceipt
	switch m.Kind {
	case charging.ProviderMsgUnpaid:
		event = EventUnpaid
	case charging.ProviderMsgCDR:
		event = EventCDR
	case charging.ProviderMsgShare:
		event = EventShare
	}
	return errors.Join(err, p.enqueue(ctx, provider, event, data))
}

// enqueue queues one provider message as a webhook.
func (p *Publisher) enqueue(ctx context.Context, provider, event string, data []byte) error {
	body, err := json.Marshal(Envelope{Type: event, Provider: provider, Data: data})
	if err != nil {
		return err
	}
	return p.d.Enqueue(ctx, provider, event, body)
}

// SettlementEvent is the data of a settlement webhook: where a run is.
type SettlementEvent struct {
	Epoch         uint64    `json:"epoch"`
	Attempt       uint32    `json:"attempt"`
	State         string    `json:"state"`
	Txids         []string  `json:"txids,omitempty"`
	FeeSat        int64     `json:"fee_sat"`
	ConfirmHeight uint32    `json:"confirm_height,omitempty"`
	Error         string    `json:"error,omitempty"`
	Updated       time.Time `json:"updated"`
}

// SettlementState queues a settlement webhook for every endpoint when a
// run changes state. Its signature fits settler.Config.AfterState;
// it never returns an error, since a webhook outbox failure must not stop
// a settlement run (it is logged). An empty run (an epoch with nothing to
// settle on chain) is not announced.
func (d *Dispatcher) SettlementState(r settlement.Run) error {
	if r.State == settlement.RunEmpty {
		return nil
	}
	ev := SettlementEvent{
		Epoch: r.Epoch.Number, Attempt: r.Attempt, State: string(r.State), FeeSat: int64(r.Fee),
		ConfirmHeight: r.ConfirmHeight, Error: r.Error, Updated: r.Updated.UTC(),
	}
	for _, raw := range r.Txs {
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(raw)); err == nil {
			ev.Txids = append(ev.Txids, tx.TxHash().String())
		}
	}
	data, err := json.Marshal(ev)
	if err == nil {
		var body []byte
		body, err = json.Marshal(Envelope{Type: EventSettlement, Data: data})
		if err == nil {
			err = d.Enqueue(d.ctx, "", EventSettlement, body)
		}
	}
	if err != nil {
		d.log.Error("settlement webhook not queued", "epoch", r.Epoch.Number, "state", r.State, "err", err)
	}
	return nil
}
