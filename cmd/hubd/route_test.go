package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/internal/cluster"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
	"github.com/nats-io/nats.go"
)

// routeCluster is two hubd on the harness, a provider connected to
// instance 0 and payers connected each to one instance only, every
// channel opened with both instances up (the channel-ready notice
// reaches the device from whichever instance saw the funding confirm).
type routeCluster struct {
	t      *testing.T
	c      *cluster.Cluster
	hubKey *btcec.PublicKey
	chain  *btcdchain.Client
	store  *redisstore.Store // the shared store, read by the test
	provID string
	prov   *m2mclient.Provider
	payers []*routePayer
}

type routePayer struct {
	id     string
	key    *btcec.PrivateKey
	dir    string
	chanID btcwire.OutPoint
	sess   *m2mclient.Session
	dev    *m2mclient.Device
}

// startRouteCluster opens one channel for a payer on each instance in on.
func startRouteCluster(t *testing.T, on ...int) *routeCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := t.Context()
	c, hk := startHarness(t, 2)
	rc := &routeCluster{t: t, c: c, hubKey: hk, chain: harnessChain(t, c)}
	var err error
	rc.store, err = redisstore.New(redisstore.Config{URL: c.RedisURL(), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.store.Close() })

	var provKey *btcec.PrivateKey
	provKey, rc.provID = enrol(t, c.DataDir(0), "provider")
	ps := rc.dial(provKey, 0)
	rc.prov, err = m2mclient.NewProvider(ps, m2mclient.ProviderConfig{HubKey: hk, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.prov.Close() })

	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: filepath.Join(c.DataDir(0), datadir.WalletKeyFile), Chain: rc.chain, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(ctx context.Context, id chainhash.Hash) (*btcwire.MsgTx, error) {
		info, err := rc.chain.GetTx(ctx, id)
		return info.Tx, err
	}
	for _, i := range on {
		p := &routePayer{dir: t.TempDir()}
		p.key, p.id = enrol(t, c.DataDir(0), "payer")
		rc.connect(p, i)
		height, err := rc.chain.BlockCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stopMining := rc.chain.MineEvery(ctx, 300*time.Millisecond)
		openCtx, cancel := context.WithTimeout(ctx, time.Minute)
		ch, err := p.dev.FundAndOpen(openCtx, wallet, lookup, btcutil.Amount(1_000_000), uint32(height)+500)
		cancel()
		stopMining()
		if err != nil {
			t.Fatalf("payer on instance %d: FundAndOpen: %v\n%s", i, err, rc.logs())
		}
		p.chanID = ch.ID
		rc.payers = append(rc.payers, p)
	}
	return rc
}

// dial connects key to instance i alone, so the session stays there.
func (rc *routeCluster) dial(key *btcec.PrivateKey, i int) *m2mclient.Session {
	rc.t.Helper()
	s, err := m2mclient.Dial(rc.t.Context(), rc.c.Addr(i), rc.hubKey, key,
		m2mclient.WithBackoff(50*time.Millisecond, 200*time.Millisecond),
		m2mclient.WithPingInterval(time.Second), m2mclient.WithDialTimeout(2*time.Second),
		m2mclient.WithLogger(quietLog()))
	if err != nil {
		rc.t.Fatalf("dial instance %d: %v", i, err)
	}
	rc.t.Cleanup(func() { _ = s.Close() })
	return s
}

// connect (re)connects payer p to instance i, with its durable store.
func (rc *routeCluster) connect(p *routePayer, i int) {
	rc.t.Helper()
	if p.dev != nil {
		_ = p.dev.Close()
		_ = p.sess.Close()
	}
	p.sess = rc.dial(p.key, i)
	dev, err := m2mclient.NewDevice(p.sess, m2mclient.DeviceConfig{
		Key: p.key, HubKey: rc.hubKey, Params: &chaincfg.RegressionNetParams, Dir: p.dir, AutoAuthorize: true,
		Policy: m2mclient.Policy{MaxPerPayment: 100_000_000, MaxHold: 1_000_000, AllowedProviders: []string{rc.provID}},
		Logger: quietLog(),
	})
	if err != nil {
		rc.t.Fatal(err)
	}
	p.dev = dev
	rc.t.Cleanup(func() { _ = dev.Close() })
}

func (rc *routeCluster) logs() string {
	return fmt.Sprintf("--- hubd-0 ---\n%s\n--- hubd-1 ---\n%s", rc.c.LogTail(0, 3000), rc.c.LogTail(1, 3000))
}

// waitFor polls cond every 20 ms until it holds or d has passed.
func (rc *routeCluster) waitFor(d time.Duration, what string, cond func() bool) {
	rc.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			rc.t.Fatalf("after %v: %s\n%s", d, what, rc.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receipt waits for the provider's next receipt.
func (rc *routeCluster) receipt(what string) msat.Amount {
	rc.t.Helper()
	select {
	case r := <-rc.prov.Receipts():
		if err := rc.prov.VerifyReceipt(r); err != nil {
			rc.t.Fatalf("%s: receipt: %v", what, err)
		}
		return r.Amount
	case <-time.After(10 * time.Second):
		rc.t.Fatalf("%s: no receipt reached the provider\n%s", what, rc.logs())
		return 0
	}
}

// hold reads a hold from the shared store.
func (rc *routeCluster) hold(id m2mclient.HoldID) hub.Hold {
	rc.t.Helper()
	h, err := rc.store.Hold(rc.t.Context(), id)
	if err != nil {
		rc.t.Fatal(err)
	}
	return h
}

// paid is what the shared store holds as paid on a channel.
func (rc *routeCluster) paid(op btcwire.OutPoint) msat.Amount {
	rc.t.Helper()
	rec, err := rc.store.Channel(rc.t.Context(), op)
	if err != nil {
		rc.t.Fatal(err)
	}
	return rec.Paid
}

// A provider on instance 0 holds, captures and releases against a payer
// whose session is on instance 1: the hold request, the capture and the
// release run on instance 1, the hold result, the receipt and the close
// notice reach the provider on instance 0, and the store and the device
// agree on every msat. A revocation on instance 0 drops the payer's
// session on instance 1.
func TestClusterHoldAcrossInstances(t *testing.T) {
	rc := startRouteCluster(t, 1)
	ctx := t.Context()
	p := rc.payers[0]
	id, err := rc.prov.RequestHold(ctx, p.id, 50_000, time.Hour, "charging session")
	if err != nil {
		t.Fatalf("hold across instances: %v\n%s", err, rc.logs())
	}
	if h := rc.hold(id); h.Status != hub.HoldActive || h.Max != 50_000 || h.DeviceID != p.id {
		t.Fatalf("stored hold %+v", h)
	}
	if err := rc.prov.Capture(ctx, id, 12_345, "first kWh"); err != nil {
		t.Fatal(err)
	}
	if got := rc.receipt("capture"); got != 12_345 {
		t.Fatalf("receipt for %d msat, captured 12345", got)
	}
	if err := rc.prov.Capture(ctx, id, 1_000, "second kWh"); err != nil {
		t.Fatal(err)
	}
	if got := rc.receipt("second capture"); got != 1_000 {
		t.Fatalf("receipt for %d msat, captured 1000", got)
	}
	if err := rc.prov.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	rc.waitFor(10*time.Second, "hold not released", func() bool { return rc.hold(id).Status == hub.HoldReleased })
	if h := rc.hold(id); h.Captured != 13_345 {
		t.Fatalf("released hold captured %d, want 13345", h.Captured)
	}
	// The device hears the close (a notice from instance 1 itself) and
	// frees the reservation; the store and the device agree.
	rc.waitFor(10*time.Second, "device still reserves the hold", func() bool {
		b, err := p.dev.Balance(p.chanID)
		return err == nil && b.Reserved == 0
	})
	b, err := p.dev.Balance(p.chanID)
	if err != nil {
		t.Fatal(err)
	}
	if got := rc.paid(p.chanID); got != 13_345 || b.Paid != got {
		t.Fatalf("store paid %d, device paid %d; captured 13345", got, b.Paid)
	}
	// A capture on the released hold is refused, also across instances.
	if err := rc.prov.Capture(ctx, id, 1, "late"); err != nil {
		t.Fatal(err)
	}
	select {
	case he := <-rc.prov.Errors():
		t.Logf("late capture refused: %v", he)
	case <-time.After(10 * time.Second):
		t.Fatalf("late capture not refused\n%s", rc.logs())
	}
	if got := rc.paid(p.chanID); got != 13_345 {
		t.Fatalf("store paid %d after a refused capture", got)
	}
	// Revoked through instance 0, the payer loses its session on
	// instance 1 at once.
	mustHubctl(t, rc.c.DataDir(0), "device", "revoke", p.id, "--reason", "stolen")
	waitRefused(t, p.sess, "revoked")
}

// Devices on both instances settle in one batch run by whichever instance
// leads: the leader co-signs with the device on the other instance over
// NATS (its input is a key-path spend: a cooperative signature, not a
// claim), both devices hear SettleDone and move to their next channel,
// and the next outputs on chain, the devices and the store agree to the
// satoshi, with the payments to the msat.
func TestClusterRoutedSettlement(t *testing.T) {
	rc := startRouteCluster(t, 0, 1)
	ctx := t.Context()
	amounts := []msat.Amount{21_000_123, 34_000_456}
	for k, p := range rc.payers {
		if _, err := p.dev.Pay(ctx, p.chanID, rc.provID, amounts[k], "before settlement"); err != nil {
			t.Fatalf("payer %d: %v", k, err)
		}
		if got := rc.receipt(fmt.Sprintf("payer %d", k)); got != amounts[k] {
			t.Fatalf("receipt for %d msat, paid %d", got, amounts[k])
		}
	}
	admins := make([]*httpapi.Client, rc.c.Instances())
	for i := range admins {
		token, err := datadir.Dir(rc.c.DataDir(i)).ReadToken(datadir.AdminTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		admins[i] = httpapi.NewClient(rc.c.Hub(i).Runtime().AdminAddr, token)
	}
	stopMining := rc.chain.MineEvery(ctx, 300*time.Millisecond)
	defer stopMining()
	var run httpapi.RunView
	leader := -1
	rc.waitFor(20*time.Second, "no instance started the settlement", func() bool {
		for i, a := range admins {
			v, err := a.Settle(ctx)
			if err == nil {
				run, leader = v, i
				return true
			}
		}
		return false
	})
	rc.waitFor(30*time.Second, "settlement not confirmed", func() bool {
		st, err := admins[leader].SettlementStatus(ctx, run.Epoch.Number, 1)
		if err != nil || len(st.Runs) == 0 {
			return false
		}
		run = st.Runs[0]
		if run.State.Final() || run.State == settlement.RunEmpty {
			t.Fatalf("run ended %s: %s", run.State, run.Error)
		}
		return run.State == settlement.RunConfirmed
	})
	if len(run.Txids) != 1 {
		t.Fatalf("settled in %d transactions, want one batch", len(run.Txids))
	}
	var txid chainhash.Hash
	if err := chainhash.Decode(&txid, run.Txids[0]); err != nil {
		t.Fatal(err)
	}
	info, err := rc.chain.GetTx(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("instance %d led; epoch %d settled by %s", leader, run.Epoch.Number, txid)
	for k, p := range rc.payers {
		i := indexOfInput(info.Tx, p.chanID)
		if i < 0 {
			t.Fatalf("payer %d's channel is not in the batch", k)
		}
		// A key-path spend has one witness element, the aggregate
		// signature; a claim spends the claim leaf (script path).
		if w := info.Tx.TxIn[i].Witness; len(w) != 1 {
			t.Fatalf("payer %d (on instance %d, leader %d) settled by claim (%d witness elements), not co-signed",
				k, k, leader, len(w))
		}
		next := btcwire.OutPoint{Hash: txid, Index: uint32(i)}
		rc.waitFor(20*time.Second, fmt.Sprintf("payer %d did not move to its next channel", k), func() bool {
			return onChannel(p.dev, next)
		})
		rec, err := rc.store.Channel(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.dev.Balance(next)
		if err != nil {
			t.Fatal(err)
		}
		out := info.Tx.TxOut[i].Value
		if rec.Capacity != b.Capacity || int64(b.Capacity) != out {
			t.Fatalf("payer %d next channel: store %d sat, device %d sat, chain %d sat", k, rec.Capacity, b.Capacity, out)
		}
		// What the device paid left its channel: whole satoshis on
		// chain, the sub-satoshi rest carried as credit (Owed).
		paidSat := btcutil.Amount(amounts[k] / 1000)
		if old := btcutil.Amount(1_000_000); rec.Capacity != old-paidSat {
			t.Fatalf("payer %d next capacity %d sat, want %d - %d", k, rec.Capacity, old, paidSat)
		}
		if _, err := p.dev.Pay(ctx, next, rc.provID, 1_000, "after settlement"); err != nil {
			t.Fatalf("payer %d on its next channel: %v", k, err)
		}
		rc.receipt(fmt.Sprintf("payer %d after settlement", k))
	}
}

// A device whose session moves from instance 1 to instance 0 in the
// middle of a hold ends consistent: the capture asked on instance 1 is
// paid there; after the move the next capture runs on instance 0, whose
// cache of the channel is behind instance 1's payments; the release
// finds the captures of both; the store, the device and the receipts
// agree. Then a stale writer across the two processes is refused by the
// store's compare-and-set.
func TestClusterDeviceMoves(t *testing.T) {
	rc := startRouteCluster(t, 1)
	ctx := t.Context()
	p := rc.payers[0]
	id, err := rc.prov.RequestHold(ctx, p.id, 80_000, time.Hour, "session")
	if err != nil {
		t.Fatalf("hold: %v\n%s", err, rc.logs())
	}
	var want msat.Amount
	capture := func(amt msat.Amount, what string) {
		t.Helper()
		if err := rc.prov.Capture(ctx, id, amt, what); err != nil {
			t.Fatal(err)
		}
		if got := rc.receipt(what); got != amt {
			t.Fatalf("%s: receipt for %d msat, captured %d", what, got, amt)
		}
		want += amt
	}
	capture(5_000, "on instance 1")
	// Instance 0 reads the channel once now, so its cache is behind
	// the payments that follow on instance 1.
	if _, err := p.dev.Pay(ctx, p.chanID, rc.provID, 2_000, "plain, on instance 1"); err != nil {
		t.Fatal(err)
	}
	rc.receipt("plain payment")
	want += 2_000
	// The device moves to instance 0 mid-hold.
	rc.connect(p, 0)
	rc.waitFor(10*time.Second, "device not connected to instance 0", p.sess.Connected)
	capture(7_000, "on instance 0 after the move")
	if _, err := p.dev.Pay(ctx, p.chanID, rc.provID, 3_000, "plain, on instance 0"); err != nil {
		t.Fatalf("pay after the move: %v", err)
	}
	rc.receipt("plain payment after the move")
	want += 3_000
	if err := rc.prov.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	rc.waitFor(10*time.Second, "hold not released", func() bool { return rc.hold(id).Status == hub.HoldReleased })
	if h := rc.hold(id); h.Captured != 12_000 {
		t.Fatalf("hold captured %d, want 12000", h.Captured)
	}
	b, err := p.dev.Balance(p.chanID)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := rc.store.Channel(ctx, p.chanID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Paid != want || b.Paid != want || rec.Owed != 0 {
		t.Fatalf("store paid %d owed %d, device paid %d; payments sum to %d", rec.Paid, rec.Owed, b.Paid, want)
	}
	raw, err := rc.store.Receipts(ctx, p.chanID, 1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(raw)) != rec.Seq || rec.Seq != 4 {
		t.Fatalf("%d receipts for seq %d, want 4", len(raw), rec.Seq)
	}

	// A stale writer across processes: the device, on a session to each
	// instance, signs seq 5 twice (as a device restored from an old
	// backup might). Instance 1 takes the first; instance 0, whose cache
	// stands at seq 4, checks the second against it and is refused by
	// the store's compare-and-set, and shows the device the state that
	// won. Nothing is applied twice; the next payment goes on from it.
	_ = p.dev.Close()
	_ = p.sess.Close()
	out := routeOutput(t, rec)
	on0, on1 := rc.rawSession(p.key, 0), rc.rawSession(p.key, 1)
	on1.send(signedPay(t, p.key, out, rec, 5, rec.Paid+1_000, 1_000, rc.provID))
	if ack := expectMsg[*wire.PayAck](on1); ack.Seq != 5 {
		t.Fatalf("instance 1 acknowledged seq %d, want 5", ack.Seq)
	}
	rc.receipt("seq 5 on instance 1")
	on0.send(signedPay(t, p.key, out, rec, 5, rec.Paid+2_000, 2_000, rc.provID))
	if st := expectMsg[*wire.ChannelState](on0); st.Seq != 5 || st.Paid != rec.Paid+1_000 {
		t.Fatalf("instance 0 showed seq %d paid %d, want the stored seq 5 paid %d", st.Seq, st.Paid, rec.Paid+1_000)
	}
	if ce := expectMsg[*wire.ChannelError](on0); ce.Code != wire.ChanStaleState {
		t.Fatalf("instance 0 refused the stale write with %s, want %s", ce.Code, wire.ChanStaleState)
	}
	on0.send(signedPay(t, p.key, out, rec, 6, rec.Paid+1_500, 500, rc.provID))
	if ack := expectMsg[*wire.PayAck](on0); ack.Seq != 6 {
		t.Fatalf("instance 0 acknowledged seq %d, want 6", ack.Seq)
	}
	rc.receipt("seq 6 on instance 0")
	final, err := rc.store.Channel(ctx, p.chanID)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = rc.store.Receipts(ctx, p.chanID, 1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if final.Seq != 6 || final.Paid != want+1_500 || len(raw) != 6 {
		t.Fatalf("store at seq %d paid %d with %d receipts; want seq 6 paid %d", final.Seq, final.Paid, len(raw), want+1_500)
	}
}

// rawSession is a bare BOLT 8 session to one instance, for messages the
// client library would never send.
type rawSession struct {
	t    *testing.T
	conn *brontide.Conn
	in   chan wire.Message
}

func (rc *routeCluster) rawSession(key *btcec.PrivateKey, i int) *rawSession {
	rc.t.Helper()
	addr, err := net.ResolveTCPAddr("tcp", rc.c.Addr(i))
	if err != nil {
		rc.t.Fatal(err)
	}
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: rc.hubKey, Address: addr}, 5*time.Second, net.DialTimeout)
	if err != nil {
		rc.t.Fatalf("dial instance %d: %v", i, err)
	}
	s := &rawSession{t: rc.t, conn: c, in: make(chan wire.Message, 64)}
	done := make(chan struct{})
	rc.t.Cleanup(func() {
		_ = c.Close()
		<-done
	})
	go func() {
		defer close(done)
		defer close(s.in)
		for {
			m, err := wire.ReadMessage(c, wire.MaxMessageSize)
			if err != nil {
				return
			}
			if _, ok := m.(*wire.Ping); !ok {
				s.in <- m
			}
		}
	}()
	s.send(wire.NewInit())
	expectMsg[*wire.Init](s)
	return s
}

func (s *rawSession) send(m wire.Message) {
	s.t.Helper()
	_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(s.conn, m); err != nil {
		s.t.Fatalf("send %T: %v", m, err)
	}
}

// expectMsg reads the session's next message and requires a T.
func expectMsg[T wire.Message](s *rawSession) T {
	s.t.Helper()
	var zero T
	select {
	case m, ok := <-s.in:
		if !ok {
			s.t.Fatal("hub closed the session")
		}
		v, ok := m.(T)
		if !ok {
			s.t.Fatalf("got %T (%v), want %T", m, m, zero)
		}
		return v
	case <-time.After(10 * time.Second):
		s.t.Fatalf("no %T within 10s", zero)
	}
	return zero
}

// routeOutput is the channel output of rec, to sign states with.
func routeOutput(t *testing.T, rec hub.ChannelRecord) *channel.Output {
	t.Helper()
	dev, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		t.Fatal(err)
	}
	hk, err := btcec.ParsePubKey(rec.HubKey[:])
	if err != nil {
		t.Fatal(err)
	}
	out, err := channel.NewOutput(channel.Params{DeviceKey: dev, HubKey: hk, Capacity: rec.Capacity, Expiry: rec.Expiry})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// signedPay is the device's signed payment of amount at (seq, paid).
func signedPay(t *testing.T, key *btcec.PrivateKey, out *channel.Output, rec hub.ChannelRecord,
	seq uint64, paid, amount msat.Amount, payee string) *wire.Pay {
	t.Helper()
	sig, err := out.SignClaim(key, channel.State{ChannelID: rec.Funding, Seq: seq, Paid: paid})
	if err != nil {
		t.Fatal(err)
	}
	var b [64]byte
	copy(b[:], sig.Serialize())
	return &wire.Pay{ChanID: rec.Funding, Seq: seq, Paid: paid, Amount: amount, Payee: payee, Sig: b}
}

// eventsCharged reads instance i's m2mhub_events_charged_total (every
// kind and status): the events its own charging priced.
func (rc *routeCluster) eventsCharged(i int) int {
	rc.t.Helper()
	resp, err := http.Get("http://" + rc.c.Hub(i).Runtime().MetricsAddr + "/metrics")
	if err != nil {
		rc.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "m2mhub_events_charged_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			rc.t.Fatalf("metrics line %q: %v", line, err)
		}
		n += int(v)
	}
	return n
}

// Usage events metered on NATS are charged by whichever instance's intake
// takes them; a charge priced on instance 0 for a payer whose session is
// on instance 1 is requested there, paid there, and its receipt reaches
// the provider once. Events are sent one at a time until instance 0 has
// charged at least one (the shared consumer hands each to one instance);
// every event is paid exactly once and the store, the device and the
// prices agree to the msat.
func TestClusterChargeRoutedToDevice(t *testing.T) {
	rc := startRouteCluster(t, 1)
	ctx := t.Context()
	p := rc.payers[0]
	token, err := datadir.Dir(rc.c.DataDir(0)).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := httpapi.NewClient(rc.c.Hub(0).Runtime().AdminAddr, token)
	rec, err := admin.PublishContract(ctx, flatContract)
	if err != nil {
		t.Fatal(err)
	}
	contract := rec.Hash.String()
	nc, err := nats.Connect(rc.c.NATSURLs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	provKey, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	// A second provider with a NATS meter (the first one holds holds in
	// the other tests); the payer's policy allows both.
	pr, err := admin.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(provKey.PubKey()), Owner: "route test", Kind: "gate"})
	if err != nil {
		t.Fatal(err)
	}
	meter, err := m2mclient.NewMeter(m2mclient.MeterConfig{
		Conn: nc, ProviderID: pr.Device.ID, Key: provKey, HubKey: rc.hubKey, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meter.Close() })
	notices, err := meter.Receipts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.provID = pr.Device.ID
	rc.connect(p, 1) // its policy now allows the metering provider
	rc.waitFor(10*time.Second, "payer not connected", p.sess.Connected)

	const price = msat.Amount(1000)
	paidEvents := map[string]int{}
	sent := 0
	for ; sent < 20 && (sent == 0 || rc.eventsCharged(0) == 0); sent++ {
		id := fmt.Sprintf("passage-%d", sent)
		if err := meter.Meter(ctx, metering.Event{ID: id, Subject: p.id, Time: rfc(time.Now().UTC()),
			Data: metering.Data{Contract: contract, Quantity: "1", Unit: "passage", VehicleClass: "car"}}); err != nil {
			t.Fatal(err)
		}
		for paidEvents[id] == 0 {
			select {
			case n := <-notices:
				if n.Unpaid != nil {
					t.Fatalf("unpaid notice %+v\n%s", *n.Unpaid, rc.logs())
				}
				for _, e := range n.Receipt.Events {
					paidEvents[e]++
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("event %s not paid\n%s", id, rc.logs())
			}
		}
	}
	on0, on1 := rc.eventsCharged(0), rc.eventsCharged(1)
	t.Logf("%d events: %d charged on instance 0 (routed to the payer on 1), %d on instance 1", sent, on0, on1)
	if on0 == 0 {
		t.Fatalf("instance 0 charged none of %d events", sent)
	}
	if on0+on1 != sent {
		t.Fatalf("%d + %d events charged, %d sent", on0, on1, sent)
	}
	for id, n := range paidEvents {
		if n != 1 {
			t.Fatalf("event %s in %d receipts", id, n)
		}
	}
	ch, err := rc.store.Channel(ctx, p.chanID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.dev.Balance(p.chanID)
	if err != nil {
		t.Fatal(err)
	}
	if want := msat.Amount(sent) * price; ch.Paid != want || ch.Owed != 0 || b.Paid != want {
		t.Fatalf("store paid %d owed %d, device paid %d; %d events at %d msat", ch.Paid, ch.Owed, b.Paid, sent, price)
	}
}
