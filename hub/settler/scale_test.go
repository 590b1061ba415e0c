package settler_test

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcutil"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
)

// TestSettleScale settles 950 channels, funded by one transaction,
// cooperatively in ONE standard transaction, then 300 of them by claim
// with their devices offline, and measures both batches as confirmed on
// chain. It takes about 10 s on 2 cores (the whole hub package stays near
// one minute), so it runs in every test run rather than behind a flag.
func TestSettleScale(t *testing.T) {
	settleScale(t, 950, 300)
}

// openMany funds one channel of capacity for each device in ONE funding
// transaction (Wallet.SendMany) and stores their records as ready, as the
// channel manager's open flow would once the funding confirmed.
func (e *settleEnv) openMany(ids []string, capacity btcutil.Amount) []btcwire.OutPoint {
	t, ctx := e.t, e.t.Context()
	expiry := e.h.Height(t) + 1000
	pids := make([][32]byte, len(ids))
	outs := make([]*channel.Output, len(ids))
	txOuts := make([]*btcwire.TxOut, len(ids))
	for i, id := range ids {
		_, _ = rand.Read(pids[i][:])
		dev := e.keys[id].PubKey()
		hubKey, err := channel.HubChannelPubKey(e.h.PubKey(), channel.ChannelKeyTweak(dev, pids[i]))
		if err != nil {
			t.Fatal(err)
		}
		outs[i], err = channel.NewOutput(channel.Params{DeviceKey: dev, HubKey: hubKey, Capacity: capacity, Expiry: expiry})
		if err != nil {
			t.Fatal(err)
		}
		txOuts[i] = outs[i].TxOut()
	}
	txid, err := e.h.Wallet().SendMany(ctx, txOuts)
	if err != nil {
		t.Fatal(err)
	}
	e.h.Mine(t, 1)
	info, err := e.h.Chain().GetTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	if info.Confirmations < 1 || len(info.Tx.TxOut) < len(ids) {
		t.Fatalf("funding %v: %d confirmations, %d outputs", txid, info.Confirmations, len(info.Tx.TxOut))
	}
	ops := make([]btcwire.OutPoint, len(ids))
	now := time.Now().UTC()
	for i, id := range ids {
		// SendMany keeps the order: output i funds channel i.
		ops[i] = btcwire.OutPoint{Hash: txid, Index: uint32(i)}
		if info.Tx.TxOut[i].Value != int64(capacity) {
			t.Fatalf("funding output %d pays %d sat", i, info.Tx.TxOut[i].Value)
		}
		err := e.h.Store().PutChannel(ctx, hub.ChannelRecord{
			PendingID: pids[i], DeviceID: id, DeviceKey: hub.PubKeyOf(outs[i].Params().DeviceKey),
			HubKey: hub.PubKeyOf(outs[i].Params().HubKey), Capacity: capacity, Expiry: expiry,
			Status: hub.ChannelReady, Funding: ops[i], MinDepth: 1, CreatedAt: now, UpdatedAt: now,
		})
		if err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		e.outs[ops[i]] = outs[i]
		e.mu.Unlock()
	}
	return ops
}

// fees records, in one store call, a paid charge of fee (the hub's part)
// for each channel.
func (e *settleEnv) fees(provider string, ids []string, ops []btcwire.OutPoint, fee msat.Amount) {
	now := time.Now()
	charges := make([]hub.Charge, len(ids))
	for i := range ids {
		var ev [8]byte
		_, _ = rand.Read(ev[:])
		charges[i] = hub.Charge{
			Provider: provider, EventID: fmt.Sprintf("ev-%x", ev), Payer: ids[i], Amount: fee, Fee: fee,
			Channel: ops[i], Status: hub.ChargePaid, EventTime: now, Charged: now,
		}
	}
	if _, err := e.h.Store().RecordCharges(e.t.Context(), charges, 1<<40); err != nil {
		e.t.Fatal(err)
	}
}

// batchWeights splits a transaction's weight into its channel pairs
// (input i and output i for i < pairs) and the rest: the fixed part,
// payouts, revenue and anchor.
func batchWeights(tx *btcwire.MsgTx, pairs int) (total int, pairWeights []int) {
	total = int(blockchain.GetTransactionWeight(btcutil.NewTx(tx)))
	pairWeights = make([]int, pairs)
	for i := range pairs {
		in := tx.TxIn[i]
		nonWitness := 32 + 4 + btcwire.VarIntSerializeSize(uint64(len(in.SignatureScript))) +
			len(in.SignatureScript) + 4
		pairWeights[i] = 4*nonWitness + in.Witness.SerializeSize() + 4*tx.TxOut[i].SerializeSize()
	}
	return total, pairWeights
}

// scaleFigures are one confirmed batch's on-chain figures.
type scaleFigures struct {
	channels int
	weight   int
	pairs    int // weight of all channel pairs
}

func (f scaleFigures) String() string {
	return fmt.Sprintf("%d channels: %d WU (%.2f vB), raw %.2f vB/channel, marginal %.2f vB/channel, overhead %d WU",
		f.channels, f.weight, float64(f.weight)/4, float64(f.weight)/4/float64(f.channels),
		float64(f.pairs)/4/float64(f.channels), f.weight-f.pairs)
}

// settleBatch settles the open epoch, waits for its confirmation and
// checks that it is one transaction spending exactly chans, each with the
// witness of mode and the exact weight the planner counts for it.
func (e *settleEnv) settleBatch(s *settler.Service, chans []btcwire.OutPoint, mode settlement.Mode) (*btcwire.MsgTx, scaleFigures) {
	t := e.t
	start := time.Now()
	r, err := s.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	signed := time.Since(start)
	if r.State != settlement.RunBroadcast || len(r.Txs) != 1 {
		t.Fatalf("run %s with %d txs, want one broadcast transaction", r.State, len(r.Txs))
	}
	r = e.confirm(s, r.Epoch.Number)
	tx := e.chainTx(hubtest.RunTxids(t, r)[0])
	t.Logf("%s epoch %d: settled (plan, round, sign, broadcast) in %v", mode, r.Epoch.Number, signed.Round(time.Millisecond))

	wantWit, wantPair := 1, settlement.CoopInputWeight+settlement.P2TROutputWeight
	if mode == settlement.ModeClaim {
		wantWit, wantPair = 4, settlement.ClaimInputWeight+settlement.P2TROutputWeight
	}
	if len(tx.TxIn) != len(chans) {
		t.Fatalf("batch spends %d inputs, want %d channels", len(tx.TxIn), len(chans))
	}
	for _, op := range chans {
		i := hubtest.IndexOfInput(tx, op)
		if i < 0 {
			t.Fatalf("channel %v not in the batch", op)
		}
		if n := len(tx.TxIn[i].Witness); n != wantWit {
			t.Fatalf("channel %v settled with a %d-element witness, want %d (%s)", op, n, wantWit, mode)
		}
	}
	total, pairs := batchWeights(tx, len(chans))
	f := scaleFigures{channels: len(chans), weight: total}
	for i, w := range pairs {
		if w != wantPair {
			t.Errorf("pair %d weighs %d WU, want %d", i, w, wantPair)
		}
		f.pairs += w
	}
	if total > settlement.MaxStandardWeight {
		t.Errorf("batch weighs %d WU, over the standard %d", total, settlement.MaxStandardWeight)
	}
	if _, _, err := settlement.FindAnchor(tx); err != nil {
		t.Errorf("anchor: %v", err)
	}
	return tx, f
}

// settleScale opens nCoop channels in one funding transaction, makes each
// pay, settles them all cooperatively in one batch, then makes the first
// nClaim pay again on their next channels with every device offline and
// settles those by claim. Both batches are read back confirmed and
// measured.
func settleScale(t *testing.T, nCoop, nClaim int) {
	e := newSettleEnv(t)
	const provider = "scale-provider"
	e.payouts[provider] = hubtest.P2TR(t)
	ids := make([]string, nCoop)
	for i := range ids {
		ids[i] = e.device(fmt.Sprintf("dev-%04d", i), true)
	}

	start := time.Now()
	ops := e.openMany(ids, 100_000)
	t.Logf("%d channels funded in one transaction in %v", nCoop, time.Since(start).Round(time.Millisecond))

	// Epoch 1: each pays 20,000 sat and a few msat; 1,000 sat of it is
	// the hub's fee, which pays the batch's fee.
	start = time.Now()
	for i, id := range ids {
		e.pay(ops[i], id, provider, msat.Amount(20_000_000+i))
	}
	e.fees(provider, ids, ops, 1_000_000)
	t.Logf("%d payments stored in %v", nCoop, time.Since(start).Round(time.Millisecond))

	s := e.settlement(func(c *settler.Config) { c.RoundTimeout = 30 * time.Second })
	tx, coop := e.settleBatch(s, ops, settlement.ModeCooperative)
	t.Logf("cooperative: %v", coop)
	for i, op := range ops {
		j := hubtest.IndexOfInput(tx, op)
		if got := tx.TxOut[j].Value; got != 100_000-20_000 {
			t.Fatalf("next channel of %s: %d sat, want 80,000", ids[i], got)
		}
	}
	earned := int64(nCoop) * 19_000 // 20,000 sat − 1,000 sat fee each, plus Σ i msat < 1 sat·n
	if got, ok := valueTo(tx, e.payouts[provider]); !ok || got < earned || got > earned+int64(nCoop) {
		t.Errorf("provider payout %d sat, want %d (+ under %d)", got, earned, nCoop)
	}
	// The design's figure: at most 101 vB per channel, fixed part
	// included, once the batch is large enough to spread it.
	if marginal := float64(coop.pairs) / 4 / float64(nCoop); marginal > 101 {
		t.Errorf("cooperative marginal %.2f vB per channel, over 101", marginal)
	}
	if raw := float64(coop.weight) / 4 / float64(nCoop); nCoop >= 950 && raw > 101 {
		t.Errorf("cooperative %.2f vB per channel with the fixed part, over 101", raw)
	}
	if len(e.reuse) > 0 {
		t.Fatalf("nonces reused: %v", e.reuse)
	}

	// Epoch 2: the first nClaim devices pay on their next channels, then
	// every device goes offline; the hub settles those by claim and
	// leaves the rest (nothing to settle) alone.
	e.mu.Lock()
	next := make([]btcwire.OutPoint, nClaim)
	for i := range nClaim {
		d, ok := e.done[ids[i]]
		if !ok || d.Old != ops[i] || d.Next.Hash != tx.TxHash() {
			e.mu.Unlock()
			t.Fatalf("device %s was not told of its next channel (%+v)", ids[i], d)
		}
		next[i] = d.Next
	}
	for _, id := range ids {
		e.online[id] = false
	}
	e.mu.Unlock()
	for i := range nClaim {
		e.pay(next[i], ids[i], provider, 10_000_000)
	}
	e.fees(provider, ids[:nClaim], next, 1_000_000)
	tx2, claim := e.settleBatch(s, next, settlement.ModeClaim)
	t.Logf("claim: %v", claim)
	for _, op := range next {
		if got := tx2.TxOut[hubtest.IndexOfInput(tx2, op)].Value; got != 80_000-10_000 {
			t.Fatalf("claimed channel %v: next %d sat, want 70,000", op, got)
		}
	}
	if marginal := float64(claim.pairs) / 4 / float64(nClaim); marginal > 151 {
		t.Errorf("claim marginal %.2f vB per channel, over 151", marginal)
	}
}
