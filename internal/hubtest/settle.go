package hubtest

import (
	"context"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/cosign"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// Settling is the settlement side of a hub started by StartSettling,
// wired as hubd wires it: session cosigners installed around the channel
// manager as the server's handler, the registry's payout scripts, and a
// revenue output the harness holds the key of (so fee bumps work).
type Settling struct {
	h *Hub
	// Cosigners reach the devices over their sessions; they follow the
	// hub across restarts.
	Cosigners *cosign.Cosigners
	// RevenueKey and RevenueScript receive the hub's revenue.
	RevenueKey    *btcec.PrivateKey
	RevenueScript []byte
}

// StartSettling is Start with session-based settlement cosigners wired
// into the hub. Build the settler.Service itself with settler.New (again
// after a RestartHub).
func StartSettling(tb testing.TB, cfg Config) (*Hub, *Settling) {
	tb.Helper()
	st := &Settling{RevenueKey: NewKey(tb)}
	var err error
	st.RevenueScript, err = txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(st.RevenueKey.PubKey()))
	if err != nil {
		tb.Fatal(err)
	}
	ref := &liveHub{}
	st.Cosigners, err = cosign.New(cosign.Config{
		Sessions: ref, Channels: ref, Runs: ref, PollInterval: 50 * time.Millisecond, Logger: cfg.Logger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	inner := cfg.Server
	cfg.Server = func(sc *session.Config) {
		if inner != nil {
			inner(sc)
		}
		sc.Handler = &session.Router{
			Default:      sc.Handler,
			ByType:       map[wire.MessageType]session.Handler{wire.MsgSettleSign: st.Cosigners},
			ErrorsByCode: map[wire.ChanCode]session.Handler{wire.ChanSettleRefused: st.Cosigners},
		}
	}
	h := Start(tb, cfg)
	ref.set(h)
	st.h = h
	st.Cosigners.Start()
	tb.Cleanup(func() { _ = st.Cosigners.Close() })
	return h, st
}

// settler.New builds a settler.Service on the hub's current run (store,
// channel manager, registry), closed in tb's cleanup. mod, when set,
// adjusts its configuration. It is not started: tests drive it with
// Settle and Poll.
func (st *Settling) NewSettlement(tb TB, mod func(*settler.Config)) *settler.Service {
	tb.Helper()
	h := st.h
	cfg := settler.Config{
		Store: h.Store(), Channels: h.Channels(), Chain: btcdchain.HubChain{Client: h.Chain()}, Cosigners: st.Cosigners,
		Payouts: h.Registry(), AuditHead: auditHead(h),
		RevenueScript: st.RevenueScript, RevenueKey: st.RevenueKey,
		RoundTimeout: 5 * time.Second, Confirmations: 1, CPFPAfter: 1000, Logger: h.Logger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := settler.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Confirm mines a block at a time and polls s until the epoch's run is
// confirmed, failing the test after 20 blocks.
func (st *Settling) Confirm(tb TB, s *settler.Service, epoch uint64) settlement.Run {
	tb.Helper()
	for range 20 {
		st.h.Mine(tb, 1)
		if err := s.Poll(tb.Context()); err != nil {
			tb.Fatal(err)
		}
		r, err := s.Run(tb.Context(), epoch)
		if err != nil {
			tb.Fatal(err)
		}
		if r.State == settlement.RunConfirmed {
			return r
		}
	}
	tb.Fatalf("hubtest: epoch %d not confirmed", epoch)
	return settlement.Run{}
}

// auditHead anchors the registry's audit head, as hubd does.
func auditHead(h *Hub) func(ctx context.Context) ([32]byte, error) {
	return func(ctx context.Context) ([32]byte, error) {
		e, err := h.Store().AuditHead(ctx)
		if err != nil {
			return [32]byte{}, err
		}
		return e.Hash, nil
	}
}

// liveHub gives the cosigners the current run's sessions, channels and
// runs, so they keep working across RestartHub.
type liveHub struct{ h *Hub }

func (l *liveHub) set(h *Hub) { l.h = h }

func (l *liveHub) Session(id string) (*session.Session, bool) {
	if l.h == nil {
		return nil, false
	}
	srv := l.h.Server()
	if srv == nil {
		return nil, false
	}
	return srv.Session(id)
}

func (l *liveHub) Channel(ctx context.Context, op btcwire.OutPoint) (hub.ChannelRecord, error) {
	if l.h == nil || l.h.Channels() == nil {
		return hub.ChannelRecord{}, channels.ErrClosed
	}
	return l.h.Channels().Channel(ctx, op)
}

func (l *liveHub) Runs(ctx context.Context, limit int) ([]settlement.Run, error) {
	if l.h == nil || l.h.Store() == nil {
		return nil, channels.ErrClosed
	}
	return l.h.Store().Runs(ctx, limit)
}
