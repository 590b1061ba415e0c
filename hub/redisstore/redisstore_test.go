package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/m2mhub/m2mhub/msat"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/hub/storetest"
	"github.com/m2mhub/m2mhub/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustOpen(tb testing.TB, url, prefix string) *redisstore.Store {
	tb.Helper()
	s, err := redisstore.New(redisstore.Config{URL: url, Prefix: prefix})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) hub.Store {
		// The prefix follows the test name, so a second call from the same
		// subtest opens the same keys.
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}

func TestRecordConformance(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	storetest.RunRecords(t, func(t *testing.T) hub.Store {
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	}, func(t *testing.T, s hub.Store, id string, doc []byte, key hub.PubKey) {
		// Written as an older hub's script did, past Apply's checks.
		p := "test:" + t.Name() + ":"
		ctx := context.Background()
		if err := rdb.HSet(ctx, p+"keyindex", key.String(), id).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HSet(ctx, p+"devices", id, doc).Err(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestChannelConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunChannels(t, func(t *testing.T) storetest.ChannelStoreUnderTest {
		return mustOpen(t, srv.URL(), "test:"+t.Name()+":")
	})
}

// TestKillNineKeepsAcknowledgedWrites kills redis-server with SIGKILL while
// writers are appending, restarts it on the same directory, and checks that
// every Apply that returned nil is there and the chain is unbroken.
func TestKillNineKeepsAcknowledgedWrites(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := mustOpen(t, srv.URL(), "")
	defer s.Close()

	var (
		mu    sync.Mutex
		acked = map[uint64]hub.AuditEntry{}
		wg    sync.WaitGroup
	)
	// The kill comes once this many writes are acknowledged, so it lands
	// in the middle of a steady stream of Applies.
	const writers, killAfter = 4, 200
	enough := make(chan struct{})
	var once sync.Once
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				head, err := s.AuditHead(ctx)
				if err != nil {
					return // the server is gone
				}
				d := storetest.NewDevice(t)
				e, err := hub.NextAuditEntry(head, head.Time, hub.AuditEnrol, d.ID, fmt.Sprintf("writer-%d", w), nil)
				if err != nil {
					t.Error(err)
					return
				}
				err = s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e})
				if errors.Is(err, hub.ErrAuditConflict) {
					continue
				}
				if err != nil {
					return
				}
				mu.Lock()
				acked[e.Seq] = e
				if len(acked) >= killAfter {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	<-enough
	srv.Kill()
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}

	srv.Restart()
	s2 := mustOpen(t, srv.URL(), "")
	defer s2.Close()
	all, err := s2.AuditRange(ctx, 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var v hub.AuditVerifier
	for _, e := range all {
		if err := v.Next(e); err != nil {
			t.Fatalf("chain after restart: %v", err)
		}
	}
	for seq, e := range acked {
		if seq > uint64(len(all)) || all[seq-1].Hash != e.Hash {
			t.Fatalf("acknowledged entry %d lost in the crash (log has %d entries)", seq, len(all))
		}
		if _, err := s2.Device(ctx, e.Subject); err != nil {
			t.Fatalf("device of acknowledged entry %d: %v", seq, err)
		}
	}
	t.Logf("%d acknowledged entries survived SIGKILL; log holds %d", len(acked), len(all))
}

// TestTwoInstancesSerialize runs writers through two Stores, as two hubd
// processes would, on one prefix: the script must let only one extend each
// head.
func TestTwoInstancesSerialize(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := mustOpen(t, srv.URL(), "shared:")
	defer a.Close()
	b := mustOpen(t, srv.URL(), "shared:")
	defer b.Close()

	const writers = 16
	devs := make([]hub.Device, writers)
	for i := range devs {
		devs[i] = storetest.NewDevice(t)
	}
	var wg sync.WaitGroup
	for i, d := range devs {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				head, err := s.AuditHead(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				e, err := hub.NextAuditEntry(head, head.Time, hub.AuditEnrol, d.ID, "operator", nil)
				if err != nil {
					t.Error(err)
					return
				}
				err = s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e})
				if errors.Is(err, hub.ErrAuditConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		}()
	}
	wg.Wait()

	es, err := b.AuditRange(ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != writers {
		t.Fatalf("log has %d entries, want %d", len(es), writers)
	}
	var v hub.AuditVerifier
	for _, e := range es {
		if err := v.Next(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		if _, err := a.DeviceByKey(ctx, d.Key); err != nil {
			t.Fatalf("DeviceByKey(%s) via the other instance: %v", d.ID, err)
		}
	}
}

func TestPrefixesAreIsolated(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := mustOpen(t, srv.URL(), "a:")
	defer a.Close()
	b := mustOpen(t, srv.URL(), "b:")
	defer b.Close()

	d := storetest.NewDevice(t)
	storetest.MustApply(t, a, "tok", d)
	if _, err := b.DeviceByKey(ctx, d.Key); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("other prefix DeviceByKey error = %v, want ErrNotFound", err)
	}
	if h := storetest.MustHead(t, b); h.Seq != 0 {
		t.Fatalf("other prefix head seq = %d, want 0", h.Seq)
	}
	storetest.MustApply(t, b, "tok", d) // the token is per prefix too
}

func TestDurabilityWarning(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()

	open := func() string {
		var buf bytes.Buffer
		s, err := redisstore.New(redisstore.Config{
			URL:    srv.URL(),
			Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return buf.String()
	}

	t.Run("NoWarningWhenFsyncAlways", func(t *testing.T) {
		if out := open(); out != "" {
			t.Fatalf("unexpected warning: %s", out)
		}
	})
	t.Run("WarnsWhenFsyncEverySec", func(t *testing.T) {
		opts, _ := redis.ParseURL(srv.URL())
		c := redis.NewClient(opts)
		defer c.Close()
		if err := c.ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
			t.Fatal(err)
		}
		out := open()
		if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "appendfsync=everysec") {
			t.Fatalf("want a warning naming appendfsync=everysec, got %q", out)
		}
	})
}

func TestHealthy(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := mustOpen(t, srv.URL(), "")
	defer s.Close()
	if err := s.Healthy(ctx); err != nil {
		t.Fatalf("Healthy: %v", err)
	}
	srv.Kill()
	if err := s.Healthy(ctx); err == nil {
		t.Fatal("Healthy = nil with the server killed")
	}
	srv.Restart()
	if err := s.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after restart: %v", err)
	}
}

func TestNewFailsWithoutServer(t *testing.T) {
	srv := redistest.Start(t)
	url := srv.URL()
	srv.Kill()
	if _, err := redisstore.New(redisstore.Config{URL: url}); err == nil {
		t.Fatal("New succeeded with no server listening")
	}
}

// BenchmarkApply measures one acknowledged registry write at a time against
// a redis-server with appendfsync always.
func BenchmarkApply(b *testing.B) {
	srv := redistest.Start(b)
	s := mustOpen(b, srv.URL(), "")
	defer s.Close()
	devs := make([]hub.Device, b.N)
	for i := range devs {
		devs[i] = storetest.NewDevice(b)
	}
	b.ResetTimer()
	for i := range b.N {
		storetest.MustApply(b, s, "", devs[i])
	}
}

// BenchmarkApplyPayment measures durable payment updates per second against
// a redis-server with appendfsync always: Redis fsyncs once per event-loop
// turn, so concurrent clients share fsyncs. The pool has one connection per
// writer, as a hub with many devices in flight would use.
func BenchmarkApplyPayment(b *testing.B) {
	const channels, parallelism = 4096, 128
	srv := redistest.Start(b)
	s := mustOpen(b, fmt.Sprintf("%s?pool_size=%d", srv.URL(), 2*parallelism), "")
	defer s.Close()
	storetest.BenchApplyPayment(b, s, channels, parallelism)
}

// TestKillNineKeepsAcknowledgedPayments kills redis-server with SIGKILL
// while payers are applying updates, restarts it, and checks that every
// acknowledged payment is stored with its receipt and that no channel went
// past the last seq attempted on it.
func TestKillNineKeepsAcknowledgedPayments(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	// No command retries: each payer stops at its first error, so the pool
	// sees too few failed dials to start its background re-dialer, whose
	// one-second back-off outlives Close and would trip goleak.
	s := mustOpen(t, srv.URL()+"?max_retries=-1", "")

	const channels, payers, killAfter = 8, 16, 1000
	chans := make([]hub.ChannelRecord, channels)
	for i := range chans {
		chans[i] = storetest.NewChannel(t, fmt.Sprintf("dev-%d", i))
		storetest.MustPutChannel(t, s, chans[i])
	}
	var (
		mu           sync.Mutex
		acked, tried [channels]uint64
		nAcked       int
		wg           sync.WaitGroup
		once         sync.Once
	)
	enough := make(chan struct{})
	for w := range payers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; ; k++ {
				i := k % channels
				cur, err := s.Channel(ctx, chans[i].Funding)
				if err != nil {
					return // the server is gone
				}
				u := storetest.Payment(cur.Funding, cur.Seq+1, msat.Amount((cur.Seq+1)*1_000))
				mu.Lock()
				tried[i] = max(tried[i], u.Seq)
				mu.Unlock()
				_, err = s.ApplyPayment(ctx, u)
				if errors.Is(err, hub.ErrSeqConflict) {
					continue
				}
				if err != nil {
					return
				}
				mu.Lock()
				acked[i] = max(acked[i], u.Seq)
				if nAcked++; nAcked >= killAfter {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	<-enough
	srv.Kill()
	wg.Wait()
	s.Close()

	srv.Restart()
	s2 := mustOpen(t, srv.URL(), "")
	defer s2.Close()
	for i, c := range chans {
		got := storetest.MustChannel(t, s2, c.Funding)
		if got.Seq < acked[i] || got.Seq > tried[i] {
			t.Fatalf("channel %d: stored seq %d, acknowledged %d, attempted up to %d", i, got.Seq, acked[i], tried[i])
		}
		if got.Paid != msat.Amount(got.Seq*1_000) {
			t.Fatalf("channel %d: paid %d at seq %d", i, got.Paid, got.Seq)
		}
		rs, err := s2.Receipts(ctx, c.Funding, 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(rs)) != got.Seq {
			t.Fatalf("channel %d: %d receipts for seq %d", i, len(rs), got.Seq)
		}
		for j, r := range rs {
			if string(r) != string(storetest.Receipt(c.Funding, uint64(j+1))) {
				t.Fatalf("channel %d: receipt %d is not the one sent", i, j+1)
			}
		}
	}
	t.Logf("%d payments acknowledged before SIGKILL survived the restart", nAcked)
}

// BenchmarkManyChannels: a Redis store of 100,000 ready channels reopened
// and a channel manager started on it as a restarted hubd does (its first
// watcher round), the store's own listing beside, and payments among them
// (storetest.BenchManyChannels); redis-server's own RSS is reported
// beside. Run it with -benchtime=3x.
func BenchmarkManyChannels(b *testing.B) {
	srv := redistest.Start(b)
	storetest.BenchManyChannels(b, 100_000, func(tb testing.TB) storetest.ChannelStoreUnderTest {
		return mustOpen(tb, srv.URL()+"?pool_size=128", "")
	}, chantest.StartManager, func() uint64 { return storetest.ProcRSS(srv.Pid()) })
}
