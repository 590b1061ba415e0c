package settler_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// settleEnv is a real hub on a real regtest node, with channels whose
// device keys the test holds: the test is every device.
type settleEnv struct {
	t       *testing.T
	h       *hubtest.Hub
	revKey  *btcec.PrivateKey
	revenue []byte

	mu      sync.Mutex
	keys    map[string]*btcec.PrivateKey         // device id → key
	outs    map[btcwire.OutPoint]*channel.Output // channel → output, as the device knows it
	seq     map[btcwire.OutPoint]uint64
	paid    map[btcwire.OutPoint]msat.Amount
	online  map[string]bool
	payouts map[string][]byte
	nonces  map[[66]byte][32]byte // every nonce seen (hub's and devices') → message
	reuse   []string
	done    map[string]settler.Done
	earned  map[btcwire.OutPoint]msat.Amount // the Earned of each channel's last Cosign request

	// gate, when set, holds every Cosign until it is closed (or the
	// round's context ends), after telling inRound it started: a round
	// in progress for as long as the test wants.
	gate, inRound chan struct{}
}

func newSettleEnv(t *testing.T) *settleEnv {
	h := hubtest.Start(t, hubtest.Config{})
	rk := hubtest.NewKey(t)
	rev, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(rk.PubKey()))
	if err != nil {
		t.Fatal(err)
	}
	return &settleEnv{
		t: t, h: h, revKey: rk, revenue: rev,
		keys: map[string]*btcec.PrivateKey{}, outs: map[btcwire.OutPoint]*channel.Output{},
		seq: map[btcwire.OutPoint]uint64{}, paid: map[btcwire.OutPoint]msat.Amount{},
		online: map[string]bool{}, payouts: map[string][]byte{}, nonces: map[[66]byte][32]byte{},
		done: map[string]settler.Done{}, earned: map[btcwire.OutPoint]msat.Amount{},
	}
}

// seeNonce records a nonce and the message it signs; a nonce seen with a
// second message is a reuse.
func (e *settleEnv) seeNonce(n [66]byte, msg [32]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.nonces[n]; ok && m != msg {
		e.reuse = append(e.reuse, fmt.Sprintf("%x", n[:8]))
	}
	e.nonces[n] = msg
}

// Online, Cosign and Done make the test the devices' side of the round.
func (e *settleEnv) Online(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.online[id]
}

func (e *settleEnv) Cosign(ctx context.Context, id string, req settler.CosignRequest) (settler.CosignReply, error) {
	e.mu.Lock()
	key, out, gate, inRound := e.keys[id], e.outs[req.Channel], e.gate, e.inRound
	e.earned[req.Channel] = req.Earned
	e.mu.Unlock()
	if gate != nil {
		select {
		case inRound <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return settler.CosignReply{}, ctx.Err()
		}
	}
	if key == nil || out == nil {
		return settler.CosignReply{}, settler.ErrRefused
	}
	// The device's own checks: its outpoint and value, and its next
	// channel with the hub's proposed capacity and an expiry not shorter.
	next := out.Params()
	next.Capacity = btcutil.Amount(req.NextCapacity)
	if req.NextExpiry < next.Expiry {
		return settler.CosignReply{}, settler.ErrRefused
	}
	nextOut, err := channel.NewOutput(next)
	if err != nil {
		return settler.CosignReply{}, settler.ErrRefused
	}
	if err := settlement.VerifyOwnOutput(req.Template, 0, req.Channel, req.NextCapacity, nextOut.PkScript()); err != nil {
		return settler.CosignReply{}, fmt.Errorf("%w: %v", settler.ErrRefused, err)
	}
	if len(req.Template.TxIn) != 1 || len(req.Template.TxOut) != 1 {
		return settler.CosignReply{}, settler.ErrRefused
	}
	fetcher := txscript.NewCannedPrevOutputFetcher(out.PkScript(), int64(out.Params().Capacity))
	msg, err := channel.KeySpendSigHash(req.Template, 0, fetcher, nil, settlement.CoopHashType)
	if err != nil {
		return settler.CosignReply{}, err
	}
	sess, err := out.NewKeySession(key)
	if err != nil {
		return settler.CosignReply{}, err
	}
	e.seeNonce(sess.PublicNonce(), msg)
	psig, err := sess.Sign(msg, req.HubNonce)
	if err != nil {
		return settler.CosignReply{}, err
	}
	rep := settler.CosignReply{DeviceNonce: sess.PublicNonce()}
	psig.S.PutBytes(&rep.PartialSig)
	return rep, nil
}

func (e *settleEnv) Done(_ context.Context, id string, d settler.Done) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.done[id] = d
	// The device switches to its next channel.
	if out := e.outs[d.Old]; out != nil {
		p := out.Params()
		p.Capacity, p.Expiry = btcutil.Amount(d.NextCapacity), d.NextExpiry
		if no, err := channel.NewOutput(p); err == nil {
			e.outs[d.Next] = no
		}
	}
}

func (e *settleEnv) PayoutScript(_ context.Context, id string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.payouts[id], nil
}

// settlement builds a settler.Service on the hub's current run.
func (e *settleEnv) settlement(mod func(*settler.Config)) *settler.Service {
	cfg := settler.Config{
		Store: e.h.Store(), Channels: e.h.Channels(), Chain: btcdchain.HubChain{Client: e.h.Chain()}, Cosigners: e, Payouts: e,
		RevenueScript: e.revenue, RevenueKey: e.revKey, FeeRate: 2000, RoundTimeout: 5 * time.Second,
		Confirmations: 2, CPFPAfter: 1000, Logger: e.h.Logger(),
		NonceObserver: func(u settler.NonceUse) { e.seeNonce(u.Nonce, u.Msg) },
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := settler.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

// device registers a device key (no registry entry is needed by the
// settlement; channels are put straight into the store).
func (e *settleEnv) device(name string, online bool) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.keys[name] = hubtest.NewKey(e.t)
	e.online[name] = online
	return name
}

// openChannel funds a channel of capacity on chain from the faucet and
// stores its record as ready.
func (e *settleEnv) openChannel(id string, capacity btcutil.Amount) btcwire.OutPoint {
	return e.openChannelAt(id, capacity, e.h.Height(e.t)+1000)
}

// openChannelAt is openChannel with the expiry height given.
func (e *settleEnv) openChannelAt(id string, capacity btcutil.Amount, expiry uint32) btcwire.OutPoint {
	t, ctx := e.t, e.t.Context()
	var pid [32]byte
	_, _ = rand.Read(pid[:])
	dev := e.keys[id].PubKey()
	hubKey, err := channel.HubChannelPubKey(e.h.PubKey(), channel.ChannelKeyTweak(dev, pid))
	if err != nil {
		t.Fatal(err)
	}
	out, err := channel.NewOutput(channel.Params{DeviceKey: dev, HubKey: hubKey, Capacity: capacity, Expiry: expiry})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := out.Address(e.h.Params())
	if err != nil {
		t.Fatal(err)
	}
	txid, err := e.h.Wallet().Send(ctx, addr, capacity)
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.h.Chain().GetTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	op := btcwire.OutPoint{Hash: txid}
	for i, o := range info.Tx.TxOut {
		if bytes.Equal(o.PkScript, out.PkScript()) {
			op.Index = uint32(i)
		}
	}
	now := time.Now().UTC()
	err = e.h.Store().PutChannel(ctx, hub.ChannelRecord{
		PendingID: pid, DeviceID: id, DeviceKey: hub.PubKeyOf(dev), HubKey: hub.PubKeyOf(hubKey),
		Capacity: capacity, Expiry: expiry, Status: hub.ChannelReady, Funding: op, MinDepth: 1,
		CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.outs[op] = out
	e.mu.Unlock()
	return op
}

// pay makes a device-signed payment of amount from channel op to payee,
// stored with its hub-signed receipt, as Channels.Pay would.
func (e *settleEnv) pay(op btcwire.OutPoint, payer, payee string, amount msat.Amount) {
	t := e.t
	e.mu.Lock()
	out, key := e.outs[op], e.keys[payer]
	e.seq[op]++
	e.paid[op] += amount
	st := channel.State{ChannelID: op, Seq: e.seq[op], Paid: e.paid[op]}
	e.mu.Unlock()
	sig, err := out.SignClaim(key, st)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := channel.Receipt{Channel: op, Seq: st.Seq, Payer: payer, Payee: payee, Amount: amount, Paid: st.Paid,
		Time: now, HubKey: [33]byte(e.h.PubKey().SerializeCompressed())}
	if err := r.Sign(e.h.Key()); err != nil {
		t.Fatal(err)
	}
	raw, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var ds [64]byte
	copy(ds[:], sig.Serialize())
	if _, err := e.h.Store().ApplyPayment(t.Context(), hub.PaymentUpdate{
		Channel: op, Seq: st.Seq, Paid: st.Paid, DeviceSig: ds, Amount: amount, Receipt: raw, Time: now,
	}); err != nil {
		t.Fatal(err)
	}
}

// fee records a paid charge whose hub fee is fee.
func (e *settleEnv) fee(provider, payer string, op btcwire.OutPoint, fee msat.Amount) {
	now := time.Now()
	var id [8]byte
	_, _ = rand.Read(id[:])
	_, err := e.h.Store().RecordCharges(e.t.Context(), []hub.Charge{{
		Provider: provider, EventID: fmt.Sprintf("ev-%x", id), Payer: payer, Amount: fee, Fee: fee,
		Channel: op, Status: hub.ChargePaid, EventTime: now, Charged: now,
	}}, 1<<40)
	if err != nil {
		e.t.Fatal(err)
	}
}

// confirm mines and polls until the epoch's run is confirmed.
func (e *settleEnv) confirm(s *settler.Service, epoch uint64) settlement.Run {
	t := e.t
	for range 20 {
		e.h.Mine(t, 1)
		if err := s.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		r, err := s.Run(t.Context(), epoch)
		if err != nil {
			t.Fatal(err)
		}
		if r.State == settlement.RunConfirmed {
			return r
		}
	}
	t.Fatalf("epoch %d not confirmed", epoch)
	return settlement.Run{}
}

// chainTx reads a confirmed transaction back from the node.
func (e *settleEnv) chainTx(txid chainhash.Hash) *btcwire.MsgTx {
	info, err := e.h.Chain().GetTx(e.t.Context(), txid)
	if err != nil {
		e.t.Fatal(err)
	}
	if info.Confirmations < 1 {
		e.t.Fatalf("tx %v has %d confirmations", txid, info.Confirmations)
	}
	return info.Tx
}

// outputOf returns the value the batch tx pays to the input spending op,
// or to script.
func valueTo(tx *btcwire.MsgTx, script []byte) (int64, bool) {
	for _, o := range tx.TxOut {
		if bytes.Equal(o.PkScript, script) {
			return o.Value, true
		}
	}
	return 0, false
}

var errCrash = errors.New("simulated crash")
