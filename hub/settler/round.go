package settler

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// planAndSign plans r's epoch and runs the cooperative round until every
// transaction is signed, then stores r as signed with its raw
// transactions. A device that does not answer in time, refuses, or sends
// a bad partial signature is re-planned as absent (settled by its latest
// claim), and the round is run again for everyone with fresh nonces:
// re-signing all is simpler than proving which SINGLE|ANYONECANPAY pairs
// kept their index and amounts, and a round costs one nonce, one partial
// signature and two verifications per device.
func (s *Service) planAndSign(ctx context.Context, r *settlement.Run, chans []hub.Settleable) error {
	p, err := s.prepare(ctx, r.Epoch, chans)
	if err != nil {
		return err
	}
	el, anchor, in, info := p.el, p.anchor, p.in, p.info
	absent := make(map[btcwire.OutPoint]bool)
	for round := 1; ; round++ {
		for i := range in.Channels {
			if absent[in.Channels[i].Funding] {
				in.Channels[i].Cooperative = false
			}
		}
		sortCoopFirst(in.Channels)
		plan, err := in.Plan()
		if err != nil {
			return fmt.Errorf("plan epoch %d: %w", r.Epoch.Number, err)
		}
		if len(plan.Txs) == 0 {
			// Nothing left to move on chain (the cut found something,
			// the devices that made it have left): the run ends empty.
			return s.empty(ctx, r, &prepared{el: el, anchor: anchor, plan: plan})
		}
		closing, _, err := el.ledger.Close(plan.Settled)
		if err != nil {
			return fmt.Errorf("close epoch %d: %w", r.Epoch.Number, err)
		}
		// Close consumed the ledger; the next round needs a fresh one.
		if el, err = s.buildLedger(ctx, r.Epoch); err != nil {
			return err
		}
		r.Anchor, r.Closing, r.Fee = anchor, closing, plan.Fee
		if err := s.transition(ctx, r, settlement.RunSigning); err != nil {
			return err
		}
		failed := s.round(ctx, r.Epoch.Number, plan, info)
		if len(failed) == 0 {
			if err := s.signClaims(plan, info); err != nil {
				return err
			}
			r.Txs = r.Txs[:0]
			for _, t := range plan.Txs {
				var buf bytes.Buffer
				if err := t.Tx.Serialize(&buf); err != nil {
					return err
				}
				r.Txs = append(r.Txs, buf.Bytes())
			}
			s.log.Info("settlement signed", "epoch", r.Epoch.Number, "txs", len(plan.Txs),
				"fee", plan.Fee, "revenue", plan.Revenue, "carried", len(plan.Carried), "rounds", round)
			// Durable before anything is broadcast: a restarted hub
			// sends these same transactions.
			return s.transition(ctx, r, settlement.RunSigned)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, op := range failed {
			absent[op] = true
		}
		s.log.Info("cooperative round incomplete; re-planning the absent", "epoch", r.Epoch.Number,
			"round", round, "absent", len(failed))
		if err := s.transition(ctx, r, settlement.RunPlanned); err != nil {
			return err
		}
		if round >= defaultMaxRoundsPerRun {
			// Every round drops at least one device, so this only
			// bounds a pathological run; the rest settle by claim.
			for i := range in.Channels {
				absent[in.Channels[i].Funding] = true
			}
		}
	}
}

// prepared is an epoch's plan with what it was made from.
type prepared struct {
	el     *epochLedger
	anchor settlement.Anchor
	in     settlement.PlanInput
	info   map[btcwire.OutPoint]*chanInfo
	plan   *settlement.Plan
}

// prepare builds ep's ledger and anchor and plans its batch over chans at
// the current height, online devices as cooperative: what a run's first
// round, the cut's empty check and Preview all start from.
func (s *Service) prepare(ctx context.Context, ep settlement.Epoch, chans []hub.Settleable) (*prepared, error) {
	el, err := s.buildLedger(ctx, ep)
	if err != nil {
		return nil, err
	}
	anchor, err := s.anchor(ctx, el)
	if err != nil {
		return nil, err
	}
	height, err := s.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return nil, err
	}
	in, info, err := s.planInput(ctx, el, chans, anchor, uint32(height))
	if err != nil {
		return nil, err
	}
	sortCoopFirst(in.Channels)
	plan, err := in.Plan()
	if err != nil {
		return nil, fmt.Errorf("plan epoch %d: %w", ep.Number, err)
	}
	return &prepared{el: el, anchor: anchor, in: in, info: info, plan: plan}, nil
}

// sortCoopFirst puts cooperative pairs first, claims after: a device's
// index in the batch moves only when someone before it drops out.
func sortCoopFirst(cs []settlement.ChannelInput) {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Cooperative && !cs[j].Cooperative })
}

// chanInfo is what the round needs about a channel beside the plan input.
type chanInfo struct {
	rec    hub.ChannelRecord
	spent  msat.Amount
	earned msat.Amount
}

// planInput builds the plan input: each open channel with the part of its
// participant's net settled through it, and every other participant with
// a net as a payout.
//
// A participant's channels each settle what was paid on them in the
// epoch; the rest of its net (earnings, fees, carried balances) goes to
// its primary channel, the oldest ready one.
func (s *Service) planInput(ctx context.Context, el *epochLedger, chans []hub.Settleable,
	anchor settlement.Anchor, height uint32) (settlement.PlanInput, map[btcwire.OutPoint]*chanInfo, error) {

	in := settlement.PlanInput{
		RevenueScript: s.cfg.RevenueScript, Anchor: anchor, FeeRate: s.cfg.FeeRate,
		Height: height, ExpiryMargin: s.cfg.ExpiryMargin,
	}
	info := make(map[btcwire.OutPoint]*chanInfo, len(chans))
	nets := el.ledger.Nets()
	byDevice := make(map[string][]hub.Settleable)
	for _, c := range chans {
		byDevice[c.Record.DeviceID] = append(byDevice[c.Record.DeviceID], c)
	}
	devices := make([]string, 0, len(byDevice))
	for d := range byDevice {
		devices = append(devices, d)
	}
	sort.Strings(devices)
	for _, d := range devices {
		cs := byDevice[d]
		sort.SliceStable(cs, func(i, j int) bool {
			a, b := cs[i].Record, cs[j].Record
			if a.Status != b.Status {
				return a.Status == hub.ChannelReady
			}
			if !a.CreatedAt.Equal(b.CreatedAt) {
				return a.CreatedAt.Before(b.CreatedAt)
			}
			return hub.OutpointLess(a.Funding, b.Funding)
		})
		online := s.cfg.Cosigners.Online(d)
		script, err := s.payoutScript(ctx, d)
		if err != nil {
			return in, nil, err
		}
		rest := nets[d]
		for _, c := range cs {
			rest += el.spent[c.Record.Funding]
		}
		for i, c := range cs {
			op := c.Record.Funding
			net := -el.spent[op]
			ci := &chanInfo{rec: c.Record, spent: msat.Amount(el.spent[op])}
			if i == 0 {
				net += rest
				if e := el.ledger.Balance(settlement.Provider(d)); e > 0 {
					ci.earned = msat.Amount(e)
				}
			}
			info[op] = ci
			in.Channels = append(in.Channels, settlement.ChannelInput{
				Participant: d, Output: c.Output, Funding: op, Claim: c.Claim(), Net: net,
				Cooperative:  online && c.Record.Status == hub.ChannelReady,
				PayoutScript: script,
			})
		}
		delete(nets, d)
	}
	rest := make([]string, 0, len(nets))
	for p := range nets {
		rest = append(rest, p)
	}
	sort.Strings(rest)
	for _, p := range rest {
		script, err := s.payoutScript(ctx, p)
		if err != nil {
			return in, nil, err
		}
		in.Payouts = append(in.Payouts, settlement.PayoutInput{Participant: p, Net: nets[p], Script: script})
	}
	return in, info, nil
}

func (s *Service) payoutScript(ctx context.Context, id string) ([]byte, error) {
	if s.cfg.Payouts == nil {
		return nil, nil
	}
	script, err := s.cfg.Payouts.PayoutScript(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("payout script of %s: %w", id, err)
	}
	return script, nil
}

// coopJob is one cooperative input to sign.
type coopJob struct {
	tx *settlement.PlannedTx
	i  int
}

// round co-signs every cooperative input of plan with its device, at most
// RoundWorkers at a time, and returns the channels that failed.
func (s *Service) round(ctx context.Context, epoch uint64, plan *settlement.Plan, info map[btcwire.OutPoint]*chanInfo) []btcwire.OutPoint {
	var jobs []coopJob
	for _, t := range plan.Txs {
		for i, c := range t.Channels {
			if c.Mode == settlement.ModeCooperative {
				jobs = append(jobs, coopJob{t, i})
			}
		}
	}
	var (
		mu     sync.Mutex
		failed []btcwire.OutPoint
		wg     sync.WaitGroup
	)
	work := make(chan coopJob)
	workers := min(s.cfg.RoundWorkers, len(jobs))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				if err := s.cosign(ctx, epoch, j, info); err != nil {
					op := j.tx.Tx.TxIn[j.i].PreviousOutPoint
					s.log.Info("device left the cooperative round", "channel", op,
						"device", j.tx.Channels[j.i].Participant, "err", err)
					mu.Lock()
					failed = append(failed, op)
					mu.Unlock()
				}
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	return failed
}

// cosign runs one device's MuSig2 signing of its input: a fresh hub
// session (never stored: a crash loses it and the next round draws a new
// one), the proposal, the device's nonce and partial signature, and the
// combined signature, verified before it goes into the batch.
func (s *Service) cosign(ctx context.Context, epoch uint64, j coopJob, info map[btcwire.OutPoint]*chanInfo) error {
	pc := j.tx.Channels[j.i]
	op := j.tx.Tx.TxIn[j.i].PreviousOutPoint
	ci := info[op]
	if ci == nil {
		return fmt.Errorf("settler: no record of channel %v", op)
	}
	key, err := s.cfg.Channels.SettleKey(ci.rec)
	if err != nil {
		return err
	}
	msg, err := j.tx.CoopSigHash(j.i)
	if err != nil {
		return err
	}
	tmpl, err := j.tx.CoopTemplate(j.i)
	if err != nil {
		return err
	}
	sess, err := pc.Output.NewKeySession(key)
	if err != nil {
		return err
	}
	nonce := sess.PublicNonce()
	if s.cfg.NonceObserver != nil {
		s.cfg.NonceObserver(NonceUse{Channel: op, Nonce: nonce, Msg: msg})
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RoundTimeout)
	defer cancel()
	reply, err := s.cfg.Cosigners.Cosign(rctx, pc.Participant, CosignRequest{
		Epoch: epoch, Channel: op, Template: tmpl,
		NextCapacity: int64(pc.Next.Capacity), NextExpiry: pc.Next.Expiry,
		Spent: ci.spent, Earned: ci.earned, HubNonce: nonce,
	})
	if err != nil {
		return err
	}
	if _, err := sess.Sign(msg, reply.DeviceNonce); err != nil {
		return err
	}
	var sc btcec.ModNScalar
	if overflow := sc.SetBytes(&reply.PartialSig); overflow != 0 {
		return fmt.Errorf("settler: partial signature out of range")
	}
	final, err := sess.Combine(&musig2.PartialSignature{S: &sc})
	if err != nil {
		return err
	}
	return j.tx.SetCoopSignature(j.i, final)
}

// signClaims adds the hub's signature to every claim input.
func (s *Service) signClaims(plan *settlement.Plan, info map[btcwire.OutPoint]*chanInfo) error {
	for _, t := range plan.Txs {
		for i, c := range t.Channels {
			if c.Mode != settlement.ModeClaim {
				continue
			}
			op := t.Tx.TxIn[i].PreviousOutPoint
			key, err := s.cfg.Channels.SettleKey(info[op].rec)
			if err != nil {
				return err
			}
			if err := t.SignClaim(i, key); err != nil {
				return fmt.Errorf("claim of %v: %w", op, err)
			}
		}
		if !t.Signed() {
			return fmt.Errorf("settler: batch %v has unsigned inputs", t.Tx.TxHash())
		}
	}
	return nil
}
