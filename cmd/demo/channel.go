package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/channel"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/settlement/btcdchain"
)

// channelDemo opens a channel from the car to the hub on regtest, pays a
// charge point through it, and closes it cooperatively, reading every
// amount back from the chain.
func channelDemo(ctx context.Context, say func(string, ...any), dir string, rt datadir.Runtime,
	hubKey *btcec.PublicKey, admin *httpapi.Client, carKey *btcec.PrivateKey, sum *summary) error {

	if rt.Btcd == nil {
		return errors.New("hubd runs no regtest btcd of its own; the channel demo needs one")
	}
	params := &chaincfg.RegressionNetParams
	quiet := slog.New(slog.DiscardHandler)
	chain, err := btcdchain.New(btcdchain.Config{
		Host: rt.Btcd.Host, User: rt.Btcd.User, Pass: rt.Btcd.Pass, CertPath: rt.Btcd.CertPath,
		Params: params, Logger: quiet,
	})
	if err != nil {
		return err
	}
	defer chain.Close()
	// The hub mines regtest blocks to its own wallet; the demo borrows it
	// as a faucet. Any wallet may fund a channel.
	faucet, err := btcdchain.NewWallet(btcdchain.WalletConfig{
		KeyPath: filepath.Join(dir, datadir.WalletKeyFile), Chain: chain, Logger: quiet,
	})
	if err != nil {
		return err
	}

	say("5. a charge point enrols as a provider and connects")
	cpKey, err := btcec.NewPrivateKey()
	if err != nil {
		return err
	}
	cp, err := admin.AddDevice(ctx, httpapi.AddDeviceRequest{
		PubKey: hub.PubKeyOf(cpKey.PubKey()), Roles: []hub.Role{hub.RoleProvider}, Owner: "demo energy", Kind: "charger",
	})
	if err != nil {
		return fmt.Errorf("enrol charge point: %w", err)
	}
	cpSess, err := m2mclient.Dial(ctx, rt.P2PAddr, hubKey, cpKey, m2mclient.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer cpSess.Close()
	provider, err := m2mclient.NewProvider(cpSess, m2mclient.ProviderConfig{HubKey: hubKey, Logger: quiet})
	if err != nil {
		return err
	}
	defer provider.Close()
	say("   %s", cp.ID)

	say("6. the car opens a 100,000 sat channel: the hub offers a taproot output, a regtest wallet funds it")
	carSess, err := m2mclient.Dial(ctx, rt.P2PAddr, hubKey, carKey, m2mclient.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer carSess.Close()
	stateDir, err := os.MkdirTemp("", "m2mhub-demo-car-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	car, err := m2mclient.NewDevice(carSess, m2mclient.DeviceConfig{
		Key: carKey, HubKey: hubKey, Params: params, Dir: stateDir, Logger: quiet,
		Policy: m2mclient.Policy{MaxPerPayment: 50_000_000, MaxPerHour: 80_000_000},
	})
	if err != nil {
		return err
	}
	defer car.Close()
	height, err := chain.BlockCount(ctx)
	if err != nil {
		return err
	}
	const capacity = btcutil.Amount(100_000)
	ch, err := openMining(ctx, chain, func(ctx context.Context) (*m2mclient.Channel, error) {
		lookup := func(ctx context.Context, id chainhash.Hash) (*btcwire.MsgTx, error) {
			info, err := chain.GetTx(ctx, id)
			return info.Tx, err
		}
		return car.FundAndOpen(ctx, faucet, lookup, capacity, uint32(height)+1000)
	})
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	sum.Channel.Outpoint = ch.ID.String()
	sum.Channel.CapacitySat = int64(capacity)
	say("   channel %s ready after 1 confirmation, expires at height %d", ch.ID, uint32(height)+1000)

	say("7. the car pays the charge point three times; each payment is a signed channel state")
	amounts := []lnwire.MilliSatoshi{12_345_678, 2_500_500, 777}
	for i, amt := range amounts {
		start := time.Now()
		r, err := car.Pay(ctx, ch.ID, cp.ID, amt, fmt.Sprintf("charging session, part %d", i+1))
		if err != nil {
			return fmt.Errorf("pay %d: %w", i+1, err)
		}
		sum.Channel.Payments++
		sum.Channel.PaidMsat = uint64(r.Paid)
		say("   paid %d msat in %v: seq %d, cumulative %d msat, receipt %x…", uint64(amt),
			time.Since(start).Round(time.Microsecond), r.Seq, uint64(r.Paid), idPrefix(r))
	}
	for range amounts {
		select {
		case r := <-provider.Receipts():
			if err := provider.VerifyReceipt(r); err != nil {
				return err
			}
			sum.Channel.ProviderReceipt++
		case <-time.After(10 * time.Second):
			return errors.New("the charge point did not get its receipts")
		}
	}
	bal, err := car.Balance(ch.ID)
	if err != nil {
		return err
	}
	sum.Channel.ClaimableSat = int64(lnwire.MilliSatoshi(sum.Channel.PaidMsat).ToSatoshis())
	say("   the charge point holds %d hub-signed receipts; the car's balance: %d of %d sat left", sum.Channel.ProviderReceipt,
		int64(capacity)-int64(bal.Paid.ToSatoshis()), int64(capacity))
	say("   the hub can claim %d sat on chain with the car's latest signature; the %d msat below a satoshi is the hub's credit",
		sum.Channel.ClaimableSat, sum.Channel.PaidMsat%1000)

	say("   the car closes the channel cooperatively (MuSig2 key path)")
	dest, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(carKey.PubKey()))
	if err != nil {
		return err
	}
	tx, err := car.CloseChannel(ctx, ch.ID, dest)
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	txid := tx.TxHash()
	if _, err := chain.Mine(ctx, 1); err != nil {
		return err
	}
	conf, err := chain.Confirmations(ctx, txid)
	if err != nil || conf < 1 {
		return fmt.Errorf("close transaction %s not confirmed: %v", txid, err)
	}
	info, err := chain.GetTx(ctx, txid)
	if err != nil {
		return err
	}
	for _, out := range info.Tx.TxOut {
		if string(out.PkScript) == string(dest) {
			sum.Channel.DeviceGotSat += out.Value
		}
	}
	sum.Channel.CloseTxID = txid.String()
	say("   close %s confirmed: the car got %d sat back on chain", txid, sum.Channel.DeviceGotSat)
	// The hub's share pays the close fee, so the car gets exactly what it
	// did not sign away.
	if want := int64(capacity) - sum.Channel.ClaimableSat; sum.Channel.DeviceGotSat != want {
		return fmt.Errorf("car got %d sat back, want %d", sum.Channel.DeviceGotSat, want)
	}
	return nil
}

// openMining runs open while mining a regtest block every 200 ms, so the
// funding transaction reaches the depth the hub waits for.
func openMining(ctx context.Context, chain *btcdchain.Client, open func(context.Context) (*m2mclient.Channel, error)) (*m2mclient.Channel, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	done := make(chan struct{})
	mined := make(chan struct{})
	go func() {
		defer close(mined)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				_, _ = chain.Mine(ctx, 1)
			}
		}
	}()
	ch, err := open(ctx)
	close(done)
	<-mined
	return ch, err
}

func idPrefix(r *channel.Receipt) []byte {
	id := r.ID()
	return id[:6]
}
