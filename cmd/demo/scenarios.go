package main

import (
	"context"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/metering"
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
		doc, err := contractDoc(kind)
		if err != nil {
			return fmt.Errorf("contract %s: %w", kind, err)
		}
		c, err := contracts.Parse(doc)
		if err != nil {
			return fmt.Errorf("contract %s: %w", kind, err)
		}
		rec, err := w.admin.PublishContract(ctx, doc)
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
	// The charge point is a CPO behind the OCPP gateway: a provider over
	// NATS (the gateway's usage events) and over BOLT 8 (its holds).
	charger, err := w.newChargePoint()
	if err != nil {
		return err
	}
	cpPart := charger.part

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

	if err := w.evSession(charger, car, at("Europe/Amsterdam", time.Wednesday, 22, 40)); err != nil {
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
	for _, p := range []*provider{charger.provider, gantries, router, truck, sellerA, sellerB} {
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

func mustKey() *btcec.PrivateKey {
	k, err := btcec.NewPrivateKey()
	if err != nil {
		panic(err) // only when the system's randomness fails
	}
	return k
}
