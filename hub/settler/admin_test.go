package settler_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// The admin API's settlement endpoints take the service as it is.
var _ httpapi.Settlement = (*settler.Service)(nil)

// TestSettlementAdmin checks what the admin API reads: Preview plans what
// Settle then does and stores nothing; Runs and Epochs list what Settle
// stored; ReceiptProof proves a settled receipt against the root the batch
// anchors on chain, and refuses unknown and unsettled receipts.
func TestSettlementAdmin(t *testing.T) {
	e := newSettleEnv(t)
	ctx := t.Context()
	p1, p2 := e.device("p1", true), e.device("p2", false)
	a := "provider-a"
	e.payouts[a] = nil
	c1 := e.openChannel(p1, 100_000)
	c2 := e.openChannel(p2, 100_000)
	e.h.Mine(t, 1)
	e.pay(c1, p1, a, 10_000_000)
	e.pay(c1, p1, a, 2_000_300)
	e.pay(c2, p2, a, 7_000_000)
	e.fee(a, p1, c1, 3_000_000)
	s := e.settlement(nil)

	pr, plan, err := s.Preview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if eps, _ := s.Epochs(ctx, 10); len(eps) != 0 {
		t.Fatalf("preview stored %d epochs", len(eps))
	}
	if runs, _ := s.Runs(ctx, 10); len(runs) != 0 {
		t.Fatalf("preview stored %d runs", len(runs))
	}
	if pr.State != settlement.RunPlanned || pr.Epoch.Number != 1 || len(pr.Txs) != 1 || len(plan.Txs) != 1 {
		t.Fatalf("preview run %s epoch %d with %d txs, plan %d", pr.State, pr.Epoch.Number, len(pr.Txs), len(plan.Txs))
	}
	modes := map[string]settlement.Mode{}
	for _, c := range plan.Txs[0].Channels {
		modes[c.Participant] = c.Mode
	}
	if modes[p1] != settlement.ModeCooperative || modes[p2] != settlement.ModeClaim {
		t.Fatalf("preview modes %v", modes)
	}
	if len(e.nonces) != 0 {
		t.Fatalf("preview asked devices to sign (%d nonces)", len(e.nonces))
	}
	// Nothing moved: a second preview plans the same batch.
	pr2, _, err := s.Preview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pr.Txs[0], pr2.Txs[0]) {
		t.Fatal("two previews planned different batches")
	}

	r, err := s.Settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = e.confirm(s, r.Epoch.Number)
	for id, net := range pr.Closing.Nets {
		if r.Closing.Nets[id] != net {
			t.Errorf("net of %s: preview %d, settled %d", id, net, r.Closing.Nets[id])
		}
	}
	if pr.Anchor.ReceiptsRoot != r.Anchor.ReceiptsRoot || pr.Fee != r.Fee {
		t.Errorf("preview anchor %x fee %d, settled %x fee %d", pr.Anchor.ReceiptsRoot, pr.Fee, r.Anchor.ReceiptsRoot, r.Fee)
	}
	runs, err := s.Runs(ctx, 10)
	if err != nil || len(runs) != 1 || runs[0].State != settlement.RunConfirmed {
		t.Fatalf("runs %v, %v", runs, err)
	}
	eps, err := s.Epochs(ctx, 10)
	if err != nil || len(eps) != 2 || !eps[0].Open() || eps[1].Number != 1 {
		t.Fatalf("epochs %+v, %v", eps, err)
	}

	tx := e.chainTx(hubtest.RunTxids(t, r)[0])
	onChain, _, err := settlement.FindAnchor(tx)
	if err != nil {
		t.Fatal(err)
	}
	raws, err := e.h.Store().Receipts(ctx, c1, 1, 10)
	if err != nil || len(raws) != 2 {
		t.Fatalf("receipts of c1: %d, %v", len(raws), err)
	}
	raws2, err := e.h.Store().Receipts(ctx, c2, 1, 10)
	if err != nil || len(raws2) != 1 {
		t.Fatalf("receipts of c2: %d, %v", len(raws2), err)
	}
	for _, raw := range append(raws, raws2...) {
		var want channel.Receipt
		if err := want.UnmarshalBinary(raw); err != nil {
			t.Fatal(err)
		}
		got, proof, pr, err := s.ReceiptProof(ctx, want.ID())
		if err != nil {
			t.Fatal(err)
		}
		if got.ID() != want.ID() || pr.Epoch.Number != 1 {
			t.Fatalf("proof of %x names receipt %x in epoch %d", want.ID(), got.ID(), pr.Epoch.Number)
		}
		if err := settlement.VerifyProof(want.ID(), proof, onChain.ReceiptsRoot); err != nil {
			t.Errorf("proof of %x against the on-chain root: %v", want.ID(), err)
		}
		// The same proof does not hold for another receipt.
		other := want.ID()
		other[0] ^= 1
		if settlement.VerifyProof(other, proof, onChain.ReceiptsRoot) == nil {
			t.Error("a proof verifies a receipt it is not for")
		}
	}

	if _, _, _, err := s.ReceiptProof(ctx, [32]byte{1}); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("unknown receipt: %v, want ErrNotFound", err)
	}
	// A payment on the next channel is in the open epoch: no proof yet.
	next := readyChannel(t, e, p1)
	e.pay(next.Funding, p1, a, 1_000)
	raws, err = e.h.Store().Receipts(ctx, next.Funding, 1, 10)
	if err != nil || len(raws) != 1 {
		t.Fatalf("receipts of the next channel: %d, %v", len(raws), err)
	}
	var open channel.Receipt
	if err := open.UnmarshalBinary(raws[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.ReceiptProof(ctx, open.ID()); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("receipt of the open epoch: %v, want ErrNotFound", err)
	}
}
