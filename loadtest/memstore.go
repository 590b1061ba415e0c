package loadtest

import (
	"context"
	"errors"
	"sync"

	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
)

// ErrNoHistory is what the load generator's device store answers to a
// receipt history query: it counts receipts but does not keep them.
var ErrNoHistory = errors.New("loadtest: the load generator keeps no receipt history")

// memStore is the simulated devices' channel store. The load test measures
// the hub; a thousand simulated devices fsyncing their own journals on the
// same disk would measure the generator's disk instead, so their states
// live in memory. Each real device keeps its FileStore.
type memStore struct {
	mu       sync.Mutex
	states   map[[32]byte]m2mclient.ChannelState
	receipts int
}

var (
	_ m2mclient.ChannelStore = (*memStore)(nil)
	_ m2mclient.ReceiptSaver = (*memStore)(nil)
)

func newMemStore() *memStore {
	return &memStore{states: map[[32]byte]m2mclient.ChannelState{}}
}

// Save keeps c by its pending id.
func (s *memStore) Save(_ context.Context, c m2mclient.ChannelState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[c.PendingID] = c
	return nil
}

// SaveWithReceipt keeps c and counts r.
func (s *memStore) SaveWithReceipt(_ context.Context, c m2mclient.ChannelState, _ *channel.Receipt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[c.PendingID] = c
	s.receipts++
	return nil
}

// Load returns the states saved.
func (s *memStore) Load(context.Context) ([]m2mclient.ChannelState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]m2mclient.ChannelState, 0, len(s.states))
	for _, c := range s.states {
		out = append(out, c)
	}
	return out, nil
}

// AppendReceipt counts r.
func (s *memStore) AppendReceipt(context.Context, wire.OutPoint, *channel.Receipt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.receipts++
	return nil
}

// Receipts fails with ErrNoHistory.
func (s *memStore) Receipts(context.Context, wire.OutPoint) ([]*channel.Receipt, error) {
	return nil, ErrNoHistory
}
