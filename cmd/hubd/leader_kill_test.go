package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/internal/cluster"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/settlement"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// leaderKillTTL is the settlement lease of TestClusterKillLeaderAtEachState.
const leaderKillTTL = 2 * time.Second

// Issue 12: the settlement leader of two hubd on the cluster harness is
// killed with SIGKILL right after each state of a run is durable (planned,
// signing, signed, broadcast; hubd's test-only crash point); the other
// instance takes the lease once it lapses and resumes the run from the
// shared store. The epoch settles exactly once, on chain, with the txid
// stored before the kill once the run was signed; both payers' channels
// and the provider's payout agree with the hub's ledger to the msat; no
// epoch is cut while the run is open. Reports the hand-over time (the
// leader's death to the other instance leading, through its /v1/info).
func TestClusterKillLeaderAtEachState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster per state")
	}
	for _, state := range []settlement.RunState{
		settlement.RunPlanned, settlement.RunSigning, settlement.RunSigned, settlement.RunBroadcast,
	} {
		t.Run(string(state), func(t *testing.T) { leaderKillTrial(t, state) })
	}
}

func leaderKillTrial(t *testing.T, state settlement.RunState) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// Instance 0 starts first, so it takes the lease, and carries the
	// crash point. The period is long: the test cuts the one epoch
	// itself, so both payers' charges are in it.
	c, err := cluster.Start(ctx, cluster.Config{
		Hubd: filepath.Join(binDir, "hubd"), Dir: t.TempDir(), Instances: 2, Btcd: true,
		HubArgs: append(append(killHubArgs(), meterHubArgs()...),
			"--settle.lease-ttl", leaderKillTTL.String(), "--settle.period", "1h"),
		Env: [][]string{{crashAfterEnv + "=" + string(state)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	const leader, other = 0, 1
	admins := make([]*httpapi.Client, c.Instances())
	// connectAdmin points admins[i] at instance i's admin port, which a
	// restart changes.
	connectAdmin := func(i int) {
		token, err := datadir.Dir(c.DataDir(i)).ReadToken(datadir.AdminTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		admins[i] = httpapi.NewClient(c.Hub(i).Runtime().AdminAddr, token)
	}
	for i := range admins {
		connectAdmin(i)
	}
	leading := func(i int) (httpapi.Info, bool) {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		in, err := admins[i].Info(ictx)
		return in, err == nil && in.SettleLeading
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\n--- hubd-0 ---\n%s\n--- hubd-1 ---\n%s", append(args, c.LogTail(0, 4000), c.LogTail(1, 4000))...)
	}
	if _, ok := leading(leader); !ok {
		fail("instance %d, started first, does not lead", leader)
	}
	hubKey, err := c.Hub(leader).HubKey()
	if err != nil {
		t.Fatal(err)
	}
	admin := admins[leader]

	contract, err := admin.PublishContract(ctx, settleContract)
	if err != nil {
		t.Fatal(err)
	}
	provKey, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pr, err := admin.AddProvider(ctx, httpapi.AddProviderRequest{PubKey: hub.PubKeyOf(provKey.PubKey()), Owner: "leader kill test", Kind: "gate"})
	if err != nil {
		t.Fatal(err)
	}
	prov := &meterProvider{id: pr.Device.ID, key: provKey}
	nc, err := nats.Connect(c.NATSURLs(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	prov.attach(t, ctx, nc, hubKey)
	payoutAddr := newPayoutAddr(t)
	mustHubctl(t, c.DataDir(leader), "device", "set-payout", prov.id, payoutAddr.EncodeAddress())

	// The channels open with the leader alone up: the funding notice
	// reaches only devices on the instance whose watcher saw it.
	if err := c.StopHub(ctx, other); err != nil {
		t.Fatal(err)
	}
	rpc := c.Btcd().RPC()
	chain, err := btcdchain.New(btcdchain.Config{Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert,
		Params: &chaincfg.RegressionNetParams, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	var payers []*payer
	for _, kind := range []string{"online-car", "offline-car"} {
		key, err := btcec.NewPrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		d, err := admin.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(key.PubKey()), Roles: []hub.Role{hub.RolePayer}, Owner: "leader kill test", Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		// The leader's address first: the co-signing round reaches the
		// devices on the leader.
		payers = append(payers, dialPayer(t, ctx, c.Addr(leader)+","+c.Addr(other), hubKey, key, d.ID, false, nil))
	}
	online, offline := payers[0], payers[1]
	const capacity = btcutil.Amount(1_000_000)
	fundPayers(t, ctx, chain, filepath.Join(c.DataDir(leader), datadir.WalletKeyFile), capacity, payers...)
	if err := c.Restart(ctx, other); err != nil {
		t.Fatal(err)
	}
	connectAdmin(other)

	at := rfc(time.Now().UTC().Add(-time.Minute))
	for _, py := range payers {
		e := metering.Event{ID: "passage-" + py.id, Subject: py.id, Time: at,
			Data: metering.Data{Contract: contract.Hash.String(), Quantity: "1", Unit: "passage", VehicleClass: "car"}}
		prov.send(t, ctx, e)
		assertPaid(t, prov.receipts(t, e.ID), contract.Hash.String(), 10_000_000)
	}
	const fare = msat.Amount(10_000_000)
	for _, py := range payers {
		if got := py.paid(t); got != fare {
			t.Fatalf("%s paid %d msat, want %d", py.id, uint64(got), uint64(fare))
		}
	}
	// The offline payer leaves before the run: it is settled by its
	// claim signature.
	_ = offline.dev.Close()
	_ = offline.sess.Close()

	// Settle on the leader, which kills itself once the state is
	// durable, possibly before it answers.
	stopMining := chain.MineEvery(ctx, 300*time.Millisecond)
	defer func() { stopMining() }()
	settleErr := make(chan error, 1)
	go func() {
		_, err := admin.Settle(ctx)
		settleErr <- err
	}()
	select {
	case <-c.Hub(leader).Done():
	case <-ctx.Done():
		fail("the leader did not crash after %s", state)
	}
	killed := time.Now()
	<-settleErr // whatever it is: the leader died around it

	// What the run was when the leader died, read from the shared store
	// at once: the other instance can take the lease only once the
	// leader's has lapsed.
	st, err := redisstore.New(redisstore.Config{URL: c.RedisURL(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	runs, err := st.Runs(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		fail("%d runs stored at the kill, want 1", len(runs))
	}
	before := runs[0]
	if before.State != state {
		fail("stored run is %s at the kill, want %s (the crash point)", before.State, state)
	}
	beforeTxids := txids(t, before.Txs)

	// The other instance leads once the lease lapses.
	for {
		if _, ok := leading(other); ok {
			break
		}
		if time.Since(killed) > 10*leaderKillTTL {
			fail("instance %d does not lead %v after the leader's kill", other, time.Since(killed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	handOver := time.Since(killed)
	t.Logf("leader hand-over after kill -9 at %s: %v (lease TTL %v)", state, handOver.Round(time.Millisecond), leaderKillTTL)

	// It resumes the run and follows it to its confirmation.
	var final httpapi.RunView
	for {
		sv, err := admins[other].SettlementStatus(ctx, before.Epoch.Number, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(sv.Runs) > 0 {
			final = sv.Runs[0]
			if final.State == settlement.RunConfirmed {
				break
			}
			if final.State.Final() {
				fail("epoch %d run %s: %s", before.Epoch.Number, final.State, final.Error)
			}
		}
		if ctx.Err() != nil {
			fail("epoch %d not confirmed after the hand-over: %+v", before.Epoch.Number, final)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopMining()
	stopMining = func() {}

	// One batch, in the same attempt, with the txid stored before the
	// kill once the run was signed.
	if len(final.Txids) != 1 || final.Attempt != before.Attempt {
		fail("confirmed run attempt %d has txids %v, want one batch in attempt %d", final.Attempt, final.Txids, before.Attempt)
	}
	if state != settlement.RunPlanned && state != settlement.RunSigning {
		if len(beforeTxids) != 1 || beforeTxids[0] != final.Txids[0] {
			fail("confirmed batch %v, stored before the kill %v", final.Txids, beforeTxids)
		}
	}
	runs, err = st.Runs(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		t.Errorf("%d runs stored after the hand-over, want the one of epoch %d", len(runs), before.Epoch.Number)
	}
	epochs, err := admins[other].Epochs(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkEpochChain(t, epochs)

	// On chain: the batch spends both old outpoints, which are gone
	// from the UTXO set, and pays the provider's address alone.
	var batchID chainhash.Hash
	if err := chainhash.Decode(&batchID, final.Txids[0]); err != nil {
		t.Fatal(err)
	}
	batch, next := checkBatch(t, ctx, chain, batchID, payoutAddr, payers...)
	for _, py := range payers {
		// To the msat: the next channel holds what the old one had
		// left, by the chain and by the hub's ledger.
		want := capacity - btcutil.Amount(fare/1000)
		rec, err := st.Channel(ctx, next[py.id])
		if err != nil {
			t.Fatalf("%s's next channel %v: %v", py.id, next[py.id], err)
		}
		if got := btcutil.Amount(batch.TxOut[next[py.id].Index].Value); got != want || rec.Capacity != want || rec.Seq != 0 || rec.Paid != 0 {
			t.Fatalf("%s's next channel: output %d sat, hub record capacity %d sat seq %d paid %d, want %d sat unpaid",
				py.id, got, rec.Capacity, rec.Seq, uint64(rec.Paid), want)
		}
	}
	earned := btcutil.Amount(0)
	for _, out := range batch.TxOut {
		if _, addrs, _, err := txscript.ExtractPkScriptAddrs(out.PkScript, &chaincfg.RegressionNetParams); err == nil &&
			len(addrs) == 1 && addrs[0].EncodeAddress() == payoutAddr.EncodeAddress() {
			earned += btcutil.Amount(out.Value)
		}
	}
	// 2 passages at 10,000 sat less the 10 % hub fee.
	if want := btcutil.Amount(2 * 9_000); earned != want {
		t.Fatalf("provider paid %d sat by the batch, want %d", earned, want)
	}

	// The online payer, now on the other instance, was told its channel
	// moved and agrees with the hub's record of it.
	deadline := time.Now().Add(20 * time.Second)
	for !onChannel(online.dev, next[online.id]) {
		if time.Now().After(deadline) {
			fail("online payer did not move to %v: %+v", next[online.id], online.dev.Channels())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, ch := range online.dev.Channels() {
		if ch.ID == next[online.id] && ch.Capacity != capacity-btcutil.Amount(fare/1000) {
			t.Fatalf("online payer's next channel has capacity %d sat", ch.Capacity)
		}
	}
	t.Logf("killed after %s: epoch %d settled once by %s (attempt %d) in %v", state, before.Epoch.Number, batchID,
		final.Attempt, time.Since(start).Round(time.Millisecond))
}
