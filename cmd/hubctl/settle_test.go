package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/settlement"
)

const testToken = "0123456789abcdef0123456789abcdef"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeSettlement is a test-only stand-in for the hub's settlement service
// behind the real admin API: fixed epochs, a hand-made plan, a run whose
// state advances each time it is read, and proofs over a real Merkle tree.
type fakeSettlement struct {
	mu       sync.Mutex
	epochs   []settlement.Epoch
	runs     map[uint64]settlement.Run
	advance  []settlement.RunState // states the started run moves through, one per read
	preview  settlement.Run
	plan     *settlement.Plan
	receipts map[[32]byte]int
	list     []*channel.Receipt
	tree     *settlement.MerkleTree
	// leafOffset makes ReceiptProof answer with another leaf's path.
	leafOffset int
}

func (f *fakeSettlement) Preview(context.Context) (settlement.Run, *settlement.Plan, error) {
	return f.preview, f.plan, nil
}

func (f *fakeSettlement) Begin(context.Context) (settlement.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.preview
	f.runs[r.Epoch.Number] = r
	return r, nil
}

func (f *fakeSettlement) Run(_ context.Context, epoch uint64) (settlement.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.runs[epoch]
	if !ok {
		return settlement.Run{}, fmt.Errorf("%w: epoch %d", hub.ErrNotFound, epoch)
	}
	if r.State != settlement.RunConfirmed && len(f.advance) > 0 {
		// Each read sees the next state, some reads twice, as a
		// poller would.
		next := f.advance[0]
		f.advance = f.advance[1:]
		if next != r.State {
			if err := r.Transition(next, r.Updated.Add(time.Second)); err != nil {
				return settlement.Run{}, err
			}
		}
		if next == settlement.RunConfirmed {
			r.ConfirmHeight = 140
		}
		f.runs[epoch] = r
	}
	return r, nil
}

func (f *fakeSettlement) Runs(_ context.Context, limit int) ([]settlement.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
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
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.receipts[id]
	if !ok {
		return nil, settlement.Proof{}, settlement.Run{}, fmt.Errorf("%w: receipt", hub.ErrNotFound)
	}
	p, err := f.tree.Proof((i + f.leafOffset) % f.tree.Len())
	return f.list[i], p, f.runs[1], err
}

func hubTestKey() *btcec.PrivateKey {
	var seed [32]byte
	seed[0], seed[31] = 1, 42
	k, _ := btcec.PrivKeyFromBytes(seed[:])
	return k
}

// newFakeSettlement has epoch 1 cut at height 112 (its run in state
// planned until a test broadcasts it) over receipts signed by hubTestKey,
// and epoch 2 open with a preview.
func newFakeSettlement(tb testing.TB, receipts int) *fakeSettlement {
	tb.Helper()
	f := &fakeSettlement{runs: map[uint64]settlement.Run{}, receipts: map[[32]byte]int{}}
	var ids [][32]byte
	for i := range receipts {
		r := &channel.Receipt{
			Channel: wire.OutPoint{Hash: chainhash.Hash{byte(i + 1)}}, Seq: uint64(i + 1),
			Payer: fmt.Sprintf("car-%d", i), Payee: "gantry-7", Amount: 2_000, Paid: msat.Amount(2_000 * (i + 1)),
			Time: t0.Add(time.Duration(i) * time.Minute),
		}
		if err := r.Sign(hubTestKey()); err != nil {
			tb.Fatal(err)
		}
		f.receipts[r.ID()] = i
		f.list = append(f.list, r)
		ids = append(ids, r.ID())
	}
	f.tree = settlement.NewMerkleTree(ids)
	e1, e2, err := settlement.FirstEpoch(t0, 100).Cut(t0.Add(time.Hour), 112)
	if err != nil {
		tb.Fatal(err)
	}
	f.epochs = []settlement.Epoch{e2, e1}
	run := settlement.NewRun(e1, 1, t0.Add(time.Hour))
	run.Anchor = settlement.Anchor{ReceiptsRoot: f.tree.Root(), AuditHead: [32]byte{0xa5}}
	f.runs[1] = *run

	f.preview = *settlement.NewRun(e2, 1, t0.Add(2*time.Hour))
	f.preview.Anchor = settlement.Anchor{ReceiptsRoot: [32]byte{0x77}}
	f.preview.Closing = &settlement.Closing{
		Epoch: 2,
		Nets:  map[string]settlement.Msat{"car-1": -5_000_500, "car-2": -1_000_000, "gantry-7": 5_940_000, "meter-3": 700},
		Settled: map[string]btcutil.Amount{
			"car-1": -5_000, "car-2": -1_000, "gantry-7": 5_940,
		},
		Carried: map[settlement.Account]settlement.Msat{settlement.Payer("car-1"): -500, settlement.Provider("meter-3"): 700},
	}
	f.plan = &settlement.Plan{
		Txs: []*settlement.PlannedTx{{
			Tx: planTx(f.preview.Anchor),
			Channels: []settlement.PlannedChannel{
				{Participant: "car-1", Mode: settlement.ModeCooperative},
				{Participant: "car-2", Mode: settlement.ModeClaim, Index: 1},
			},
			Payouts: []settlement.PlannedPayout{{Participant: "gantry-7", Index: 2, Value: 5_940}},
			Weight:  1_321, Fee: 331, Revenue: 60, AnchorIndex: 1,
		}},
		Settled: f.preview.Closing.Settled,
		Carried: []settlement.Carry{{Participant: "meter-3", Amount: 700, Reason: settlement.CarryLowValue}},
		Fee:     331, Revenue: 60,
	}
	return f
}

func planTx(a settlement.Anchor) *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{2}}, nil, nil))
	tx.AddTxOut(a.TxOut())
	return tx
}

// serve runs the real admin API over a real registry with f as the
// settlement service and returns hubctl's connection flags.
func serve(t *testing.T, f *fakeSettlement) []string {
	t.Helper()
	pub := hex.EncodeToString(hubTestKey().PubKey().SerializeCompressed())
	_, conn := serveAPI(t, func(_ *boltstore.Store, _ *registry.Registry, cfg *httpapi.Config) {
		cfg.Settlement = f
		cfg.Info = func() httpapi.Info { return httpapi.Info{PubKey: pub, Network: "regtest"} }
	})
	return conn
}

func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSettlePlanTable(t *testing.T) {
	f := newFakeSettlement(t, 3)
	conn := serve(t, f)
	code, out, errOut := runCtl(t, append(conn, "settle", "plan")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	txid := f.plan.Txs[0].Tx.TxHash().String()
	want := `Epoch 2, open since 2026-03-01T13:00:00Z (height 112). Dry run: nothing is stored or broadcast.

PARTICIPANT  MODE         NET_MSAT  SETTLED_SAT  CARRIED_MSAT
car-1        cooperative  -5000500  -5000        -500
car-2        claim        -1000000  -1000        0
gantry-7     payout       5940000   5940         0
meter-3      carried      700       0            700

TX  TXID                                                              IN  OUT  COOP  CLAIMS  PAYOUTS  VBYTES  FEE_SAT  REVENUE_SAT
0   ` + txid + `  1   1    1     1       1        331     331      60

CARRIED  AMOUNT_MSAT  REASON     CHANNEL
meter-3  700          low value  -

1 transaction(s), 331 vB, fee 331 sat, hub revenue 60 sat; anchor root 7700000000000000000000000000000000000000000000000000000000000000
`
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

func TestSettleRunFollowsToConfirmed(t *testing.T) {
	f := newFakeSettlement(t, 3)
	f.advance = []settlement.RunState{
		settlement.RunSigning, settlement.RunSigning, settlement.RunSigned,
		settlement.RunBroadcast, settlement.RunBroadcast, settlement.RunConfirmed,
	}
	conn := serve(t, f)
	code, out, errOut := runCtl(t, append(conn, "settle", "run", "--poll", "1ms")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	// One line per state, in order, each once.
	var states []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "epoch" || fields[2] != "2" {
			t.Fatalf("line %q", line)
		}
		states = append(states, fields[5])
	}
	if got := strings.Join(states, " "); got != "planned signing signed broadcast confirmed" {
		t.Fatalf("states %q\n%s", got, out)
	}
	if !strings.Contains(out, "at height 140") {
		t.Fatalf("no confirmation height:\n%s", out)
	}

	t.Run("Failed", func(t *testing.T) {
		f := newFakeSettlement(t, 3)
		f.advance = []settlement.RunState{settlement.RunSigning, settlement.RunFailed}
		conn := serve(t, f)
		code, out, _ := runCtl(t, append(conn, "settle", "run", "--poll", "1ms")...)
		if code != exitFailure || !strings.Contains(out, ": failed") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
	t.Run("NoWait", func(t *testing.T) {
		f := newFakeSettlement(t, 3)
		f.advance = []settlement.RunState{settlement.RunSigning}
		conn := serve(t, f)
		code, out, _ := runCtl(t, append(conn, "settle", "run", "--no-wait")...)
		if code != exitOK || strings.Count(out, "\n") != 1 || len(f.advance) != 1 {
			t.Fatalf("exit %d, %d polls left:\n%s", code, len(f.advance), out)
		}
	})
}

func TestSettleStatusAndEpochsTables(t *testing.T) {
	f := newFakeSettlement(t, 3)
	conn := serve(t, f)
	code, out, errOut := runCtl(t, append(conn, "settle", "status")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `Open epoch 2 since 2026-03-01T13:00:00Z (height 112).

EPOCH  ATTEMPT  STATE    TXIDS  FEE_SAT  SETTLED  CONFIRMED_AT  UPDATED               ERROR
1      1        planned  -      0        0        -             2026-03-01T13:00:00Z  -
`
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}

	code, out, errOut = runCtl(t, append(conn, "epochs")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want = `EPOCH  START                 END                   START_HEIGHT  END_HEIGHT  RUN      TXIDS
2      2026-03-01T13:00:00Z  -                     112           -           open     -
1      2026-03-01T12:00:00Z  2026-03-01T13:00:00Z  100           112         planned  -
`
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}

	code, _, _ = runCtl(t, append(conn, "settle", "status", "--epoch", "7")...)
	if code != exitNotFound {
		t.Fatalf("unknown epoch: exit %d", code)
	}
}

func TestParseReceiptFile(t *testing.T) {
	f := newFakeSettlement(t, 1)
	r := f.list[0]
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(enc)
	for name, in := range map[string][]byte{
		"Binary":         enc,
		"Hex":            []byte(h + "\n"),
		"ProviderNotice": []byte(`{"kind":"receipt","receipt":"` + h + `","events":["e1"]}`),
		"JournalRecord":  []byte(`{"state":{"seq":1},"receipt":"` + h + `"}` + "\n"),
	} {
		got, err := parseReceiptFile(in)
		if err != nil || got.ID() != r.ID() {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"Empty":     nil,
		"NoReceipt": []byte(`{"kind":"unpaid"}`),
		"Truncated": enc[:len(enc)-1],
	} {
		if _, err := parseReceiptFile(in); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
