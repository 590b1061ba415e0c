package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// EventPing is the event of a test delivery (hubctl webhook test).
const EventPing = "ping"

// Delivery states in the outbox.
const (
	StatePending = "pending" // waiting for its next attempt, or in flight
	StateDead    = "dead"    // out of attempts; Redeliver queues it again
)

// Delivery is one delivery as operators see it: where it goes, how often
// it was tried and why it last failed. The body is left out.
type Delivery struct {
	ID        string    `json:"id"`
	Endpoint  string    `json:"endpoint"`
	Event     string    `json:"event"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	NextAt    time.Time `json:"next_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// Deliveries lists the outbox: pending deliveries (in flight included) and
// dead ones, sorted by state then id.
func (d *Dispatcher) Deliveries(ctx context.Context) ([]Delivery, error) {
	pending, dead, err := d.outbox.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Delivery, 0, len(pending)+len(dead))
	for _, e := range pending {
		out = append(out, Delivery{ID: e.ID, Endpoint: e.Endpoint, Event: e.Event, State: StatePending, Attempts: e.Attempts, NextAt: e.NextAt, LastError: e.LastErr})
	}
	for _, e := range dead {
		out = append(out, Delivery{ID: e.ID, Endpoint: e.Endpoint, Event: e.Event, State: StateDead, Attempts: e.Attempts, LastError: e.LastErr})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].State != out[j].State {
			return out[i].State == StatePending
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Redeliver moves a dead delivery back to the outbox with its attempts
// reset, due now. It returns an error wrapping hub.ErrNotFound when no
// dead delivery has that id (a pending one is retried anyway).
func (d *Dispatcher) Redeliver(ctx context.Context, id string) (Delivery, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return Delivery{}, ErrClosed
	}
	e, err := d.outbox.Redeliver(ctx, id, d.clock.Now().UTC())
	if err != nil {
		return Delivery{}, err
	}
	d.wake()
	return Delivery{ID: e.ID, Endpoint: e.Endpoint, Event: e.Event, State: StatePending, NextAt: e.NextAt}, nil
}

// Test queues a ping event to one endpoint, so an operator can check the
// receiver and its signature check end to end. It returns an error
// wrapping hub.ErrNotFound for an unknown endpoint.
func (d *Dispatcher) Test(ctx context.Context, endpointID string) (Delivery, error) {
	ep, ok, err := d.cfg.Endpoints.Endpoint(ctx, endpointID)
	if err != nil {
		return Delivery{}, err
	}
	if !ok {
		return Delivery{}, fmt.Errorf("%w: no webhook endpoint %s", hub.ErrNotFound, endpointID)
	}
	now := d.clock.Now().UTC()
	body, err := json.Marshal(map[string]any{
		"type": EventPing, "provider": ep.Provider,
		"data": map[string]any{"endpoint": ep.ID, "time": now.Format(time.RFC3339Nano)},
	})
	if err != nil {
		return Delivery{}, err
	}
	e := Entry{ID: DeliveryID(ep.ID, EventPing, body), Endpoint: ep.ID, Event: EventPing, Body: body, NextAt: now}
	if err := d.put(ctx, e); err != nil {
		return Delivery{}, err
	}
	return Delivery{ID: e.ID, Endpoint: e.Endpoint, Event: e.Event, State: StatePending, NextAt: e.NextAt}, nil
}
