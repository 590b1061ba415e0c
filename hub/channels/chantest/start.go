package chantest

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/storetest"
)

// StartHeight is the chain height StartManager's chain is at: below the
// expiry of storetest's channels, so the expiry scan claims none.
const StartHeight = 800_000

// StartManager builds a channel manager on s as cmd/hubd does at start
// (its own hub key and payout script, regtest, a chain at StartHeight
// with no outputs), starts it and returns it once the watcher's first
// round is over (Manager.Ready): what a restarted hub does with its
// channels before its start-up work is done. It is
// storetest.BenchManyChannels' start; s must also be a channels.Devices,
// as both stores are. The manager is closed at the end of tb too.
func StartManager(tb testing.TB, s storetest.ChannelStoreUnderTest) io.Closer {
	tb.Helper()
	st, ok := s.(interface {
		hub.ChannelStore
		channels.Devices
	})
	if !ok {
		tb.Fatalf("%T is not a channels.Devices", s)
	}
	payout, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(MustKey(tb).PubKey()))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := channels.New(channels.Config{
		Store: st, Devices: st, Sessions: session.NewDirectory(), Chain: NewFakeChain(StartHeight),
		HubKey: MustKey(tb), PayoutScript: payout, Params: &chaincfg.RegressionNetParams,
		Logger: Quiet(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	m.Start()
	tb.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	select {
	case <-m.Ready():
	case <-ctx.Done():
		tb.Fatal("channel manager's first watcher round did not end within 10 minutes")
	}
	return m
}
