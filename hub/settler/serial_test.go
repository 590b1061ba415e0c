package settler_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// TestSettleOneRunAtATime starts a run whose cooperative round the test
// holds open, and while it is held asks for more runs: in the same
// process (Begin and Settle at once) and from a second settlement service
// on the same store, as a second hubd's admin API would (Begin). Every one is refused with
// ErrRunOpen at once (409 through the admin API; none waits for the round),
// the admin API's run answered 202 as soon as the run was durably planned,
// and once the round ends exactly one epoch
// was cut and it is broadcast.
func TestSettleOneRunAtATime(t *testing.T) {
	e := newSettleEnv(t)
	p := e.device("p", true)
	c := e.openChannel(p, 100_000)
	e.h.Mine(t, 1)
	e.pay(c, p, "provider-a", 20_000_000)
	e.payouts["provider-a"] = hubtest.P2TR(t)
	e.gate, e.inRound = make(chan struct{}), make(chan struct{}, 1)

	states := make(chan settlement.RunState, 16)
	s := e.settlement(func(cfg *settler.Config) {
		cfg.AfterState = func(r settlement.Run) error { states <- r.State; return nil }
	})
	// Through the admin API, as hubctl settle run --no-wait: the answer
	// comes while the round is still held, 202 with the planned run.
	const token = "0123456789abcdef0123456789abcdef"
	api, err := httpapi.New(httpapi.Config{Registry: e.h.Registry(), Token: token, Settlement: s,
		Info: func() httpapi.Info { return httpapi.Info{} }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	cl := httpapi.NewClient(strings.TrimPrefix(srv.URL, "http://"), token)
	r, err := cl.Settle(t.Context())
	if err != nil || r.State != settlement.RunPlanned || r.Epoch.Number != 1 {
		t.Fatalf("POST /v1/settlement/run: %+v, %v", r, err)
	}
	if got := <-states; got != settlement.RunPlanned {
		t.Fatalf("first stored state %s", got)
	}
	<-e.inRound // the round is under way, held by the test

	other := e.settlement(nil) // another hub on the same store
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, f := range []func() error{
		func() error { _, err := cl.Settle(t.Context()); return err },
		func() error { _, err := s.Begin(t.Context()); return err },
		func() error { _, err := s.Settle(t.Context()); return err },
		func() error { _, err := other.Begin(t.Context()); return err },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f() }()
	}
	wg.Wait()
	var apiErr *httpapi.APIError
	if !errors.As(errs[0], &apiErr) || apiErr.Status != http.StatusConflict {
		t.Errorf("concurrent POST: %v, want 409", errs[0])
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, hub.ErrRunOpen) {
			t.Errorf("concurrent request %d: %v, want hub.ErrRunOpen", i+1, err)
		}
	}

	close(e.gate)
	for st := range states {
		if st == settlement.RunBroadcast {
			break
		}
	}
	eps, err := s.Epochs(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 || eps[0].Number != 2 || !eps[0].Open() {
		t.Fatalf("epochs %+v, want closed 1 and open 2", eps)
	}
	// Once it is broadcast (and the run's goroutine let go: Poll waits
	// for it) the next run may start; nothing was paid since: empty.
	if err := s.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Settle(t.Context()); err != nil || r.Epoch.Number != 2 {
		t.Fatalf("next run: %+v, %v", r, err)
	}
}

// TestSettleEmptyEpoch settles an epoch with nothing worth moving on
// chain: it is recorded empty (no txid, no broadcast, no confirmation
// height, no planned state ever stored or announced), its balances carry
// into the next epoch, which settles them. Epoch 1 opened when the
// settlement first ran, not at the Unix epoch, and still holds a payment
// made before it opened.
func TestSettleEmptyEpoch(t *testing.T) {
	e := newSettleEnv(t)
	p := e.device("p", true)
	c := e.openChannel(p, 100_000)
	e.h.Mine(t, 1)
	e.payouts["provider-a"] = hubtest.P2TR(t)
	before := time.Now().Add(-time.Second)
	e.pay(c, p, "provider-a", 150_500) // 150.5 sat: less than its fee

	var mu sync.Mutex
	var seen []settlement.RunState
	s := e.settlement(func(cfg *settler.Config) {
		cfg.AfterState = func(r settlement.Run) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, r.State)
			return nil
		}
	})
	preview, _, err := s.Preview(t.Context())
	if err != nil || preview.State != settlement.RunEmpty {
		t.Fatalf("preview: %s, %v", preview.State, err)
	}
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.State != settlement.RunEmpty || len(r.Txs) != 0 || r.ConfirmHeight != 0 || r.Fee != 0 {
		t.Fatalf("empty run: %+v", r)
	}
	if r.Epoch.Number != 1 || r.Epoch.Start.Before(before) || r.Epoch.Start.Year() < 2000 {
		t.Fatalf("epoch 1 opened at %v, want the settlement's first start", r.Epoch.Start)
	}
	if got := r.Closing.CarriedNet(p); got != -150_500 {
		t.Fatalf("p carries %d msat, want the payment made before epoch 1 opened", got)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != settlement.RunEmpty {
		t.Fatalf("states stored %v, want only empty", seen)
	}
	mu.Unlock()
	// Blocks change nothing for an empty run.
	e.h.Mine(t, 3)
	if err := s.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Run(t.Context(), 1); got.State != settlement.RunEmpty || got.ConfirmHeight != 0 {
		t.Fatalf("after blocks: %+v", got)
	}

	// The next epoch settles what was carried with its own payments.
	e.pay(c, p, "provider-a", 10_000_000)
	r2, err := s.Settle(t.Context())
	if err != nil || r2.State != settlement.RunBroadcast {
		t.Fatalf("epoch 2: %+v, %v", r2, err)
	}
	r2 = e.confirm(s, 2)
	tx := e.chainTx(hubtest.RunTxids(t, r2)[0])
	if got := tx.TxOut[hubtest.IndexOfInput(tx, c)].Value; got != 100_000-10_150 {
		t.Fatalf("p's next channel %d sat, want %d", got, 100_000-10_150)
	}
}

// TestSettleConfirmedAtItsBlock broadcasts a batch, then records several
// empty epochs after it, then mines one block at a time, polling after
// each: the run is confirmed at the poll after the block that gives it its
// confirmations, not later, with the height of the block that mined it,
// above the epoch's end height.
func TestSettleConfirmedAtItsBlock(t *testing.T) {
	e := newSettleEnv(t)
	p := e.device("p", true)
	c := e.openChannel(p, 100_000)
	e.h.Mine(t, 1)
	e.payouts["provider-a"] = hubtest.P2TR(t)
	e.pay(c, p, "provider-a", 20_000_000)
	s := e.settlement(nil) // two confirmations
	r, err := s.Settle(t.Context())
	if err != nil || r.State != settlement.RunBroadcast {
		t.Fatalf("%+v %v", r, err)
	}
	for range 5 {
		if r, err := s.Settle(t.Context()); err != nil || r.State != settlement.RunEmpty {
			t.Fatalf("empty epoch: %+v %v", r, err)
		}
	}
	mined := e.h.Height(t) + 1
	for i := range 2 {
		e.h.Mine(t, 1)
		if err := s.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		got, err := s.Run(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		want := settlement.RunBroadcast
		if i == 1 {
			want = settlement.RunConfirmed
		}
		if got.State != want {
			t.Fatalf("after block %d: %s, want %s", i+1, got.State, want)
		}
		if want == settlement.RunConfirmed && (got.ConfirmHeight != mined || got.ConfirmHeight <= got.Epoch.EndHeight) {
			t.Fatalf("confirmed at %d, mined at %d, epoch ended at %d", got.ConfirmHeight, mined, got.Epoch.EndHeight)
		}
	}
}

// TestSettleDustChannelIsolated: a channel worth 5 sat near its expiry,
// absent, is alone in the hub: the plan does not fail, it shows the
// channel left to the device's refund; with a large channel beside it the
// run settles the large one and the batch confirms.
func TestSettleDustChannelIsolated(t *testing.T) {
	e := newSettleEnv(t)
	tiny := e.device("tiny", false)
	ct := e.openChannelAt(tiny, 10_000, e.h.Height(t)+20)
	e.h.Mine(t, 1)
	e.payouts["provider-a"] = hubtest.P2TR(t)
	e.pay(ct, tiny, "provider-a", 5_000)
	s := e.settlement(func(cfg *settler.Config) { cfg.ExpiryMargin = 144 })

	_, plan, err := s.Preview(t.Context())
	if err != nil {
		t.Fatalf("plan with a dust channel: %v", err)
	}
	if len(plan.Txs) != 0 || len(plan.Carried) != 2 || plan.Carried[0].Participant != tiny ||
		plan.Carried[0].Reason != settlement.CarryRefund || plan.Carried[1].Reason != settlement.CarryDust {
		t.Fatalf("plan: %d txs, carried %+v", len(plan.Txs), plan.Carried)
	}

	big := e.device("big", true)
	cb := e.openChannel(big, 1_000_000)
	e.h.Mine(t, 1)
	e.pay(cb, big, "provider-a", 50_000_000)
	e.fee("provider-a", big, cb, 5_000_000)
	r, err := s.Settle(t.Context())
	if err != nil || r.State != settlement.RunBroadcast {
		t.Fatalf("run: %+v, %v", r, err)
	}
	r = e.confirm(s, r.Epoch.Number)
	var in, out btcutil.Amount
	for _, id := range hubtest.RunTxids(t, r) {
		tx := e.chainTx(id)
		if hubtest.IndexOfInput(tx, cb) < 0 {
			t.Fatalf("large channel not settled")
		}
		out += btcutil.Amount(hubtest.OutputPaying(tx, e.payouts["provider-a"]))
	}
	// 50,000 sat earned less the hub's 5,000 sat fee, and the tiny
	// channel's 5 sat: near its expiry, it rides in a batch that can pay
	// for it.
	in = 45_005
	if out != in {
		t.Fatalf("provider paid %d sat, want %d", out, in)
	}
	// Whatever the tiny channel did, the ledger conserves.
	var sum settlement.Msat
	for _, v := range r.Closing.Carried {
		sum += v
	}
	if sum != 0 {
		t.Fatalf("carried balances sum to %d msat", sum)
	}
}

// TestRefundedChannelClosed: a device refunds its expired channel on
// chain; the hub notices the spent output at the next block, moves the
// channel to closed (it stops claiming it), and the next plan leaves it out.
// The channel has no payment, so the hub's own expiry claim does not race
// the refund.
func TestRefundedChannelClosed(t *testing.T) {
	e := newSettleEnv(t)
	p := e.device("p", false)
	expiry := e.h.Height(t) + 4
	c := e.openChannelAt(p, 50_000, expiry)
	e.h.Mine(t, 1)
	for e.h.Height(t) < expiry {
		e.h.Mine(t, 1)
	}
	e.mu.Lock()
	params := e.outs[c].Params()
	key := e.keys[p]
	e.mu.Unlock()
	refund, err := m2mclient.BuildRefund(key, params, c, hubtest.P2TR(t), 500)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Chain().SendRawTransaction(t.Context(), refund); err != nil {
		t.Fatal(err)
	}
	e.h.Mine(t, 1)
	hubtest.WaitFor(t, 10*time.Second, "refunded channel closed", func() bool {
		rec, err := e.h.Store().Channel(t.Context(), c)
		return err == nil && rec.Status == hub.ChannelClosed
	})
	s := e.settlement(nil)
	_, plan, err := s.Preview(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range plan.Txs {
		if hubtest.IndexOfInput(tx.Tx, c) >= 0 {
			t.Fatalf("refunded channel in the plan")
		}
	}
}
