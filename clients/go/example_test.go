package m2mclient_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
)

// key returns a fixed private key, so the examples print the same output on
// every run.
func key(seed byte) *btcec.PrivateKey {
	var b [32]byte
	b[0], b[31] = 1, seed
	k, _ := btcec.PrivKeyFromBytes(b[:])
	return k
}

// A spending policy caps what a device signs, whoever asks.
func ExampleLimiter() {
	clk := clock.NewTestClock(time.Date(2025, 1, 1, 8, 0, 0, 0, time.UTC))
	l := m2mclient.NewLimiter(m2mclient.Policy{
		MaxPerPayment:    50_000, // 50 sat
		MaxPerHour:       100_000,
		AllowedProviders: []string{"charger-1", "toll-7"},
	}, clk)

	try := func(provider string, msat uint64) {
		_, err := l.Spend(provider, lnwireMsat(msat))
		switch {
		case errors.Is(err, m2mclient.ErrPolicy):
			fmt.Printf("%s %d msat: refused\n", provider, msat)
		case err != nil:
			fmt.Println(err)
		default:
			fmt.Printf("%s %d msat: ok\n", provider, msat)
		}
	}
	try("charger-1", 40_000)
	try("charger-1", 60_000) // over the per-payment limit
	try("rogue", 1)          // not on the allow list
	try("toll-7", 50_000)
	try("toll-7", 20_000) // would make 110,000 within the hour
	clk.SetTime(clk.Now().Add(time.Hour))
	try("toll-7", 20_000) // the first payment left the window
	fmt.Println("spent in the last hour:", uint64(l.SpentLastHour()))
	// Output:
	// charger-1 40000 msat: ok
	// charger-1 60000 msat: refused
	// rogue 1 msat: refused
	// toll-7 50000 msat: ok
	// toll-7 20000 msat: refused
	// toll-7 20000 msat: ok
	// spent in the last hour: 20000
}

// A FileStore keeps one JSON file per channel; a restarted device reloads
// them.
func ExampleFileStore() {
	dir, _ := os.MkdirTemp("", "m2mclient-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	s, _ := m2mclient.NewFileStore(dir)
	st := m2mclient.ChannelState{
		PendingID: [32]byte{1}, HubKey: key(2).PubKey(),
		Capacity: 100_000, Expiry: 500, Status: m2mclient.StatusReady,
		Funding: wire.OutPoint{Hash: chainhash.Hash{7}, Index: 0},
		Seq:     2, Paid: 2_500,
	}
	if err := s.Save(ctx, st); err != nil {
		fmt.Println(err)
		return
	}

	reopened, _ := m2mclient.NewFileStore(dir)
	chans, _ := reopened.Load(ctx)
	for _, c := range chans {
		fmt.Printf("%s seq %d paid %d msat of %d sat\n", c.Status, c.Seq, uint64(c.Paid), int64(c.Capacity))
	}
	// Output:
	// ready seq 2 paid 2500 msat of 100000 sat
}

// A device gets its money back alone once the channel expired: no hub, no
// session, only its own records.
func ExampleDevice_Refund() {
	dir, _ := os.MkdirTemp("", "m2mclient-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	deviceKey, hubChanKey := key(1), key(2).PubKey()

	// What OpenChannel and Funded saved.
	funding := wire.OutPoint{Hash: chainhash.Hash{7}, Index: 1}
	s, _ := m2mclient.NewFileStore(dir)
	_ = s.Save(ctx, m2mclient.ChannelState{
		PendingID: [32]byte{1}, HubKey: hubChanKey, Capacity: 100_000, Expiry: 800,
		Funding: funding, Status: m2mclient.StatusReady,
	})

	d, err := m2mclient.NewDevice(nil, m2mclient.DeviceConfig{
		Key: deviceKey, HubKey: key(3).PubKey(), Params: &chaincfg.RegressionNetParams, Store: s,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	dest := []byte{txscript.OP_1, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
		17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	tx, err := d.Refund(ctx, funding, dest, 500)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Check it once more, independently, with btcd's script engine.
	out, _ := channel.NewOutput(channel.Params{DeviceKey: deviceKey.PubKey(), HubKey: hubChanKey, Capacity: 100_000, Expiry: 800})
	fetcher := txscript.NewCannedPrevOutputFetcher(out.PkScript(), 100_000)
	vm, _ := txscript.NewEngine(out.PkScript(), tx, 0, txscript.StandardVerifyFlags, nil,
		txscript.NewTxSigHashes(tx, fetcher), 100_000, fetcher)
	fmt.Println("spends", tx.TxIn[0].PreviousOutPoint == funding)
	fmt.Println("lock time", tx.LockTime, "pays", tx.TxOut[0].Value, "sat")
	fmt.Println("script check:", vm.Execute())

	b, _ := d.Balance(funding)
	fmt.Println("available msat:", uint64(b.Available))
	// Output:
	// spends true
	// lock time 800 pays 99500 sat
	// script check: <nil>
	// available msat: 99670000
}

func lnwireMsat(v uint64) msat.Amount { return msat.Amount(v) }
