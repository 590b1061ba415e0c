package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/internal/cluster"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The failover test kills one hubd every failoverPeriod, round robin, for
// failoverDuration; `make test` runs the 20 s × 2 min.
var (
	failoverPeriod   = flag.Duration("failover.period", 20*time.Second, "TestClusterFailover: kill -9 one hubd this often")
	failoverDuration = flag.Duration("failover.duration", 2*time.Minute, "TestClusterFailover: how long the kills go on")
	// failoverMetered adds a provider publishing metered events through
	// the kills, each to be receipted once (by the provider's Meter,
	// which drops a receipt the hub publishes again) and paid to the msat.
	failoverMetered = flag.Bool("failover.metered", true, "TestClusterFailover: also publish metered events through the kills and require each receipted exactly once")
)

// maxFailover is how soon a device must be paying again after losing its
// instance (issue 12).
const maxFailover = 5 * time.Second

// clusterDevices is how many devices pay during the cluster tests; device
// k starts on instance k mod Instances.
const clusterDevices = 3

// payPace spaces one device's payments, so three devices load two cores
// shared with other work without starving the hubd being restarted.
const payPace = 10 * time.Millisecond

// clusterRun is a 3-instance hub on the harness with devices paying it.
type clusterRun struct {
	t       *testing.T
	pace    time.Duration // between one device's payments
	c       *cluster.Cluster
	hubKey  *btcec.PublicKey
	provID  string
	provKey *btcec.PrivateKey
	devs    []*clusterDevice
	// meterLogs is the provider's client log (TestClusterThroughput).
	meterLogs *syncBuffer
	meterLog  *slog.Logger
	// devLogs is the devices' client log (meterReport).
	devLogs syncBuffer
}

// clusterDevice is one paying device with a durable FileStore and what it
// was told.
type clusterDevice struct {
	key    *btcec.PrivateKey
	id     string
	dir    string
	chanID btcwire.OutPoint
	sess   *m2mclient.Session
	dev    *m2mclient.Device

	mu       sync.Mutex
	receipts map[uint64][32]byte // by seq, of every acknowledged payment
	ackedSeq uint64
	acked    msat.Amount     // sum of acknowledged amounts
	gaps     []time.Duration // from a first failed Pay to the next receipt
	failures []error         // what failed, for the report
	// unanswered are the amounts of Pays that failed without a definite
	// refusal: each may or may not have reached the ledger before the
	// instance died, and the next Pay resolves it either way.
	unanswered []msat.Amount
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startClusterRun starts the harness (3 NATS, Redis, btcd, 3 hubd),
// enrols a provider and the devices on instance 0's admin API (the
// registry is shared) and opens one funded channel per device.
func startClusterRun(t *testing.T) *clusterRun {
	t.Helper()
	return startClusterRunN(t, clusterDevices, true)
}

// startClusterRunN is startClusterRun with devices devices, leaving
// instances 1.. stopped unless restart.
func startClusterRunN(t *testing.T, devices int, restart bool) *clusterRun {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := t.Context()
	c, hk := startHarness(t, 3)
	r := &clusterRun{t: t, c: c, hubKey: hk, pace: payPace}
	r.provKey, r.provID = enrol(t, c.DataDir(0), "provider")
	chain := harnessChain(t, c)
	wallet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: filepath.Join(c.DataDir(0), datadir.WalletKeyFile), Chain: chain, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The channels open on instance 0 alone, so TestClusterThroughput
	// can start measuring with one instance (the channel-ready notice
	// itself reaches a device on any instance: route_test.go).
	for i := 1; i < c.Instances(); i++ {
		if err := c.StopHub(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	lookup := func(ctx context.Context, id chainhash.Hash) (*btcwire.MsgTx, error) {
		info, err := chain.GetTx(ctx, id)
		return info.Tx, err
	}
	for k := range devices {
		d := &clusterDevice{dir: t.TempDir(), receipts: map[uint64][32]byte{}}
		d.key, d.id = enrol(t, c.DataDir(0), "payer")
		r.dial(d, k, c.Instances())
		height, err := chain.BlockCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stopMining := chain.MineEvery(ctx, 300*time.Millisecond)
		openCtx, cancel := context.WithTimeout(ctx, time.Minute)
		ch, err := d.dev.FundAndOpen(openCtx, wallet, lookup, btcutil.Amount(1_000_000), uint32(height)+500)
		cancel()
		stopMining()
		if err != nil {
			t.Fatalf("device %d: FundAndOpen: %v\n%s", k, err, c.LogTail(k%c.Instances(), 4000))
		}
		d.chanID = ch.ID
		r.devs = append(r.devs, d)
	}
	for i := 1; i < c.Instances() && restart; i++ {
		if err := c.Restart(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range r.devs {
			d.dev.Close()
			d.sess.Close()
		}
	})
	return r
}

// startHarness starts the cluster harness with n hubd (killHubArgs) and
// returns it with the hub key every instance shares.
func startHarness(t *testing.T, n int) (*cluster.Cluster, *btcec.PublicKey) {
	t.Helper()
	c, err := cluster.Start(t.Context(), cluster.Config{
		Hubd: filepath.Join(binDir, "hubd"), Dir: t.TempDir(), Instances: n, Btcd: true,
		HubArgs: killHubArgs(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	hk, err := c.Hub(0).HubKey()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < c.Instances(); i++ {
		k, err := c.Hub(i).HubKey()
		if err != nil || !k.IsEqual(hk) {
			t.Fatalf("instance %d has another hub key (%v)", i, err)
		}
	}
	return c, hk
}

// harnessChain is an RPC client of the harness's btcd, closed at the end
// of the test.
func harnessChain(t *testing.T, c *cluster.Cluster) *btcdchain.Client {
	t.Helper()
	rpc := c.Btcd().RPC()
	chain, err := btcdchain.New(btcdchain.Config{Host: rpc.Host, User: rpc.User, Pass: rpc.Pass, Cert: rpc.Cert,
		Params: &chaincfg.RegressionNetParams, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chain.Close() })
	return chain
}

// dial connects device d with the first n instances' addresses, starting
// at instance k mod n, so the devices spread over the instances.
func (r *clusterRun) dial(d *clusterDevice, k, n int) {
	r.t.Helper()
	addrs := make([]string, n)
	for i := range n {
		addrs[i] = r.c.Addr((k + i) % n)
	}
	s, err := m2mclient.Dial(r.t.Context(), strings.Join(addrs, ","), r.hubKey, d.key,
		m2mclient.WithBackoff(50*time.Millisecond, 200*time.Millisecond),
		m2mclient.WithPingInterval(time.Second), m2mclient.WithDialTimeout(2*time.Second),
		m2mclient.WithLogger(quietLog()))
	if err != nil {
		r.t.Fatalf("dial: %v", err)
	}
	dev, err := m2mclient.NewDevice(s, m2mclient.DeviceConfig{
		Key: d.key, HubKey: r.hubKey, Params: &chaincfg.RegressionNetParams, Dir: d.dir,
		Policy: m2mclient.Policy{MaxPerPayment: 10_000, AllowedProviders: []string{r.provID}},
		Logger: slog.New(slog.NewTextHandler(&r.devLogs, nil)).With("device", d.id),
	})
	if err != nil {
		s.Close()
		r.t.Fatal(err)
	}
	d.sess, d.dev = s, dev
}

// pay pays until ctx ends, keeping going through failures: a Pay that
// fails leaves its payment pending, which the next Pay resolves (on
// whichever instance the session reached). It ends on a receipt, so the
// device and the hub agree once it returns.
func (r *clusterRun) pay(ctx context.Context, d *clusterDevice, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 12))
	var downSince time.Time
	for {
		amt := msat.Amount(1 + rng.IntN(5_000))
		rc, err := d.dev.Pay(context.WithoutCancel(ctx), d.chanID, r.provID, amt, "")
		if err == nil {
			if rc.Amount != amt {
				return fmt.Errorf("receipt for %d msat, paid %d", rc.Amount, amt)
			}
			d.mu.Lock()
			if _, dup := d.receipts[rc.Seq]; dup {
				d.mu.Unlock()
				return fmt.Errorf("two receipts for seq %d", rc.Seq)
			}
			d.receipts[rc.Seq] = rc.ID()
			d.ackedSeq = max(d.ackedSeq, rc.Seq)
			d.acked += amt
			if !downSince.IsZero() {
				d.gaps = append(d.gaps, time.Since(downSince))
				downSince = time.Time{}
			}
			d.mu.Unlock()
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(r.pace)
			continue
		}
		var ce *m2mclient.ChannelError
		if errors.As(err, &ce) && !errors.Is(err, m2mclient.ErrTemporary) {
			return fmt.Errorf("pay refused for good: %w", err)
		}
		if errors.Is(err, m2mclient.ErrPolicy) || errors.Is(err, channel.ErrOverCapacity) {
			return err
		}
		d.mu.Lock()
		d.unanswered = append(d.unanswered, amt)
		if downSince.IsZero() {
			downSince = time.Now()
			d.failures = append(d.failures, err)
		}
		d.mu.Unlock()
		if time.Since(downSince) > time.Minute {
			return fmt.Errorf("no payment for a minute: %w", err)
		}
		// A short pause between attempts while the session reconnects.
		time.Sleep(20 * time.Millisecond)
	}
}

// load runs every device's payer while disrupt runs, then stops them and
// returns the gaps.
func (r *clusterRun) load(disrupt func(ctx context.Context)) []time.Duration {
	t := r.t
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	errs := make([]error, len(r.devs))
	for k, d := range r.devs {
		wg.Go(func() { errs[k] = r.pay(ctx, d, uint64(k)) })
	}
	disrupt(ctx)
	stop()
	wg.Wait()
	var gaps []time.Duration
	for k, d := range r.devs {
		if errs[k] != nil {
			t.Errorf("device %d: %v", k, errs[k])
		}
		gaps = append(gaps, d.gaps...)
		t.Logf("device %d: last acknowledged seq %d, %d msat acknowledged; %d interruptions", k, d.ackedSeq, uint64(d.acked), len(d.gaps))
	}
	return gaps
}

// verify checks every device's durable store against the hubs' shared
// ledger in Redis: nothing acknowledged lost, nothing applied twice, the
// receipts the devices got are the stored ones and, with the payments the
// hub asked for (metered charges, receipts naming events), sum to the
// paid total. It returns what each device paid for metered charges.
func (r *clusterRun) verify() []msat.Amount {
	t := r.t
	ctx := t.Context()
	st, err := redisstore.New(redisstore.Config{URL: r.c.RedisURL(), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	metered := make([]msat.Amount, len(r.devs))
	for k, d := range r.devs {
		d.dev.Close()
		d.sess.Close()
		fs, err := m2mclient.NewFileStore(d.dir)
		if err != nil {
			t.Fatal(err)
		}
		sts, err := fs.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(sts, func(s m2mclient.ChannelState) bool { return s.Funding == d.chanID })
		if i < 0 {
			t.Fatalf("device %d has no record of its channel", k)
		}
		dev := sts[i]
		rec, err := st.Channel(ctx, d.chanID)
		if err != nil {
			t.Fatal(err)
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("device %d: %s\n  hub:    seq %d paid %d status %s\n  device: seq %d paid %d pending %+v\n  acked:  seq %d sum %d",
				k, fmt.Sprintf(format, args...), rec.Seq, uint64(rec.Paid), rec.Status,
				dev.Seq, uint64(dev.Paid), dev.Pending, d.ackedSeq, uint64(d.acked))
		}
		// pay ends on a receipt, so both sides stand on the last one
		// (or on a metered charge paid after it).
		if rec.Seq != dev.Seq || d.ackedSeq > rec.Seq || dev.Pending != nil {
			fail("device and hub do not both stand on the last acknowledged payment")
		}
		if rec.Paid != dev.Paid || rec.DeviceSig != dev.Sig {
			fail("paid totals or signatures differ")
		}
		if rec.Status != hub.ChannelReady {
			fail("channel is not ready")
		}
		raw, err := st.Receipts(ctx, d.chanID, 1, 1<<30)
		if err != nil {
			fail("receipts: %v", err)
		}
		if uint64(len(raw)) != rec.Seq {
			fail("%d receipts stored for seq %d", len(raw), rec.Seq)
		}
		var sum, resolved msat.Amount
		unanswered := slices.Clone(d.unanswered)
		for j, b := range raw {
			var rc channel.Receipt
			if err := rc.UnmarshalBinary(b); err != nil {
				fail("receipt %d: %v", j+1, err)
			}
			if err := rc.VerifyKey(r.hubKey); err != nil {
				fail("receipt %d: %v", j+1, err)
			}
			sum += rc.Amount
			if rc.Seq != uint64(j+1) || rc.Paid != sum {
				fail("receipt %d: seq %d paid %d, amounts sum to %d", j+1, rc.Seq, uint64(rc.Paid), uint64(sum))
			}
			if rc.EventCount > 0 {
				metered[k] += rc.Amount // the hub asked for it
				continue
			}
			id, ok := d.receipts[rc.Seq]
			switch {
			case ok && id != rc.ID():
				fail("stored receipt %d is not the one the device was given", rc.Seq)
			case !ok:
				// A Pay that failed at a kill and was stored: its
				// amount is one unanswered attempt's, used once.
				u := slices.Index(unanswered, rc.Amount)
				if u < 0 {
					fail("stored payment %d (%d msat) was neither acknowledged nor an unanswered attempt", rc.Seq, uint64(rc.Amount))
				}
				unanswered = slices.Delete(unanswered, u, u+1)
				resolved += rc.Amount
			}
		}
		if rec.Paid != d.acked+resolved+metered[k] {
			fail("paid %d msat: %d acknowledged + %d of unanswered attempts stored + %d metered", uint64(rec.Paid),
				uint64(d.acked), uint64(resolved), uint64(metered[k]))
		}
		if rec.Seq > d.ackedSeq && metered[k] == 0 {
			fail("the hub stands past the last acknowledged payment with no metered charge paid")
		}
		t.Logf("device %d: ledger and store agree: seq %d, %d msat (%d msat from %d attempts unanswered at a kill and stored, %d msat metered)",
			k, rec.Seq, uint64(rec.Paid), uint64(resolved), len(d.unanswered)-len(unanswered), uint64(metered[k]))
	}
	return metered
}

// percentile is the q-quantile (0..1) of ds by nearest rank.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// With three hubd on a 3-node NATS cluster, Redis and btcd, and three
// devices with durable stores paying, one hubd is killed with SIGKILL every
// failoverPeriod, round robin, and started again. Every device whose
// instance died pays again within maxFailover, on another instance; at the
// end every device's store and the shared ledger agree on every payment.
func TestClusterFailover(t *testing.T) {
	r := startClusterRun(t)
	var (
		metered  int
		meterErr error
	)
	meterLoad := func() {}
	if *failoverMetered {
		contract := r.publishContract(meterBenchContract)
		meter, notices := r.meter()
		meterLoad = func() {
			metered, _, meterErr = r.meterLoad(meter, notices, contract, 0, *failoverDuration, failoverMeterWindow)
		}
	}
	kills := 0
	gaps := r.load(func(ctx context.Context) {
		var wg sync.WaitGroup
		// The devices keep paying until every event has its receipt.
		defer wg.Wait()
		wg.Go(meterLoad)
		tick := time.NewTicker(*failoverPeriod)
		defer tick.Stop()
		end := time.After(*failoverDuration)
		for {
			select {
			case <-end:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			i := kills % r.c.Instances()
			kills++
			r.c.Kill(i)
			if err := r.c.Restart(ctx, i); err != nil {
				t.Errorf("restart instance %d: %v", i, err)
				return
			}
		}
	})
	if kills == 0 {
		t.Fatal("no instance was killed")
	}
	if len(gaps) == 0 {
		t.Fatalf("%d kills and no device lost its instance", kills)
	}
	t.Logf("%d kills, %d device interruptions: failover p50 %v p99 %v max %v", kills, len(gaps),
		percentile(gaps, 0.5), percentile(gaps, 0.99), slices.Max(gaps))
	for _, g := range gaps {
		if g > maxFailover {
			t.Errorf("a device paid again only %v after losing its instance (limit %v)", g, maxFailover)
		}
	}
	if meterErr != nil {
		t.Errorf("metered events under failover: %v", meterErr)
	}
	paid := r.verify()
	if !*failoverMetered || meterErr != nil {
		return
	}
	t.Logf("%d metered events receipted once each through %d kills", metered, kills)
	// Event n names device (n+1) % devices (meterLoad): each device paid
	// exactly the price of its events.
	for k := range r.devs {
		n := 0
		for e := range metered {
			if (e+1)%len(r.devs) == k {
				n++
			}
		}
		if want := msat.Amount(n) * meterBenchPrice; paid[k] != want {
			t.Errorf("device %d paid %d msat for %d metered events, want %d", k, uint64(paid[k]), n, uint64(want))
		}
	}
}

// failoverMeterWindow is how many metered events may be unreceipted at a
// time during TestClusterFailover.
const failoverMeterWindow = 1_000

// meterBenchPrice is what the payer pays for one passage of
// meterBenchContract (unverified: check the fee is not on top).
const meterBenchPrice msat.Amount = 10

// Every instance in turn is stopped with SIGTERM and started again while
// the devices pay: no payment fails beyond the client's own retry (each
// interruption is over within maxFailover), and the ledgers agree.
func TestClusterRollingRestart(t *testing.T) {
	r := startClusterRun(t)
	gaps := r.load(func(ctx context.Context) {
		for i := range r.c.Instances() {
			// Let the devices pay on the full cluster between restarts.
			time.Sleep(3 * time.Second)
			stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := r.c.StopHub(stopCtx, i)
			cancel()
			if err != nil {
				t.Errorf("stop instance %d: %v", i, err)
			}
			if err := r.c.Restart(ctx, i); err != nil {
				t.Errorf("restart instance %d: %v", i, err)
				return
			}
		}
		time.Sleep(3 * time.Second)
	})
	t.Logf("%d device interruptions: p50 %v p99 %v", len(gaps), percentile(gaps, 0.5), percentile(gaps, 0.99))
	for _, g := range gaps {
		if g > maxFailover {
			t.Errorf("a device paid again only %v after its instance restarted (limit %v)", g, maxFailover)
		}
	}
	r.verify()
}

// One NATS node of three is killed while the devices pay and usage is
// published: the R3 metering stream keeps taking usage (every publish
// acknowledged by JetStream stays in the stream), payments go on, and the
// node rejoins.
func TestClusterNATSNodeDown(t *testing.T) {
	r := startClusterRun(t)
	ctx := t.Context()
	nc, err := nats.Connect(r.c.NATSURLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, metering.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().Config.Replicas; n != 3 {
		t.Fatalf("%s has %d replicas, want 3", metering.UsageStream, n)
	}
	// A consumer of its own on the stream counts what arrived, apart from
	// the hubs' intake (which charges only signed events of known meters).
	cons, err := js.CreateOrUpdateConsumer(ctx, metering.UsageStream, jetstream.ConsumerConfig{
		Durable: "cluster-test", AckPolicy: jetstream.AckNonePolicy, FilterSubject: metering.UsageSubjects,
	})
	if err != nil {
		t.Fatal(err)
	}
	var acked []string
	gaps := r.load(func(ctx context.Context) {
		publish := func(n int) {
			for range n {
				id := fmt.Sprintf("cluster-test-%d", len(acked))
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := js.Publish(pctx, "usage.cluster-test", []byte(id), jetstream.WithMsgID(id))
				cancel()
				if err == nil {
					acked = append(acked, id)
				}
			}
		}
		publish(200)
		r.c.KillNATS(0)
		down := len(acked)
		publish(500)
		if len(acked)-down < 450 {
			t.Errorf("with one NATS node down only %d of 500 publishes were acknowledged", len(acked)-down)
		}
		if err := r.c.RestartNATS(ctx, 0); err != nil {
			t.Errorf("restart NATS node: %v", err)
		}
		publish(200)
	})
	t.Logf("%d usage publishes acknowledged; payment interruptions: %d (p99 %v)", len(acked), len(gaps), percentile(gaps, 0.99))
	seen := map[string]bool{}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(seen) < len(acked) && fctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue
		}
		for m := range batch.Messages() {
			seen[string(m.Data())] = true
		}
	}
	for _, id := range acked {
		if !seen[id] {
			t.Fatalf("acknowledged usage %s is not in the stream (%d of %d seen)", id, len(seen), len(acked))
		}
	}
	for _, g := range gaps {
		if g > maxFailover {
			t.Errorf("a payment stalled %v with one NATS node down", g)
		}
	}
	r.verify()
}

var clusterThroughput = flag.Duration("cluster.throughput", 3*time.Second, "TestClusterThroughput: measure payments/s and metered events/s on 1, 2 and 3 instances for this long each (0 skips)")

// clusterMetered adds the metered events/s phase to TestClusterThroughput.
// Off in make test: on 3 instances the charges of one payer sometimes
// pass the hub's 10,000 msat credit limit (a few seconds of that payer's
// charges at this load), and the excess is recorded unpaid
// ("credit-limit", the notice the phase fails on): why that one payer's
// payments fall seconds behind is not found yet (docs/scaling.md,
// Measured). With 3 s phases 5 of 5 runs passed.
var clusterMetered = flag.Bool("cluster.metered", false, "TestClusterThroughput: also measure metered events/s, each event receipted exactly once")

// meterBenchContract prices a passage at 10 msat with a 10 % hub fee: a
// charge of one published batch (100 events over the devices) stays far
// under the devices' MaxPerPayment and the hub's credit limit.
var meterBenchContract = []byte(`{"kind":"toll","version":1,"id":"cluster-bench","currency":"msat","fee":{"bps":"1000"},` +
	`"toll":{"time_zone":"UTC","bands":[],"default":{"car":"10"}}}`)

// Metered throughput: events per published message, and how many events
// may be published but not yet receipted (so the figure is the hub's
// rate, not a queue filling up).
const (
	meterBenchBatch  = 100
	meterBenchWindow = 8_000
)

// TestClusterThroughput measures payments/s of unpaced devices and
// metered events/s of one provider on 1, 2 and 3 instances of one cluster
// in one run (`go test -run TestClusterThroughput ./cmd/hubd -args
// -cluster.throughput=15s -cluster.metered`). On two cores every added
// instance competes for the same CPU: the figures show the cost of
// coordination, not scaling. Its devices
// also come back to an instance that cached their channel before they paid
// on another one: the stale cache must not refuse them (seq-gap) or show
// them an old state. A metered event counts when its receipt reaches the
// provider; every event must be receipted exactly once.
func TestClusterThroughput(t *testing.T) {
	if *clusterThroughput == 0 {
		t.Skip("set -cluster.throughput to measure")
	}
	const devices = 6
	r := startClusterRunN(t, devices, false)
	r.pace = 0
	var contract string
	var meter *m2mclient.Meter
	var notices <-chan m2mclient.Notice
	if *clusterMetered {
		contract = r.publishContract(meterBenchContract)
		meter, notices = r.meter()
	}
	var pays, events []float64
	for n := 1; n <= r.c.Instances(); n++ {
		if n > 1 {
			if err := r.c.Restart(t.Context(), n-1); err != nil {
				t.Fatal(err)
			}
		}
		// Each device reconnects with the first n instances, spread.
		for k, d := range r.devs {
			d.dev.Close()
			d.sess.Close()
			r.dial(d, k, n)
			d.mu.Lock()
			d.receipts = map[uint64][32]byte{}
			d.acked, d.ackedSeq, d.unanswered = 0, 0, nil
			d.mu.Unlock()
		}
		start := time.Now()
		r.load(func(ctx context.Context) {
			select {
			case <-ctx.Done():
			case <-time.After(*clusterThroughput):
			}
		})
		took := time.Since(start)
		count := 0
		for _, d := range r.devs {
			count += len(d.receipts)
		}
		if count == 0 {
			t.Fatalf("%d instance(s): no payment acknowledged in %v", n, took)
		}
		pays = append(pays, float64(count)/took.Seconds())
		t.Logf("%d instance(s), %d devices: %d payments in %v: %.0f payments/s", n, devices, count, took.Round(time.Millisecond), pays[n-1])

		if !*clusterMetered {
			continue
		}
		sent, took, err := r.meterLoad(meter, notices, contract, n, *clusterThroughput, meterBenchWindow)
		if err != nil {
			t.Fatalf("%d instance(s): %v", n, err)
		}
		events = append(events, float64(sent)/took.Seconds())
		t.Logf("%d instance(s): %d metered events receipted once each in %v: %.0f events/s", n, sent, took.Round(time.Millisecond), events[n-1])
	}
	ratios := func(xs []float64) string {
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = fmt.Sprintf("%.2f", x/xs[0])
		}
		return strings.Join(out, " : ")
	}
	t.Logf("payments/s %.0f, ratio %s; metered events/s %.0f, ratio %s (1, 2, 3 instances)",
		pays, ratios(pays), events, ratios(events))
}

// publishContract stores doc through instance 0's admin API and returns
// its hash as events name it.
func (r *clusterRun) publishContract(doc []byte) string {
	r.t.Helper()
	token, err := datadir.Dir(r.c.DataDir(0)).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		r.t.Fatal(err)
	}
	rec, err := httpapi.NewClient(r.c.Hub(0).Runtime().AdminAddr, token).PublishContract(r.t.Context(), doc)
	if err != nil {
		r.t.Fatalf("publish contract: %v", err)
	}
	return rec.Hash.String()
}

// meter is the provider's Meter on the NATS cluster and its notices; what
// the client drops (a receipt that does not verify, a slow consumer) is
// logged to meterLogs.
func (r *clusterRun) meter() (*m2mclient.Meter, <-chan m2mclient.Notice) {
	t := r.t
	t.Helper()
	r.meterLogs = &syncBuffer{}
	r.meterLog = slog.New(slog.NewTextHandler(r.meterLogs, nil))
	nc, err := nats.Connect(r.c.NATSURLs(), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { r.meterLog.Warn("nats", "err", err) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m, err := m2mclient.NewMeter(m2mclient.MeterConfig{
		Conn: nc, ProviderID: r.provID, Key: r.provKey, HubKey: r.hubKey, MaxBatch: meterBenchBatch, Logger: r.meterLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	notices, err := m.Receipts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m, notices
}

// meterLoad publishes passages of the devices for d, at most window
// unreceipted at a time, then waits for every receipt.
// It returns how many events were receipted and the time from the first
// publish to the last receipt, or an error for an unpaid notice, a
// receipt for an event not published or already receipted, or an event
// left without a receipt a minute after the last publish (naming the
// payers, with hubd's warnings and unpaid notices and the clients'
// warnings). It touches r.t only to read its context, so it may run
// beside the test's goroutine.
func (r *clusterRun) meterLoad(m *m2mclient.Meter, notices <-chan m2mclient.Notice, contract string, round int, d time.Duration, window int) (int, time.Duration, error) {
	ctx := r.t.Context()
	var (
		mu       sync.Mutex
		sent     = map[string]bool{} // published, false until receipted
		receipts int
		bad      error
	)
	took := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading() // before the wait
	wg.Go(func() {
		for {
			select {
			case <-readCtx.Done():
				return
			case n := <-notices:
				mu.Lock()
				switch {
				case n.Unpaid != nil:
					bad = cmp.Or(bad, fmt.Errorf("unpaid notice %+v", *n.Unpaid))
				case n.Receipt != nil:
					for _, id := range n.Receipt.Events {
						done, ok := sent[id]
						if !ok || done {
							bad = cmp.Or(bad, fmt.Errorf("receipt for event %q (of %d), published %v, receipted before %v", id, len(n.Receipt.Events), ok, done))
							continue
						}
						sent[id] = true
						receipts++
					}
				}
				mu.Unlock()
				select {
				case took <- struct{}{}:
				default:
				}
			}
		}
	})
	outstanding := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(sent) - receipts
	}
	start := time.Now()
	at := rfc(start.UTC())
	for seq := 0; time.Since(start) < d; {
		for outstanding() > window-meterBenchBatch {
			select {
			case <-took:
			case <-time.After(time.Second):
			}
		}
		evs := make([]metering.Event, meterBenchBatch)
		mu.Lock()
		for i := range evs {
			id := fmt.Sprintf("bench-%d-%d", round, seq)
			seq++
			sent[id] = false
			evs[i] = metering.Event{ID: id, Subject: r.devs[seq%len(r.devs)].id, Time: at,
				Data: metering.Data{Contract: contract, Quantity: "1", Unit: "passage", VehicleClass: "car"}}
		}
		mu.Unlock()
		if err := m.Meter(ctx, evs...); err != nil {
			return 0, 0, fmt.Errorf("meter: %w", err)
		}
	}
	deadline := time.After(time.Minute)
	for outstanding() > 0 {
		select {
		case <-took:
		case <-deadline:
			mu.Lock()
			bySubject := map[string]int{}
			var some []string
			for id, done := range sent {
				if !done {
					n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
					bySubject[r.devs[(n+1)%len(r.devs)].id]++
					if len(some) < 5 {
						some = append(some, id)
					}
				}
			}
			firstBad := bad
			mu.Unlock()
			return 0, 0, fmt.Errorf("%d of the metered events have no receipt a minute after the last publish (by payer %v, e.g. %v, stored as %v; first bad notice: %v)\n%s",
				outstanding(), bySubject, some, r.storedCharges(ctx, some), firstBad, r.meterReport())
		}
	}
	elapsed := time.Since(start)
	stopReading()
	wg.Wait()
	if bad != nil {
		return 0, 0, fmt.Errorf("%w\n%s", bad, r.meterReport())
	}
	return receipts, elapsed, nil
}

// storedCharges describes the provider's charges of ids as the shared
// store has them: status, amount, paid time.
func (r *clusterRun) storedCharges(ctx context.Context, ids []string) []string {
	st, err := redisstore.New(redisstore.Config{URL: r.c.RedisURL(), Logger: quietLog()})
	if err != nil {
		return []string{err.Error()}
	}
	defer st.Close()
	var out []string
	for _, id := range ids {
		c, err := st.Charge(ctx, r.provID, id)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		out = append(out, fmt.Sprintf("%s %s paid %s", c.Status, c.Amount, c.Paid.Format(time.RFC3339Nano)))
	}
	return out
}

// meterReport is what explains metered events left without a receipt:
// hubd's warnings and unpaid charges, the provider client's log and the
// devices' warnings and unpaid payment requests.
func (r *clusterRun) meterReport() string {
	var b strings.Builder
	pick := func(who, log string, words ...string) {
		for _, l := range strings.Split(log, "\n") {
			for _, w := range words {
				if strings.Contains(l, w) {
					fmt.Fprintf(&b, "%s: %s\n", who, l)
					break
				}
			}
		}
	}
	b.WriteString("hubd:\n")
	for i := range r.c.Instances() {
		log, _ := os.ReadFile(r.c.LogPath(i))
		pick(fmt.Sprintf("hubd-%d", i), string(log), "level=WARN", "level=ERROR", `msg="unpaid charges"`, `msg="payer refused charges"`,
			`msg="owed charges reloaded"`, `msg="owed charges found paid by a stored payment"`, `msg="owed charges claimed"`,
			`msg="payment request failed, asking again"`, `msg="charge request handed to the scan"`)
	}
	b.WriteString("provider client:\n" + r.meterLogs.String())
	b.WriteString("devices:\n")
	pick("device", r.devLogs.String(), "level=WARN", "level=ERROR", `msg="payment request not paid"`)
	return b.String()
}

// A device given a dead address before a live one connects to the live
// one at its first attempt, and HubAddr names it; a host name resolving
// to the instance works the same.
func TestDialAddressList(t *testing.T) {
	dir := t.TempDir()
	p := startHubd(t, dir)
	key, _ := enrol(t, dir, "payer")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	_, port, _ := net.SplitHostPort(p.rt.P2PAddr)
	for _, list := range []string{dead + "," + p.rt.P2PAddr, dead + ", localhost:" + port} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		// A backoff longer than the deadline: only an attempt that tries
		// the second address at once can connect in time.
		s, err := m2mclient.Dial(ctx, list, p.hubKey(t), key, m2mclient.WithBackoff(time.Minute, time.Minute), m2mclient.WithLogger(quietLog()))
		cancel()
		if err != nil {
			t.Fatalf("Dial(%q): %v", list, err)
		}
		want := strings.TrimSpace(strings.Split(list, ",")[1])
		if got := s.HubAddr(); got != want {
			t.Errorf("Dial(%q) is connected at %q, want %q", list, got, want)
		}
		s.Close()
	}
}
