package httpapi_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/settlement"
)

// fakeSettlement is a test-only stand-in for the hub's settlement service:
// fixed epochs and runs, a hand-made plan, and a real Merkle tree over
// really signed receipts.
type fakeSettlement struct {
	epochs   []settlement.Epoch // newest first
	runs     map[uint64]settlement.Run
	preview  settlement.Run
	plan     *settlement.Plan
	receipts map[[32]byte]*channel.Receipt
	tree     *settlement.MerkleTree
	order    map[[32]byte]int
	settle   func() (settlement.Run, error)
}

func (f *fakeSettlement) Preview(context.Context) (settlement.Run, *settlement.Plan, error) {
	return f.preview, f.plan, nil
}

func (f *fakeSettlement) Begin(context.Context) (settlement.Run, error) { return f.settle() }

func (f *fakeSettlement) Run(_ context.Context, epoch uint64) (settlement.Run, error) {
	r, ok := f.runs[epoch]
	if !ok {
		return settlement.Run{}, fmt.Errorf("%w: run of epoch %d", hub.ErrNotFound, epoch)
	}
	return r, nil
}

func (f *fakeSettlement) Runs(_ context.Context, limit int) ([]settlement.Run, error) {
	var out []settlement.Run
	for _, e := range f.epochs {
		if r, ok := f.runs[e.Number]; ok && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeSettlement) Epochs(_ context.Context, limit int) ([]settlement.Epoch, error) {
	return f.epochs[:min(limit, len(f.epochs))], nil
}

func (f *fakeSettlement) ReceiptProof(_ context.Context, id [32]byte) (*channel.Receipt, settlement.Proof, settlement.Run, error) {
	r, ok := f.receipts[id]
	if !ok {
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("%w: receipt %x", hub.ErrNotFound, id)
	}
	p, err := f.tree.Proof(f.order[id])
	return r, p, f.runs[1], err
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// mustFakeSettlement has epoch 1 settled (confirmed at 130) over five
// receipts and epoch 2 open, with a preview of settling it.
func mustFakeSettlement(tb testing.TB) *fakeSettlement {
	tb.Helper()
	var seed [32]byte
	seed[0], seed[31] = 1, 9
	hubKey, _ := btcec.PrivKeyFromBytes(seed[:])
	f := &fakeSettlement{runs: map[uint64]settlement.Run{}, receipts: map[[32]byte]*channel.Receipt{}, order: map[[32]byte]int{}}
	var ids [][32]byte
	for i := range 5 {
		r := &channel.Receipt{
			Channel: wire.OutPoint{Hash: chainhash.Hash{byte(i + 1)}}, Seq: 1, Payer: fmt.Sprintf("car-%d", i), Payee: "gantry-7",
			Amount: 2_000, Paid: 2_000, Time: t0.Add(time.Duration(i) * time.Minute),
		}
		if err := r.Sign(hubKey); err != nil {
			tb.Fatal(err)
		}
		f.receipts[r.ID()], f.order[r.ID()] = r, i
		ids = append(ids, r.ID())
	}
	f.tree = settlement.NewMerkleTree(ids)
	e1, e2, err := settlement.FirstEpoch(t0, 100).Cut(t0.Add(time.Hour), 112)
	if err != nil {
		tb.Fatal(err)
	}
	f.epochs = []settlement.Epoch{e2, e1}
	anchor := settlement.Anchor{ReceiptsRoot: f.tree.Root(), AuditHead: [32]byte{0xa5}}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{1}}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(90_000, append([]byte{0x51, 0x20}, make([]byte, 32)...)))
	tx.AddTxOut(anchor.TxOut())
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		tb.Fatal(err)
	}
	run := *settlement.NewRun(e1, 1, t0.Add(time.Hour))
	run.Txs, run.Anchor, run.Fee = [][]byte{buf.Bytes()}, anchor, 310
	for _, s := range []settlement.RunState{settlement.RunSigning, settlement.RunSigned, settlement.RunBroadcast, settlement.RunConfirmed} {
		if err := run.Transition(s, t0.Add(time.Hour+time.Minute)); err != nil {
			tb.Fatal(err)
		}
	}
	run.ConfirmHeight = 130
	run.Closing = &settlement.Closing{Epoch: 1, Settled: map[string]btcutil.Amount{"car-0": -2, "gantry-7": 9}}
	f.runs[1] = run

	// The preview of epoch 2: a cooperative payer, a payer settled by
	// its claim, a provider paid out, a household carried.
	f.preview = *settlement.NewRun(e2, 1, t0.Add(2*time.Hour))
	f.preview.Anchor = settlement.Anchor{ReceiptsRoot: [32]byte{0x77}}
	f.preview.Closing = &settlement.Closing{
		Epoch: 2,
		Nets: map[string]settlement.Msat{
			"car-1": -5_000_500, "car-2": -1_000_000, "gantry-7": 5_940_000, "meter-3": 700,
		},
		Settled: map[string]btcutil.Amount{"car-1": -5_000, "car-2": -1_000, "gantry-7": 5_940},
		Carried: map[settlement.Account]settlement.Msat{
			settlement.Payer("car-1"): -500, settlement.Provider("meter-3"): 700,
		},
	}
	ptx := wire.NewMsgTx(2)
	ptx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{2}}, nil, nil))
	ptx.AddTxOut(f.preview.Anchor.TxOut())
	fund := wire.OutPoint{Hash: chainhash.Hash{3}, Index: 1}
	f.plan = &settlement.Plan{
		Txs: []*settlement.PlannedTx{{
			Tx: ptx,
			Channels: []settlement.PlannedChannel{
				{Participant: "car-1", Mode: settlement.ModeCooperative, Index: 0},
				{Participant: "car-2", Mode: settlement.ModeClaim, Index: 1},
			},
			Payouts: []settlement.PlannedPayout{{Participant: "gantry-7", Index: 2, Value: 5_940}},
			Weight:  1_321, Fee: 331, Revenue: 60, AnchorIndex: 4,
		}},
		Settled: f.preview.Closing.Settled,
		Carried: []settlement.Carry{{Participant: "meter-3", Funding: &fund, Amount: 700, Reason: settlement.CarryLowValue}},
		Fee:     331, Revenue: 60,
	}
	f.settle = func() (settlement.Run, error) { return f.preview, nil }
	return f
}

func newSettleAPI(t *testing.T, s httpapi.Settlement) (*httptest.Server, *httpapi.Client) {
	t.Helper()
	store, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{
		Registry: reg, Token: token, Settlement: s,
		Info: testInfo,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, h))
	t.Cleanup(srv.Close)
	return srv, httpapi.NewClient(strings.TrimPrefix(srv.URL, "http://"), token)
}

func TestSettlementPlan(t *testing.T) {
	f := mustFakeSettlement(t)
	_, cl := newSettleAPI(t, f)
	v, err := cl.SettlementPlan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v.Epoch.Number != 2 || !v.Epoch.Open() {
		t.Fatalf("epoch %+v", v.Epoch)
	}
	want := []httpapi.ParticipantView{
		{ID: "car-1", Net: -5_000_500, Settled: -5_000, Carried: -500, Mode: "cooperative"},
		{ID: "car-2", Net: -1_000_000, Settled: -1_000, Mode: "claim"},
		{ID: "gantry-7", Net: 5_940_000, Settled: 5_940, Mode: "payout"},
		{ID: "meter-3", Net: 700, Carried: 700},
	}
	if fmt.Sprint(v.Participants) != fmt.Sprint(want) {
		t.Fatalf("participants\n got %+v\nwant %+v", v.Participants, want)
	}
	if len(v.Txs) != 1 {
		t.Fatalf("txs %+v", v.Txs)
	}
	tx := v.Txs[0]
	if tx.Txid != f.plan.Txs[0].Tx.TxHash().String() || tx.Coop != 1 || tx.Claims != 1 || tx.Payouts != 1 ||
		tx.Weight != 1_321 || tx.VBytes != 331 || tx.Fee != 331 || tx.AnchorAt != 4 {
		t.Fatalf("tx %+v", tx)
	}
	if v.VBytes != 331 || v.Fee != 331 || v.Revenue != 60 || v.Anchor.ReceiptsRoot != (httpapi.HexHash{0x77}) {
		t.Fatalf("totals %+v", v)
	}
	if len(v.Carried) != 1 || v.Carried[0].Reason != "low value" || v.Carried[0].Funding != f.plan.Carried[0].Funding.String() {
		t.Fatalf("carried %+v", v.Carried)
	}
}

func TestSettlementRunAndStatus(t *testing.T) {
	f := mustFakeSettlement(t)
	srv, cl := newSettleAPI(t, f)
	ctx := context.Background()

	t.Run("Accepted", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/settlement/run", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d", resp.StatusCode)
		}
		r, err := cl.Settle(ctx)
		if err != nil || r.Epoch.Number != 2 || r.State != settlement.RunPlanned {
			t.Fatalf("%+v %v", r, err)
		}
	})
	t.Run("Conflict", func(t *testing.T) {
		for _, e := range []error{hub.ErrEpochConflict, settlement.ErrBadTransition, hub.ErrRunOpen, settler.ErrPending} {
			f.settle = func() (settlement.Run, error) { return settlement.Run{}, fmt.Errorf("cut: %w", e) }
			_, err := cl.Settle(ctx)
			var api *httpapi.APIError
			if !errors.As(err, &api) || api.Status != http.StatusConflict || api.Code != "conflict" {
				t.Fatalf("%v: got %v", e, err)
			}
		}
	})
	t.Run("Internal", func(t *testing.T) {
		f.settle = func() (settlement.Run, error) { return settlement.Run{}, errors.New("rpc password is hunter2") }
		_, err := cl.Settle(ctx)
		var api *httpapi.APIError
		if !errors.As(err, &api) || api.Status != http.StatusInternalServerError || strings.Contains(api.Message, "hunter2") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("StatusRecent", func(t *testing.T) {
		st, err := cl.SettlementStatus(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.Open == nil || st.Open.Number != 2 || len(st.Runs) != 1 {
			t.Fatalf("%+v", st)
		}
		r := st.Runs[0]
		wantTxid := f.runs[1].Txs[0]
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(wantTxid)); err != nil {
			t.Fatal(err)
		}
		if r.State != settlement.RunConfirmed || r.ConfirmHeight != 130 || r.Settled != 2 || r.Fee != 310 ||
			len(r.Txids) != 1 || r.Txids[0] != tx.TxHash().String() || r.Entered[settlement.RunBroadcast].IsZero() {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("StatusOfEpoch", func(t *testing.T) {
		st, err := cl.SettlementStatus(ctx, 1, 0)
		if err != nil || st.Open != nil || len(st.Runs) != 1 || st.Runs[0].Epoch.Number != 1 {
			t.Fatalf("%+v %v", st, err)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		_, err := cl.SettlementStatus(ctx, 9, 0)
		var api *httpapi.APIError
		if !errors.As(err, &api) || api.Status != http.StatusNotFound {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		for _, q := range []string{"epoch=x", "epoch=0", "limit=-1", "limit=a"} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/settlement/status?"+q, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: status %d", q, resp.StatusCode)
			}
		}
	})
}

func TestEpochs(t *testing.T) {
	f := mustFakeSettlement(t)
	_, cl := newSettleAPI(t, f)
	eps, err := cl.Epochs(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 || eps[0].Number != 2 || eps[0].RunState != "" || !eps[0].Open() ||
		eps[1].Number != 1 || eps[1].RunState != settlement.RunConfirmed || eps[1].EndHeight != 112 || len(eps[1].Txids) != 1 {
		t.Fatalf("%+v", eps)
	}
}

func TestReceiptProofEndpoint(t *testing.T) {
	f := mustFakeSettlement(t)
	srv, cl := newSettleAPI(t, f)
	ctx := context.Background()
	for id, i := range f.order {
		v, err := cl.ReceiptProof(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// The answer alone proves membership: decode it and check the
		// path against the root the anchor transaction carries.
		enc, _ := hex.DecodeString(v.Receipt)
		var r channel.Receipt
		if err := r.UnmarshalBinary(enc); err != nil || r.ID() != id || v.ReceiptID != httpapi.HexHash(id) {
			t.Fatalf("receipt %d: %v", i, err)
		}
		mb, _ := hex.DecodeString(v.Proof.MerkleProof)
		var p settlement.Proof
		if err := p.UnmarshalBinary(mb); err != nil {
			t.Fatal(err)
		}
		raw := f.runs[1].Txs[0]
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
		a, _, err := settlement.FindAnchor(&tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := settlement.VerifyProof(id, p, a.ReceiptsRoot); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if v.Proof.Txid != tx.TxHash().String() || v.Proof.Epoch != 1 || v.Index != uint64(i) || v.Leaves != 5 ||
			v.RunState != settlement.RunConfirmed || v.ConfirmHeight != 130 || v.AuditHead != (httpapi.HexHash{0xa5}) {
			t.Fatalf("receipt %d: %+v", i, v)
		}
	}
	t.Run("ErrNotFound", func(t *testing.T) {
		_, err := cl.ReceiptProof(ctx, [32]byte{1})
		var api *httpapi.APIError
		if !errors.As(err, &api) || api.Status != http.StatusNotFound {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/receipts/abcd/proof", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

// TestSettlementRoutesNeedService: without a settlement service the
// endpoints do not exist, and with one they need the credential.
func TestSettlementRoutesNeedService(t *testing.T) {
	srv, _ := newSettleAPI(t, nil)
	srv2, _ := newSettleAPI(t, mustFakeSettlement(t))
	for _, c := range []struct {
		url, auth string
		want      int
	}{
		{srv.URL + "/v1/settlement/plan", "Bearer " + token, http.StatusNotFound},
		{srv.URL + "/v1/epochs", "Bearer " + token, http.StatusNotFound},
		{srv2.URL + "/v1/settlement/plan", "", http.StatusUnauthorized},
		{srv2.URL + "/v1/epochs", "", http.StatusUnauthorized},
		{srv2.URL + "/v1/receipts/" + strings.Repeat("00", 32) + "/proof", "", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, c.url, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d", c.url, resp.StatusCode, c.want)
		}
	}
}
