package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/metering"
)

// The EV session: a 10.8 kW charge from 22:40 to 23:25 on a Wednesday,
// one meter value every 10 seconds of simulated time (0.03 kWh each), under
// a hold of evHoldMax.
const (
	evHoldMax      = msat.Amount(10_000_000)
	evMeterEvery   = 10 * time.Second
	evMeterValues  = 270 // 45 minutes
	evKWhPerReport = "0.03"
)

// runScenarios enrols the participants, publishes the contracts, funds the
// payers' channels and runs the five use cases through the client
// libraries. The sessions stay open (w.close ends them): settlement needs
// the payers online to co-sign.
func runScenarios(w *world, chain *demoChain, carID string, carKey *btcec.PrivateKey) error {
	ctx, say := w.ctx, w.say
	say("5. the operator publishes one contract of each kind (hubctl contract publish)")
	w.parsed, w.hashes = map[string]*contracts.Contract{}, map[string]string{}
	for _, kind := range demoKinds {
		c, err := contracts.Parse([]byte(demoContracts[kind]))
		if err != nil {
			return fmt.Errorf("contract %s: %w", kind, err)
		}
		rec, err := w.admin.PublishContract(ctx, []byte(demoContracts[kind]))
		if err != nil {
			return fmt.Errorf("publish %s: %w", kind, err)
		}
		if rec.Hash != hub.Hash(c.Hash()) {
			return fmt.Errorf("hub hashes %s as %s, the demo as %x", kind, rec.Hash, c.Hash())
		}
		w.parsed[kind], w.hashes[kind] = c, rec.Hash.String()
		w.sum.Audited++
		say("   %-20s %s…", kind, rec.Hash.String()[:16])
	}

	say("6. payers and providers enrol; payers open 1,000,000 sat channels, funded by one regtest transaction")
	small := m2mclient.Policy{MaxPerPayment: 50_000_000, MaxPerHour: 100_000_000}
	car, err := w.newPayer("car", carID, carKey, small, nil, nil)
	if err != nil {
		return err
	}
	pharmacy, err := w.newPayer("pharmacy", "", mustKey(), m2mclient.Policy{MaxPerPayment: 200_000_000, MaxPerHour: 400_000_000},
		[]hub.Role{hub.RolePayer}, nil)
	if err != nil {
		return err
	}
	// A household both buys and sells: its Device, on the session's
	// shared Router, checks the hub's settlement figures against what
	// its own receipts say it earned.
	prosumer := []hub.Role{hub.RolePayer, hub.RoleProvider}
	var hhA, hhB *payer
	hhA, err = w.newPayer("household-a", "", mustKey(), small, prosumer,
		func(context.Context, uint64) (msat.Amount, error) {
			return msat.Amount(hhA.part.EarnedMsat), nil
		})
	if err != nil {
		return err
	}
	hhB, err = w.newPayer("household-b", "", mustKey(), small, prosumer,
		func(context.Context, uint64) (msat.Amount, error) {
			return msat.Amount(hhB.part.EarnedMsat), nil
		})
	if err != nil {
		return err
	}
	for _, hh := range []*payer{hhA, hhB} {
		p, err := m2mclient.NewProvider(hh.sess, m2mclient.ProviderConfig{HubKey: w.hubKey, Logger: w.quiet})
		if err != nil {
			return err
		}
		w.closers = append(w.closers, func() { _ = p.Close() })
	}
	sellerA, err := w.newProvider("household-a", hhA.key, hhA.part)
	if err != nil {
		return err
	}
	sellerB, err := w.newProvider("household-b", hhB.key, hhB.part)
	if err != nil {
		return err
	}
	gantries, err := w.newProvider("toll-operator", mustKey(), nil)
	if err != nil {
		return err
	}
	router, err := w.newProvider("mesh-router", mustKey(), nil)
	if err != nil {
		return err
	}
	truck, err := w.newProvider("reefer-truck", mustKey(), nil)
	if err != nil {
		return err
	}
	// The charge point sells over BOLT 8: it asks the car for a hold and
	// captures against it.
	cpKey := mustKey()
	cpDev, err := w.admin.AddDevice(ctx, httpapi.AddDeviceRequest{
		PubKey: hub.PubKeyOf(cpKey.PubKey()), Roles: []hub.Role{hub.RoleProvider}, Owner: "demo", Kind: "charger",
	})
	if err != nil {
		return fmt.Errorf("enrol charge point: %w", err)
	}
	w.sum.Audited++
	cpSess, err := m2mclient.Dial(ctx, w.rt.P2PAddr, w.hubKey, cpKey, m2mclient.WithLogger(w.quiet))
	if err != nil {
		return err
	}
	charger, err := m2mclient.NewProvider(cpSess, m2mclient.ProviderConfig{HubKey: w.hubKey, Logger: w.quiet})
	if err != nil {
		cpSess.Close()
		return err
	}
	w.closers = append(w.closers, func() { _ = charger.Close(); _ = cpSess.Close() })
	cpPart := w.addPart("charge-point", cpDev.ID, "provider")

	for _, p := range []*participant{cpPart, gantries.part, router.part, truck.part} {
		if err := w.setPayout(p); err != nil {
			return err
		}
	}
	fund, err := chain.fundChannels(ctx, []*payer{car, pharmacy, hhA, hhB})
	if err != nil {
		return err
	}
	for _, py := range []*payer{car, pharmacy, hhA, hhB} {
		py.part.Channel = py.ch.String()
	}
	say("   4 channels in %s; 4 providers without a channel get payout addresses", fund)

	now := time.Now()
	at := func(zone string, wd time.Weekday, hh, mm int) time.Time { return lastWeekday(now, zone, wd, hh, mm) }

	if err := w.evSession(charger, cpPart, car, at("Europe/Amsterdam", time.Wednesday, 22, 40)); err != nil {
		return fmt.Errorf("EV charging: %w", err)
	}

	say("8. metered uses over NATS: providers publish signed CloudEvents, the hub prices them with the contract,")
	say("   charges the payer's channel (the payer's Device signs automatically) and sends the provider a receipt")
	var sales []sale

	// Tolls: one vehicle past three gantries of one operator. At night
	// it tows a trailer and is classed as a truck.
	for i, p := range []struct {
		gantry, class string
		t             time.Time
		band          string
	}{
		{"G1 Ring 1 north", "car", at("Europe/Oslo", time.Monday, 7, 15), "morning peak"},
		{"G2 Ring 2 east", "car", at("Europe/Oslo", time.Monday, 12, 0), "daytime"},
		{"G3 Ring 3 west", "truck", at("Europe/Oslo", time.Monday, 23, 30), "night, with trailer"},
	} {
		id := fmt.Sprintf("passage-%d", i+1)
		sales = append(sales, sale{scenario: "toll", label: fmt.Sprintf("%s, %s, %s", p.gantry, p.class, p.band),
			prov: gantries, payer: car.part, kind: "toll", receipted: true,
			ev: metering.Event{ID: id, Subject: car.id, Time: rfc(p.t), Data: metering.Data{Contract: w.hashes["toll"],
				Quantity: "1", Unit: "passage", VehicleClass: p.class, Attributes: map[string]string{"gantry": p.gantry}}},
			usage: contracts.Usage{EventTime: p.t, Quantity: contracts.MustDec("1"), Unit: "passage", VehicleClass: p.class}})
	}

	// Bandwidth: the street's mesh router sells MB to both households;
	// each crosses the 1,000 MB tier boundary with its second report
	// (volume counts per buyer and month).
	bwTime := now.UTC().Add(-time.Minute).Truncate(time.Second)
	cum := map[string]int{}
	for i, b := range []struct {
		buyer *payer
		mb    int
	}{{hhA, 800}, {hhB, 600}, {hhA, 400}, {hhB, 600}} {
		id := fmt.Sprintf("mb-%d", i+1)
		sales = append(sales, sale{scenario: "bandwidth", label: fmt.Sprintf("%d MB to %s (%d MB before)", b.mb, b.buyer.name, cum[b.buyer.id]),
			prov: router, payer: b.buyer.part, kind: "bandwidth", receipted: true,
			ev: metering.Event{ID: id, Subject: b.buyer.id, Time: rfc(bwTime), Data: metering.Data{Contract: w.hashes["bandwidth"],
				Quantity: fmt.Sprint(b.mb), Unit: "MB"}},
			usage: contracts.Usage{EventTime: bwTime, Quantity: contracts.MustDec(fmt.Sprint(b.mb)), Unit: "MB",
				CumulativeMB: contracts.MustDec(fmt.Sprint(cum[b.buyer.id]))}})
		cum[b.buyer.id] += b.mb
	}

	// Energy: five 15-minute intervals of a Wednesday evening; the
	// evening band (0.28 EUR/kWh) starts at 17:00. Each household buys
	// and sells.
	for i, t := range []struct {
		seller, buyer *payer
		sp            *provider
		hh, mm        int
		kwh           string
	}{
		{hhB, hhA, sellerB, 16, 45, "1"}, {hhA, hhB, sellerA, 17, 0, "2"}, {hhA, hhB, sellerA, 17, 15, "1.5"},
		{hhB, hhA, sellerB, 17, 30, "0.5"}, {hhB, hhA, sellerB, 17, 45, "1"},
	} {
		start := at("Europe/Amsterdam", time.Wednesday, t.hh, t.mm)
		id := fmt.Sprintf("trade-%d", i+1)
		sales = append(sales, sale{scenario: "energy", label: fmt.Sprintf("%s kWh %s→%s, %02d:%02d-%s", t.kwh,
			t.seller.name[len("household-"):], t.buyer.name[len("household-"):], t.hh, t.mm, start.Add(15*time.Minute).Format("15:04")),
			prov: t.sp, payer: t.buyer.part, kind: "energy", receipted: true,
			ev: metering.Event{ID: id, Subject: t.buyer.id, Time: rfc(start), Data: metering.Data{Contract: w.hashes["energy"],
				Quantity: t.kwh, Unit: "kWh", SellerMeter: t.seller.id, BuyerMeter: t.buyer.id}},
			usage: contracts.Usage{EventTime: start, Quantity: contracts.MustDec(t.kwh), Unit: "kWh",
				SellerMeter: t.seller.id, BuyerMeter: t.buyer.id}})
	}

	// Cold chain: two shipments for the pharmacy. A start event holds
	// the amount; the end event's readings release it or refund it.
	ship := now.UTC().Add(-5 * time.Hour).Truncate(time.Second)
	if err := truck.meter.Meter(ctx,
		metering.Event{ID: "ship-1-start", Subject: pharmacy.id, Time: rfc(ship), Data: metering.Data{Contract: w.hashes["conditional_release"], Session: "ship-1", Start: rfc(ship)}},
		metering.Event{ID: "ship-2-start", Subject: pharmacy.id, Time: rfc(ship), Data: metering.Data{Contract: w.hashes["conditional_release"], Session: "ship-2", Start: rfc(ship)}},
	); err != nil {
		return err
	}
	held, err := contracts.HoldMsat(w.parsed["conditional_release"])
	if err != nil {
		return err
	}
	// The end of a job that is not open yet is refused: wait for both
	// holds.
	if err := waitIncome(ctx, w.admin, truck.id, func(in charging.Income) bool { return in.Held == 2*held }); err != nil {
		return fmt.Errorf("cold chain holds: %w", err)
	}
	for _, s := range []struct {
		id, session, label string
		temps              []string
		release            bool
	}{
		{"ship-1-end", "ship-1", "shipment 1 kept 2-8 °C: released", []string{"4.5", "5.1", "6.3", "6.0"}, true},
		{"ship-2-end", "ship-2", "shipment 2 hit 8.3 °C: refunded", []string{"4.5", "5.1", "8.3", "6.0"}, false},
	} {
		end := ship.Add(4 * time.Hour)
		ev := metering.Event{ID: s.id, Subject: pharmacy.id, Time: rfc(end), Data: metering.Data{
			Contract: w.hashes["conditional_release"], Session: s.session, Start: rfc(ship), End: rfc(end)}}
		u := contracts.Usage{Session: s.session, Start: ship, End: end}
		for i, v := range s.temps {
			rt := ship.Add(time.Duration(i+1) * time.Hour)
			ev.Data.Readings = append(ev.Data.Readings, metering.Reading{Time: rfc(rt), Value: v})
			u.Readings = append(u.Readings, contracts.Reading{Time: rt, Value: contracts.MustDec(v)})
		}
		sales = append(sales, sale{scenario: "cold chain", label: s.label, prov: truck, payer: pharmacy.part,
			kind: "conditional_release", receipted: s.release, ev: ev, usage: u})
	}

	if err := w.meterAll(sales); err != nil {
		return err
	}
	if err := waitIncome(ctx, w.admin, truck.id, func(in charging.Income) bool { return in.Held == 0 }); err != nil {
		return fmt.Errorf("cold chain refund: %w", err)
	}

	// What the payers paid is their own channel state; every provider's
	// earnings, by its own pricing, must be what the hub reports.
	for _, py := range []*payer{car, pharmacy, hhA, hhB} {
		b, err := py.dev.Balance(py.ch)
		if err != nil {
			return err
		}
		py.part.PaidMsat = uint64(b.Paid)
	}
	for _, p := range []*provider{gantries, router, truck, sellerA, sellerB} {
		in, err := w.admin.Income(ctx, p.id, time.Time{}, time.Now().Add(time.Hour))
		if err != nil {
			return err
		}
		if uint64(in.Earned) != p.part.EarnedMsat || in.Owed != 0 {
			return fmt.Errorf("%s: hub reports earned %d msat (owed %d), its receipts say %d",
				p.name, uint64(in.Earned), uint64(in.Owed), p.part.EarnedMsat)
		}
	}
	for _, p := range w.parts {
		p.NetMsat = int64(p.EarnedMsat) - int64(p.PaidMsat)
		w.sum.PaidMsat += p.PaidMsat
		w.sum.EarnedMsat += p.EarnedMsat
	}
	say("   payers paid %d msat = providers earned %d + hub fees %d", w.sum.PaidMsat, w.sum.EarnedMsat, w.sum.FeesMsat)
	if w.sum.PaidMsat != w.sum.EarnedMsat+w.sum.FeesMsat {
		return fmt.Errorf("the scenarios do not conserve: paid %d, earned %d + fees %d", w.sum.PaidMsat, w.sum.EarnedMsat, w.sum.FeesMsat)
	}
	return nil
}

// evSession runs the charging session: the charge point asks the car for a
// hold, meters the session every evMeterEvery of simulated time (the meter
// values carry their own times: nothing sleeps), prices it with the OCPI
// tariff as it goes, captures what was used and releases the rest.
func (w *world) evSession(cp *m2mclient.Provider, cpPart *participant, car *payer, start time.Time) error {
	ctx, say := w.ctx, w.say
	say("7. EV charging: the charge point asks the car for a hold of %d msat for the session (over BOLT 8)", uint64(evHoldMax))
	hold, err := cp.RequestHold(ctx, car.id, evHoldMax, 10*time.Minute, "charging session, bay 3")
	if err != nil {
		return err
	}
	say("   the car's Device authorised hold %s (its policy allows it)", hold)
	usage := contracts.Usage{Session: "ev-1", Start: start}
	step := contracts.MustDec(evKWhPerReport)
	var last contracts.Breakdown
	for i := range evMeterValues {
		t := start.Add(time.Duration(i) * evMeterEvery)
		usage.Periods = append(usage.Periods, contracts.ChargingPeriod{Start: t, EnergyKWh: step,
			PowerKW: contracts.MustDec("10.8"), State: contracts.StateCharging})
		usage.End = t.Add(evMeterEvery)
		if (i+1)%60 != 0 && i+1 != evMeterValues {
			continue
		}
		// Every 10 simulated minutes the charge point shows the price so
		// far on its screen.
		if last, err = w.price("ev_charging", usage); err != nil {
			return err
		}
		kwh := step.Mul(contracts.MustDec(fmt.Sprint(i + 1)).Decimal)
		say("   %s  %3d meter values, %6s kWh  → %9d msat so far", usage.End.Format("Mon 15:04"), i+1, kwh.String(), uint64(last.TotalMsat))
	}
	w.sum.EV.MeterEvents = evMeterValues
	w.sum.EV.EnergyKWh = step.Mul(contracts.MustDec(fmt.Sprint(evMeterValues)).Decimal).String()
	used := last.TotalMsat
	if err := cp.Capture(ctx, hold, used, "charging session, bay 3"); err != nil {
		return err
	}
	select {
	case r := <-cp.Receipts():
		if err := cp.VerifyReceipt(r); err != nil {
			return err
		}
		if r.Amount != used {
			return fmt.Errorf("capture receipt of %d msat, captured %d", uint64(r.Amount), uint64(used))
		}
		w.evReceipt = r
	case <-time.After(20 * time.Second):
		return errors.New("no receipt for the capture")
	case e := <-cp.Errors():
		return e
	}
	w.sum.Receipts++
	if err := cp.Release(ctx, hold); err != nil {
		return err
	}
	var hv httpapi.HoldView
	deadline := time.Now().Add(10 * time.Second)
	for hv.Status != hub.HoldReleased {
		if time.Now().After(deadline) {
			return fmt.Errorf("hold is %+v after release", hv)
		}
		hs, err := w.admin.Holds(ctx, car.id)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.ID == hold.String() {
				hv = h
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hv.Captured != used {
		return fmt.Errorf("hold captured %d msat, want %d", uint64(hv.Captured), uint64(used))
	}
	w.sum.EV.HoldMaxMsat, w.sum.EV.CapturedMsat = uint64(evHoldMax), uint64(used)
	w.sum.EV.ReleasedMsat, w.sum.EV.HoldStatus = uint64(evHoldMax-used), string(hv.Status)
	// A capture is a payment the car signs against its hold, not a
	// metered charge: the hub takes no fee on it.
	cpPart.EarnedMsat += uint64(used)
	w.sum.Rows = append(w.sum.Rows, scenarioRow{Scenario: "ev", Use: "session " + w.sum.EV.EnergyKWh + " kWh, captured from the hold",
		Payer: car.name, Provider: cpPart.Name, AmountMsat: uint64(used)})
	say("   captured %d msat (receipt verified), released the other %d msat; hold %s", uint64(used), uint64(evHoldMax-used), hv.Status)
	return nil
}

func mustKey() *btcec.PrivateKey {
	k, err := btcec.NewPrivateKey()
	if err != nil {
		panic(err) // only when the system's randomness fails
	}
	return k
}
