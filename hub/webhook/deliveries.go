package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

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
	out := []Delivery{}
	err := d.db.View(func(tx *bolt.Tx) error {
		for _, b := range []struct {
			name  []byte
			state string
		}{{bucketOutbox, StatePending}, {bucketDead, StateDead}} {
			err := tx.Bucket(b.name).ForEach(func(k, v []byte) error {
				var dl delivery
				if err := json.Unmarshal(v, &dl); err != nil {
					return fmt.Errorf("delivery %s: %w", k, err)
				}
				x := Delivery{ID: dl.ID, Endpoint: dl.Endpoint, Event: dl.Event, State: b.state, Attempts: dl.Attempts, LastError: dl.LastErr}
				if b.state == StatePending {
					x.NextAt = dl.NextAt
				}
				out = append(out, x)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: outbox: %w", err)
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
	defer d.mu.Unlock()
	if d.closed {
		return Delivery{}, ErrClosed
	}
	var dl delivery
	err := d.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDead).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: no dead delivery %s", hub.ErrNotFound, id)
		}
		if err := json.Unmarshal(v, &dl); err != nil {
			return fmt.Errorf("delivery %s: %w", id, err)
		}
		dl.Attempts, dl.LastErr, dl.NextAt = 0, "", d.clock.Now().UTC()
		// It may have reached the receiver before: mark it a redelivery.
		dl.maybeSent = true
		nv, err := json.Marshal(dl)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketOutbox).Put([]byte(id), nv); err != nil {
			return err
		}
		return tx.Bucket(bucketDead).Delete([]byte(id))
	})
	if err != nil {
		return Delivery{}, fmt.Errorf("webhook: redeliver: %w", err)
	}
	d.pending[dl.ID] = &dl
	d.wake()
	return Delivery{ID: dl.ID, Endpoint: dl.Endpoint, Event: dl.Event, State: StatePending, NextAt: dl.NextAt}, nil
}

// Test queues a ping event to one endpoint, so an operator can check the
// receiver and its signature check end to end. It returns an error
// wrapping hub.ErrNotFound for an unknown endpoint.
func (d *Dispatcher) Test(ctx context.Context, endpointID string) (Delivery, error) {
	ep, ok := d.cfg.Endpoints.Endpoint(endpointID)
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
	dl := &delivery{ID: DeliveryID(ep.ID, EventPing, body), Endpoint: ep.ID, Event: EventPing, Body: body, NextAt: now}
	if err := d.put(dl); err != nil {
		return Delivery{}, err
	}
	return Delivery{ID: dl.ID, Endpoint: dl.Endpoint, Event: dl.Event, State: StatePending, NextAt: dl.NextAt}, nil
}
