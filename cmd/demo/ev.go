package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/ocppstation"
	"github.com/m2mhub/m2mhub/metering/ocmf"
	"github.com/m2mhub/m2mhub/msat"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
	"github.com/m2mhub/m2mhub/ocpp/gateway/m2mbilling"
)

// The EV session: a 10.8 kW charge from 22:40 to 23:25 on a Wednesday at
// station evStation, whose calibrated meter signs a reading every
// evMeterEvery of simulated time (0.03 kWh each); the station sends them
// a minute at a time. The gateway asks the car for a hold of evHoldMax.
const (
	evHoldMax      = msat.Amount(10_000_000)
	evMeterEvery   = 10 * time.Second
	evMeterValues  = 270 // 45 minutes of readings after the begin reading
	evKWhPerReport = "0.03"
	evStation      = "CS-BAY3"
	evPassword     = "demo-bay3-basic-auth" // 16 to 40 characters, as OCPP asks
	evToken        = "04A2B3C4"             // the car's RFID card
	evStartKWh     = "5210.000"             // the meter's register at the start
)

// evSummary is the charging session as the demo saw it.
type evSummary struct {
	HoldMaxMsat  uint64 `json:"hold_max_msat"`
	MeterEvents  int    `json:"meter_events"`
	EnergyKWh    string `json:"energy_kwh"`
	CapturedMsat uint64 `json:"captured_msat"`
	ReleasedMsat uint64 `json:"released_msat"`
	HoldStatus   string `json:"hold_status"`
	// Station, IDToken and EventID name the OCPP session: the event id
	// binds the meter's signed readings (ocmf.EventID).
	Station string `json:"station"`
	IDToken string `json:"id_token"`
	EventID string `json:"event_id"`
	// SignedReadings counts the OCMF readings the station sent, the
	// begin reading included.
	SignedReadings int `json:"signed_readings"`
	// CDRID is the session's CDR, printed in full under the summary's cdr.
	CDRID string `json:"cdr_id"`
}

// chargePoint is the CPO's side: a provider with a Meter over NATS and a
// Provider over BOLT 8 (for holds), which the OCPP gateway bills through.
type chargePoint struct {
	*provider
	holds *m2mclient.Provider
}

// newChargePoint enrols the CPO as a provider and connects both ways.
func (w *world) newChargePoint() (*chargePoint, error) {
	key := mustKey()
	p, err := w.newProvider("charge-point", key, nil)
	if err != nil {
		return nil, err
	}
	sess, err := m2mclient.Dial(w.ctx, w.rt.P2PAddr, w.hubKey, key, m2mclient.WithLogger(w.quiet))
	if err != nil {
		return nil, err
	}
	holds, err := m2mclient.NewProvider(sess, m2mclient.ProviderConfig{HubKey: w.hubKey, Logger: w.quiet})
	if err != nil {
		sess.Close()
		return nil, err
	}
	w.closers = append(w.closers, func() { _ = holds.Close(); _ = sess.Close() })
	return &chargePoint{provider: p, holds: holds}, nil
}

// startGateway runs the OCPP 2.0.1 gateway in process as cmd/ocppgw runs
// it: TLS (a certificate made for 127.0.0.1), basic auth per station, the
// station's meter key and the idToken map, billing through cp. It returns
// the stations' endpoint and the TLS config that trusts it.
func (w *world) startGateway(cp *chargePoint, contract *contracts.Contract, meterKey, carID string) (string, *tls.Config, error) {
	der, err := base64.StdEncoding.DecodeString(meterKey)
	if err != nil {
		return "", nil, err
	}
	pub, err := ocmf.ParsePublicKey(der)
	if err != nil {
		return "", nil, err
	}
	billing, err := m2mbilling.New(m2mbilling.Config{Holds: cp.holds, Meter: cp.meter, Contract: contract, HoldMsat: evHoldMax,
		MeterKeys: map[string]*ocmf.PublicKey{evStation: pub}, Logger: w.quiet})
	if err != nil {
		return "", nil, err
	}
	gw, err := gateway.New(gateway.Config{Stations: map[string]string{evStation: evPassword},
		Tokens: map[string]string{evToken: carID}, Billing: billing, Logger: w.quiet})
	if err != nil {
		return "", nil, err
	}
	cert, pool, err := ocppstation.SelfSigned()
	if err != nil {
		return "", nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ocpp/", gw)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with ErrServerClosed
	}()
	w.closers = append(w.closers, func() {
		_ = gw.Close() // the station connections first: Close waits for them
		_ = srv.Close()
		<-done
	})
	return "wss://" + ln.Addr().String() + "/ocpp", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// evSession runs the charging session through the OCPP gateway: a Go
// charging station boots, authorises the car's idToken, starts the
// transaction (the gateway asks the car for the hold), sends its meter's
// OCMF-signed readings (their own times are simulated: nothing sleeps)
// and ends it. The gateway bills the verified readings as one usage
// event; the hub prices it under the tariff, the car's payment captures
// it from the hold, the rest is released, and the hub issues the CDR.
func (w *world) evSession(cp *chargePoint, car *payer, start time.Time) error {
	ctx, say := w.ctx, w.say
	say("7. EV charging through the OCPP 2.0.1 gateway (ocpp/gateway, in process as cmd/ocppgw runs it)")
	meterKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	meter := &ocppstation.Meter{Key: meterKey, Serial: "DEMO-0000-0003", Token: evToken}
	pub, err := meter.PublicKey()
	if err != nil {
		return err
	}
	url, tlsConf, err := w.startGateway(cp, w.parsed["ev_charging"], pub, car.id)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	say("   the CPO registers station %s (basic-auth password, its meter's public key) and maps idToken %s to the car", evStation, evToken)
	st, err := ocppstation.Dial(ctx, ocppstation.DialConfig{URL: url, Station: evStation, Password: evPassword, TLS: tlsConf})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Boot(ctx, "AC-22", "m2mhub demo", 1); err != nil {
		return err
	}
	if err := st.Authorize(ctx, evToken); err != nil {
		return err
	}
	say("   station %s connected to %s (TLS, basic auth), booted; idToken %s authorised", evStation, url, evToken)

	// The meter's readings: the begin reading, then one every 10 s, the
	// last one ending the transaction.
	step, register := contracts.MustDec(evKWhPerReport).Decimal, contracts.MustDec(evStartKWh).Decimal
	readings := make([]ocppstation.Reading, 0, evMeterValues+1)
	for i := 0; i <= evMeterValues; i++ {
		tx := "C"
		switch i {
		case 0:
			tx = "B"
		case evMeterValues:
			tx = "E"
		}
		r, err := meter.Sign(i+1, start.Add(time.Duration(i)*evMeterEvery), tx, register.Add(step.Mul(contracts.MustDec(fmt.Sprint(i)).Decimal)))
		if err != nil {
			return err
		}
		readings = append(readings, r)
	}
	msgs := make([]*ocmf.Message, len(readings))
	for i, r := range readings {
		if msgs[i], err = ocmf.Parse(r.OCMF); err != nil {
			return err
		}
	}

	tx, err := st.Start(ctx, "ev-1", 1, evToken, readings[0])
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	hold, err := w.activeHold(car.id)
	if err != nil {
		return err
	}
	say("   transaction ev-1 started: the gateway asked the car for a hold of %d msat, the car's Device granted %s", uint64(evHoldMax), hold.ID)
	// A TransactionEvent Updated a minute; every 10 simulated minutes the
	// station shows the price so far, priced as the hub will.
	for i := 1; i < evMeterValues; i += 6 {
		batch := readings[i:min(i+6, evMeterValues)]
		if err := tx.Update(ctx, batch); err != nil {
			return err
		}
		n := i + len(batch) - 1
		if n%60 != 0 {
			continue
		}
		b, _, err := w.priceReadings(car.id, msgs[:n+1])
		if err != nil {
			return err
		}
		say("   %s  %3d signed readings, %6s kWh  → %9d msat so far", readings[n].Time.Format("Mon 15:04"), n,
			step.Mul(contracts.MustDec(fmt.Sprint(n)).Decimal).String(), uint64(b.TotalMsat))
	}
	if err := tx.End(ctx, readings[evMeterValues]); err != nil {
		return fmt.Errorf("end: %w", err)
	}
	want, _, err := w.priceReadings(car.id, msgs)
	if err != nil {
		return err
	}
	eventID := ocmf.EventID(msgs)
	say("   transaction ended: the gateway verified %d OCMF readings and metered them as event %s…", len(msgs), eventID[:20])

	// The receipt for the capture, then the session's CDR.
	r, cdrRaw, err := awaitSession(cp.provider, eventID)
	if err != nil {
		return err
	}
	if r.Amount != want.TotalMsat || r.HoldID == ([16]byte{}) || !ocmf.BindsReadings(r.Events[0], ocmfs(readings)) {
		return fmt.Errorf("receipt of %d msat for %v (hold %x), the tariff prices %d", uint64(r.Amount), r.Events, r.HoldID, uint64(want.TotalMsat))
	}
	w.evReceipt = r.Receipt
	w.sum.Receipts++
	hv, err := w.waitHold(car.id, hold.ID, hub.HoldReleased)
	if err != nil {
		return err
	}
	if hv.Captured != want.TotalMsat {
		return fmt.Errorf("hold captured %d msat, want %d", uint64(hv.Captured), uint64(want.TotalMsat))
	}
	var cdr contracts.CDR
	if err := json.Unmarshal(cdrRaw, &cdr); err != nil {
		return fmt.Errorf("CDR: %w", err)
	}
	rec, err := w.admin.CDR(ctx, cdr.ID)
	if err != nil {
		return fmt.Errorf("stored CDR: %w", err)
	}
	if cdr.M2MHub.TotalMsat != want.TotalMsat || rec.TotalMsat != want.TotalMsat {
		return fmt.Errorf("CDR total %d msat (stored %d), captured %d", uint64(cdr.M2MHub.TotalMsat), uint64(rec.TotalMsat), uint64(want.TotalMsat))
	}
	w.cdr = rec.CDR

	ev := &w.sum.EV
	ev.Station, ev.IDToken, ev.EventID, ev.SignedReadings, ev.CDRID = evStation, evToken, eventID, len(readings), cdr.ID
	ev.MeterEvents = evMeterValues
	ev.EnergyKWh = step.Mul(contracts.MustDec(fmt.Sprint(evMeterValues)).Decimal).String()
	ev.HoldMaxMsat, ev.CapturedMsat = uint64(evHoldMax), uint64(want.TotalMsat)
	ev.ReleasedMsat, ev.HoldStatus = uint64(evHoldMax-want.TotalMsat), string(hv.Status)
	cp.part.EarnedMsat += uint64(want.ProviderMsat)
	w.sum.FeesMsat += uint64(want.FeeMsat)
	w.sum.Rows = append(w.sum.Rows, scenarioRow{Scenario: "ev", Use: "OCPP session " + ev.EnergyKWh + " kWh, captured from the hold",
		Payer: car.name, Provider: cp.part.Name, AmountMsat: uint64(want.TotalMsat), FeeMsat: uint64(want.FeeMsat)})
	say("   captured %d msat (receipt verified, it binds the readings), released the other %d msat; hold %s",
		ev.CapturedMsat, ev.ReleasedMsat, hv.Status)
	printCDR(say, &cdr)
	return nil
}

// printCDR prints the short form of a session's CDR.
func printCDR(say func(string, ...any), c *contracts.CDR) {
	incl := "-"
	if c.TotalCost.InclVAT != nil {
		incl = c.TotalCost.InclVAT.String()
	}
	m := c.M2MHub
	say("   CDR %s: %s kWh, %s h; total %s %s excl. VAT, %s incl. VAT", c.ID, c.TotalEnergy, c.TotalTime, c.TotalCost.ExclVAT, c.Currency, incl)
	say("   paid %d msat by the car's channel (VAT %d msat on top; hub fee %d, charge point %d) at %s msat per %s",
		uint64(m.TotalMsat), uint64(m.VATMsat), uint64(m.FeeMsat), uint64(m.ProviderMsat), m.RateMsatPerUnit, c.Currency)
	if c.SignedData != nil {
		say("   signed_data: %d OCMF readings, meter key %s…", len(c.SignedData.SignedValues), c.SignedData.PublicKey[:16])
	}
}

func ocmfs(rs []ocppstation.Reading) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.OCMF
	}
	return out
}

// priceReadings prices signed readings as the gateway bills them and the
// hub prices them.
func (w *world) priceReadings(car string, msgs []*ocmf.Message) (contracts.Breakdown, contracts.Usage, error) {
	mvs, err := ocmf.MeterValues(msgs)
	if err != nil {
		return contracts.Breakdown{}, contracts.Usage{}, err
	}
	u, err := contracts.UsageFromMeterValues(contracts.Usage{Device: car}, mvs)
	if err != nil {
		return contracts.Breakdown{}, contracts.Usage{}, err
	}
	b, err := w.price("ev_charging", u)
	return b, u, err
}

// awaitSession reads the charge point's notices until the receipt and
// then the CDR of event id come.
func awaitSession(p *provider, id string) (*m2mclient.Receipt, json.RawMessage, error) {
	timeout := time.After(20 * time.Second)
	var r *m2mclient.Receipt
	for {
		select {
		case n, ok := <-p.notices:
			switch {
			case !ok:
				return nil, nil, errors.New("receipt stream ended")
			case n.Unpaid != nil:
				return nil, nil, fmt.Errorf("%s: unpaid (%s)", p.name, n.Unpaid.Reason)
			case n.Receipt != nil && len(n.Receipt.Events) == 1 && n.Receipt.Events[0] == id:
				r = n.Receipt
			case n.CDR != nil && len(n.CDREvents) == 1 && n.CDREvents[0] == id:
				if r == nil {
					return nil, nil, errors.New("the CDR came before the receipt")
				}
				return r, n.CDR, nil
			}
		case <-timeout:
			return nil, nil, fmt.Errorf("%s: no receipt and CDR for %s", p.name, id)
		}
	}
}

// activeHold is the car's one active hold.
func (w *world) activeHold(device string) (httpapi.HoldView, error) {
	hs, err := w.admin.Holds(w.ctx, device)
	if err != nil {
		return httpapi.HoldView{}, err
	}
	for _, h := range hs {
		if h.Status == hub.HoldActive {
			return h, nil
		}
	}
	return httpapi.HoldView{}, fmt.Errorf("no active hold of %s: %+v", device, hs)
}

// waitHold polls the device's holds until hold id has status, for up to
// 10 s.
func (w *world) waitHold(device, id string, status hub.HoldStatus) (httpapi.HoldView, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		hs, err := w.admin.Holds(w.ctx, device)
		if err != nil {
			return httpapi.HoldView{}, err
		}
		for _, h := range hs {
			if h.ID == id && h.Status == status {
				return h, nil
			}
		}
		if time.Now().After(deadline) {
			return httpapi.HoldView{}, fmt.Errorf("hold %s is not %s: %+v", id, status, hs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
