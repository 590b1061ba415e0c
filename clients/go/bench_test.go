package m2mclient_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// benchDevices is how many devices pay at once in the Devices100 benchmark
// (DESIGN.md §8: max sustained payments/s with 100 concurrent devices).
const benchDevices = 100

// benchPayer is one device with its own session and one ready channel.
type benchPayer struct {
	dev  *m2mclient.Device
	chID btcwire.OutPoint
}

// BenchmarkPay measures payments through the Go client against an
// in-process hub on loopback (real BOLT 8 session, real channel manager,
// bbolt store with fsync, device FileStore with fsync), in one setup:
//
//   - RoundTrip: one device paying sequentially (light load); reports the
//     p50 and p99 of one Pay call, signature, device fsyncs, hub verify and
//     commit, receipt check included.
//   - Devices100: benchDevices devices, each with its own session and
//     channel, each paying sequentially; reports payments/s and latency.
//   - VerifyBaseline: one claim signature check on this machine at the
//     same moment, the unit the other two are compared with.
//   - FsyncBaseline: one small append to a file in the test's temporary
//     directory (where the device store lives) and its fsync, the other
//     unit.
func BenchmarkPay(b *testing.B) {
	h := hubtest.Start(b, hubtest.Config{
		Channels: func(c *channels.Config) { c.PayRate, c.PayBurst = 1_000_000, 1_000_000 },
		// Every device dials from 127.0.0.1: lift the per-IP session bound.
		Server: func(c *session.Config) { c.MaxSessionsPerIP = 2 * benchDevices },
	})
	_, provID := h.EnrolDevice(b, hub.RoleProvider)
	payers := openPayers(b, h, benchDevices)
	ctx := context.Background()

	b.Run("RoundTrip", func(b *testing.B) {
		p := payers[0]
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := p.dev.Pay(ctx, p.chID, provID, 1, ""); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		reportLatency(b, lat)
	})

	b.Run("Devices100", func(b *testing.B) {
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			lat = make([]time.Duration, 0, b.N)
		)
		b.ResetTimer()
		for i, p := range payers {
			// b.N payments in all, spread evenly.
			n := b.N / len(payers)
			if i < b.N%len(payers) {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]time.Duration, 0, n)
				for range n {
					start := time.Now()
					if _, err := p.dev.Pay(ctx, p.chID, provID, 1, ""); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "payments/s")
		reportLatency(b, lat)
	})

	b.Run("VerifyBaseline", func(b *testing.B) {
		key := hubtest.NewKey(b)
		out, err := channel.NewOutput(channel.Params{DeviceKey: key.PubKey(), HubKey: h.PubKey(), Capacity: 1_000_000, Expiry: 900_000})
		if err != nil {
			b.Fatal(err)
		}
		st := channel.State{Seq: 1, Paid: 5_000}
		sig, err := out.SignClaim(key, st)
		if err != nil {
			b.Fatal(err)
		}
		raw := sig.Serialize()
		b.ResetTimer()
		for range b.N {
			s, err := schnorr.ParseSignature(raw)
			if err != nil {
				b.Fatal(err)
			}
			if err := out.VerifyClaim(st, s); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("FsyncBaseline", func(b *testing.B) { benchFsync(b, b.TempDir()) })
}

// benchFsync measures one small append and its fsync in dir, the unit a
// durable write costs on this disk.
func benchFsync(b *testing.B, dir string) {
	f, err := os.OpenFile(filepath.Join(dir, "fsync-baseline"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, 200)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

func openPayers(b *testing.B, h *hubtest.Hub, n int) []benchPayer {
	payers := make([]benchPayer, n)
	for i := range payers {
		key, _ := h.EnrolDevice(b, hub.RolePayer)
		s := h.Dial(b, key)
		payers[i].dev = h.NewDevice(b, s, key, m2mclient.DeviceConfig{})
	}
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	expiry := h.Height(b) + hubtest.DefaultExpiryDelta
	// One funding transaction for every channel: a wallet send per channel
	// rescans the faucet's history each time and takes minutes for 100.
	offers := make([]*m2mclient.PendingChannel, n)
	outs := make([]*btcwire.TxOut, n)
	for i := range payers {
		pc, err := payers[i].dev.OpenChannel(ctx, 1_000_000, expiry)
		if err != nil {
			b.Fatal(err)
		}
		offers[i], outs[i] = pc, btcwire.NewTxOut(int64(pc.Capacity), pc.PkScript)
	}
	txid, err := h.Wallet().SendMany(ctx, outs)
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var miner, funded sync.WaitGroup
	miner.Add(1)
	go func() {
		defer miner.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_, _ = h.Node().Mine(ctx, 1)
			}
		}
	}()
	errs := make([]error, n)
	for i := range payers {
		funded.Add(1)
		go func() {
			defer funded.Done()
			// SendMany puts output i at index i. Funded may be called
			// again with the same output: on a loaded machine a session
			// can drop while it waits, and the Session reconnects.
			op := btcwire.OutPoint{Hash: txid, Index: uint32(i)}
			c, err := payers[i].dev.Funded(ctx, offers[i].PendingID, op)
			for try := 0; errors.Is(err, m2mclient.ErrNotConnected) && try < 50 && ctx.Err() == nil; try++ {
				// Waits for the reconnect, whose backoff has no signal
				// to wait on from outside the Session.
				time.Sleep(200 * time.Millisecond)
				c, err = payers[i].dev.Funded(ctx, offers[i].PendingID, op)
			}
			if err == nil {
				payers[i].chID = c.ID
			}
			errs[i] = err
		}()
	}
	funded.Wait()
	close(stop)
	miner.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return payers
}

// reportLatency reports the median and 99th percentile of lat in µs.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
