package settler_test

import (
	"errors"
	"testing"

	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// crashEpoch sets up one online payer, one offline payer and a provider
// with a payout script, all paid in epoch 1.
func crashEpoch(t *testing.T) (*settleEnv, []btcwire.OutPoint) {
	e := newSettleEnv(t)
	on, off := e.device("online", true), e.device("offline", false)
	e.payouts["prov"] = hubtest.P2TR(t)
	c1, c2 := e.openChannel(on, 50_000), e.openChannel(off, 50_000)
	e.h.Mine(t, 1)
	e.pay(c1, on, "prov", 5_000_000)
	e.pay(c2, off, "prov", 6_000_000)
	e.fee("prov", on, c1, 1_500_000)
	return e, []btcwire.OutPoint{c1, c2}
}

// TestSettleCrash stops the hub right after each durable state of a run,
// restarts it on the same store, and checks the epoch settles exactly once:
// one batch on chain spending each channel once, the same txid as before
// the crash when it was already signed, and no MuSig2 nonce used for two
// messages across the crash.
func TestSettleCrash(t *testing.T) {
	for _, at := range []settlement.RunState{
		settlement.RunPlanned, settlement.RunSigning, settlement.RunSigned,
		settlement.RunBroadcast, settlement.RunConfirmed,
	} {
		t.Run(string(at), func(t *testing.T) {
			e, chans := crashEpoch(t)
			crashed := false
			var before settlement.Run
			s := e.settlement(func(c *settler.Config) {
				c.AfterState = func(r settlement.Run) error {
					if r.State == at && !crashed {
						crashed, before = true, r
						return errCrash
					}
					return nil
				}
			})
			var err error
			if at == settlement.RunConfirmed {
				var r settlement.Run
				if r, err = s.Settle(t.Context()); err != nil {
					t.Fatal(err)
				}
				for range 10 {
					e.h.Mine(t, 1)
					if err = s.Poll(t.Context()); err != nil {
						break
					}
					if r, _ = s.Run(t.Context(), r.Epoch.Number); r.State == at {
						break
					}
				}
			} else {
				_, err = s.Settle(t.Context())
			}
			if !errors.Is(err, errCrash) {
				t.Fatalf("run did not stop at %s: %v", at, err)
			}
			_ = s.Close()
			e.h.RestartHub(t)

			s2 := e.settlement(nil)
			if err := s2.Poll(t.Context()); err != nil {
				t.Fatal(err)
			}
			r := e.confirm(s2, 1)
			if len(r.Txs) != 1 {
				t.Fatalf("%d batch transactions", len(r.Txs))
			}
			txid := hubtest.RunTxids(t, r)[0]
			if before.State == settlement.RunSigned || before.State == settlement.RunBroadcast ||
				before.State == settlement.RunConfirmed {
				if hubtest.RunTxids(t, before)[0] != txid {
					t.Errorf("batch rebuilt after a crash at %s", at)
				}
			}
			tx := e.chainTx(txid)
			for _, op := range chans {
				if hubtest.IndexOfInput(tx, op) < 0 {
					t.Errorf("channel %v not settled by the batch", op)
				}
				rec, err := e.h.Store().Channel(t.Context(), op)
				if err != nil {
					t.Fatal(err)
				}
				if rec.Status != hub.ChannelClosed || rec.CloseTx == nil || *rec.CloseTx != txid {
					t.Errorf("channel %v: %s closed by %v", op, rec.Status, rec.CloseTx)
				}
			}
			// Each device has exactly one ready channel, the batch's.
			for _, id := range []string{"online", "offline"} {
				recs, _ := e.h.Store().ChannelsByDevice(t.Context(), id)
				ready := 0
				for _, rec := range recs {
					if rec.Status == hub.ChannelReady {
						ready++
						if rec.Funding.Hash != txid {
							t.Errorf("%s's channel %v is not the batch's", id, rec.Funding)
						}
					}
				}
				if ready != 1 {
					t.Errorf("%s has %d ready channels", id, ready)
				}
			}
			if got, _ := valueTo(tx, e.payouts["prov"]); got != 9_500 {
				t.Errorf("provider paid %d sat, want 9500", got)
			}
			// Epoch 2 exists and is open; nothing else was cut.
			if eps, _ := e.h.Store().Epochs(t.Context(), 10); len(eps) != 2 {
				t.Errorf("%d epochs", len(eps))
			}
			if len(e.reuse) > 0 {
				t.Errorf("nonces reused: %v", e.reuse)
			}
		})
	}
}

// TestSettleReorg invalidates the block that confirmed the batch: the run
// goes back to broadcast, the same transaction is mined again, and nothing
// is paid twice.
func TestSettleReorg(t *testing.T) {
	e, chans := crashEpoch(t)
	s := e.settlement(nil)
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = e.confirm(s, r.Epoch.Number)
	txid := hubtest.RunTxids(t, r)[0]
	info, err := e.h.Chain().GetTx(t.Context(), txid)
	if err != nil || info.BlockHash == nil {
		t.Fatalf("batch not in a block: %v", err)
	}
	if err := e.h.Node().Client().InvalidateBlock(info.BlockHash); err != nil {
		t.Fatal(err)
	}
	if err := s.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r, _ = s.Run(t.Context(), 1); r.State != settlement.RunBroadcast {
		t.Fatalf("after the reorg the run is %s, want broadcast", r.State)
	}
	r = e.confirm(s, 1)
	if got := hubtest.RunTxids(t, r)[0]; got != txid {
		t.Fatalf("txid changed: %v → %v", txid, got)
	}
	tx := e.chainTx(txid)
	for _, op := range chans {
		if hubtest.IndexOfInput(tx, op) < 0 {
			t.Errorf("channel %v not in the re-mined batch", op)
		}
	}
	runs, _ := e.h.Store().Runs(t.Context(), 10)
	if len(runs) != 1 || runs[0].Attempt != 1 {
		t.Errorf("runs after the reorg: %d (attempt %d)", len(runs), runs[0].Attempt)
	}
}

// TestSettleCPFP bumps a broadcast batch with a child spending its revenue
// output. Regtest mines every relayable transaction, so the batch is made
// "stuck" by a negative CPFPAfter (bump at the first check) rather than by a low fee; the
// check is that the child is valid, mined with the batch, and the batch
// txid is unchanged.
func TestSettleCPFP(t *testing.T) {
	e, chans := crashEpoch(t)
	// Enough hub revenue to pay a child at 10 sat/vB for both.
	e.pay(chans[0], "online", "prov", 20_000_000)
	e.fee("prov", "online", chans[0], 15_000_000)
	s := e.settlement(func(c *settler.Config) { c.CPFPAfter = -1 })
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	txid := hubtest.RunTxids(t, r)[0]
	if err := s.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	child, ok := s.Bumped(txid)
	if !ok {
		t.Fatal("no CPFP child sent")
	}
	r = e.confirm(s, 1)
	tx := e.chainTx(txid)
	for i, o := range tx.TxOut {
		if string(o.PkScript) != string(e.revenue) {
			continue
		}
		if _, err := e.h.Chain().TxOut(t.Context(), btcwire.OutPoint{Hash: txid, Index: uint32(i)}, false); err == nil {
			t.Error("revenue output unspent: the child did not confirm")
		}
	}
	if hubtest.RunTxids(t, r)[0] != txid {
		t.Error("batch txid changed")
	}
	ctx := e.chainTx(child)
	if ctx.TxIn[0].PreviousOutPoint.Hash != txid {
		t.Errorf("child spends %v", ctx.TxIn[0].PreviousOutPoint)
	}
}
