package settlement

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
)

// bigInput returns a plan input of n channels, every claimEvery-th absent
// (0: none), each paying 10,000 sat. Outputs come from a pool of 64
// distinct channels, each funded at n distinct outpoints, so building the
// input costs little.
func bigInput(tb testing.TB, n, claimEvery int) (PlanInput, []party) {
	tb.Helper()
	pool := make([]party, 64)
	for i := range pool {
		pool[i] = mustParty(tb, fmt.Sprintf("dev-%d", i), 500_000, 900_000)
	}
	in := PlanInput{RevenueScript: p2tr(tb, "hub-revenue"), FeeRate: 2000, Height: 800_000, ExpiryMargin: 144}
	parties := make([]party, n)
	for i := range n {
		p := pool[i%len(pool)]
		p.funding = wire.OutPoint{Hash: chainhash.HashH([]byte(fmt.Sprint("funding-", i))), Index: uint32(i % 3)}
		parties[i] = p
		c := ChannelInput{Participant: fmt.Sprint("p", i), Output: p.out, Funding: p.funding, Net: -10_000_000, Cooperative: true}
		if claimEvery > 0 && i%claimEvery == 0 {
			c.Cooperative = false
			c.Claim = p.claim(tb, 1, msat.Amount(10_000_000))
		}
		in.Channels = append(in.Channels, c)
	}
	return in, parties
}

// dummySign gives every input a witness of its real size: a 65-byte
// key-path signature, or the claim witness with two 65-byte signatures.
func dummySign(t *PlannedTx) {
	sig := make([]byte, 65)
	for i, c := range t.Channels {
		if c.Mode == ModeCooperative {
			t.Tx.TxIn[i].Witness = wire.TxWitness{sig}
			continue
		}
		t.Tx.TxIn[i].Witness = wire.TxWitness{sig, sig, c.Output.ClaimLeaf().Script, c.Output.ClaimControlBlock()}
	}
}

// pairWeight is the measured weight of channel pair i.
func pairWeight(t *PlannedTx, i int) int {
	in := t.Tx.TxIn[i]
	return 4*(36+1+4) + in.Witness.SerializeSize() + 4*t.Tx.TxOut[i].SerializeSize()
}

// TestCapacity checks, on dummy-signed transactions of the real size, how
// many channels one standard transaction holds, the weight per channel, and
// that larger batches split with every transaction under the limit.
func TestCapacity(t *testing.T) {
	for _, c := range []struct {
		name       string
		n, claimEv int
		wantPerTx  int
		wantVB     float64
	}{
		{"Cooperative", 991, 0, 991, 100.75},
		{"Claim", 661, 1, 661, 151},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, _ := bigInput(t, c.n+1, c.claimEv)
			plan, err := in.Plan()
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Txs) != 2 || len(plan.Txs[0].Channels) != c.wantPerTx || len(plan.Txs[1].Channels) != 1 {
				t.Fatalf("%d channels: %d txs, first holds %d", c.n+1, len(plan.Txs), len(plan.Txs[0].Channels))
			}
			tx := plan.Txs[0]
			dummySign(tx)
			if w := weight(tx.Tx); w != tx.Weight || w > MaxStandardWeight {
				t.Fatalf("signed weight %d, planned %d", w, tx.Weight)
			}
			total := 0
			for i := range tx.Channels {
				total += pairWeight(tx, i)
			}
			vb := float64(total) / 4 / float64(len(tx.Channels))
			t.Logf("%s: %d channels per standard tx, %.2f vB per channel, tx %d WU", c.name, len(tx.Channels), vb, tx.Weight)
			if c.claimEv == 0 && len(tx.Channels) < 950 {
				t.Fatalf("only %d cooperative channels per standard transaction", len(tx.Channels))
			}
			if vb != c.wantVB {
				t.Fatalf("%.2f vB per channel, want %.2f", vb, c.wantVB)
			}
		})
	}

	t.Run("Split", func(t *testing.T) {
		in, _ := bigInput(t, 2_500, 7)
		plan, err := in.Plan()
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Txs) != 3 {
			t.Fatalf("%d txs", len(plan.Txs))
		}
		channels := 0
		seen := make(map[wire.OutPoint]bool)
		for _, tx := range plan.Txs {
			dummySign(tx)
			if w := weight(tx.Tx); w != tx.Weight || w > MaxStandardWeight {
				t.Fatalf("weight %d, planned %d", w, tx.Weight)
			}
			var inSum, outSum int64
			for _, txIn := range tx.Tx.TxIn {
				if seen[txIn.PreviousOutPoint] {
					t.Fatalf("%v spent twice", txIn.PreviousOutPoint)
				}
				seen[txIn.PreviousOutPoint] = true
				inSum += tx.PrevOuts().FetchPrevOutput(txIn.PreviousOutPoint).Value
			}
			for _, o := range tx.Tx.TxOut {
				outSum += o.Value
			}
			if inSum != outSum+int64(tx.Fee) || tx.RevenueIndex < 0 || tx.AnchorIndex != len(tx.Tx.TxOut)-1 {
				t.Fatalf("in %d out %d fee %d revenue at %d", inSum, outSum, tx.Fee, tx.RevenueIndex)
			}
			channels += len(tx.Channels)
		}
		if channels != 2_500 || len(plan.Settled) != 2_500 {
			t.Fatalf("%d channels settled", channels)
		}
	})
}

// BenchmarkPlan10000 plans a 10,000-channel epoch, one in ten absent.
func BenchmarkPlan10000(b *testing.B) {
	in, _ := bigInput(b, 10_000, 10)
	b.ResetTimer()
	for b.Loop() {
		if _, err := in.Plan(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignCooperative10000 is the hub's side of the cooperative round
// for 10,000 channels: a fresh MuSig2 nonce, the sighash and the partial
// signature per channel, spread over every core. The devices' public
// nonces are made beforehand (that is the devices' work).
func BenchmarkSignCooperative10000(b *testing.B) {
	in, parties := bigInput(b, 10_000, 0)
	plan, err := in.Plan()
	if err != nil {
		b.Fatal(err)
	}
	type job struct {
		tx    *PlannedTx
		i     int
		p     party
		nonce [musig2.PubNonceSize]byte
	}
	var jobs []job
	k := 0
	for _, tx := range plan.Txs {
		for i := range tx.Channels {
			dev, err := parties[k].out.NewKeySession(parties[k].device)
			if err != nil {
				b.Fatal(err)
			}
			jobs = append(jobs, job{tx, i, parties[k], dev.PublicNonce()})
			k++
		}
	}
	workers := runtime.GOMAXPROCS(0)
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := w; j < len(jobs); j += workers {
					jb := jobs[j]
					s, err := jb.p.out.NewKeySession(jb.p.hub)
					if err != nil {
						errs <- err
						return
					}
					h, err := jb.tx.CoopSigHash(jb.i)
					if err != nil {
						errs <- err
						return
					}
					if _, err := s.Sign(h, jb.nonce); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}
