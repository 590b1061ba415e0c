package loadtest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/m2mhub/m2mhub/internal/natsembed"
	"github.com/m2mhub/m2mhub/metering"
)

// VerifyCeiling measures schnorr signature checks per second with one
// goroutine per core for d: the cost the hub pays at least once per
// channel payment, so payments/s can never pass it on this machine. It
// returns the rate and the cores used.
func VerifyCeiling(ctx context.Context, d time.Duration) (float64, int, error) {
	key, err := btcec.NewPrivateKey()
	if err != nil {
		return 0, 0, err
	}
	msg := sha256.Sum256([]byte("m2mhub load test verify ceiling"))
	sig, err := schnorr.Sign(key, msg[:])
	if err != nil {
		return 0, 0, err
	}
	pub := key.PubKey()
	cores := runtime.GOMAXPROCS(0)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Int64
	var bad atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for range cores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// Check in rounds of 64 to keep the context poll cheap.
				for range 64 {
					if !sig.Verify(msg[:], pub) {
						bad.Store(true)
					}
				}
				n.Add(64)
			}
		}()
	}
	wg.Wait()
	if bad.Load() {
		return 0, 0, fmt.Errorf("loadtest: a valid signature failed to verify")
	}
	return float64(n.Load()) / time.Since(start).Seconds(), cores, nil
}

// JetStreamCeiling measures how fast an embedded nats-server with hubd's
// settings (JetStream on disk, SyncAlways) acknowledges batch messages
// like the run's: batch events each, published asynchronously with up to
// 256 in flight, for about d, with nothing consuming them. It returns
// events/s and messages/s.
func JetStreamCeiling(ctx context.Context, d time.Duration, batch int) (float64, float64, error) {
	dir, err := os.MkdirTemp("", "m2mhub-loadtest-js-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), SyncAlways: true})
	if err != nil {
		return 0, 0, err
	}
	defer srv.Close()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		return 0, 0, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "CEILING", Subjects: []string{"ceiling.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		return 0, 0, err
	}
	// Bodies as the run's meters send them: toll passages, one batch
	// signature in a header.
	key, err := btcec.NewPrivateKey()
	if err != nil {
		return 0, 0, err
	}
	s := newEventSchedule(1, 0, KindToll, "ceiling", fmt.Sprintf("%064x", 0), "ceiling", []string{"payer"})
	evs := s.batch(0, batch, time.Now())
	for i := range evs {
		evs[i].Source, evs[i].SpecVersion, evs[i].Type = "ceiling", metering.SpecVersion, metering.EventType
	}
	body, err := metering.EncodeBatch(evs)
	if err != nil {
		return 0, 0, err
	}
	sig, err := metering.SignBatch(evs, key)
	if err != nil {
		return 0, 0, err
	}
	msgs := 0
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		for range 64 {
			m := nats.NewMsg("ceiling.x")
			m.Data = body
			m.Header.Set(metering.HeaderBatchSig, sig)
			m.Header.Set(nats.MsgIdHdr, "c"+strconv.Itoa(msgs))
			if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
				return 0, 0, err
			}
			msgs++
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return 0, 0, fmt.Errorf("loadtest: ceiling publishes not acknowledged")
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	el := time.Since(start).Seconds()
	return float64(msgs*batch) / el, float64(msgs) / el, nil
}
