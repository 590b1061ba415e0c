package loadtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
)

// opTimeout bounds one operation; the run's deadline stops scheduling new
// ones, and those in flight finish (or time out) and are recorded.
const opTimeout = 30 * time.Second

// errorKind names an error for the report: the operation, then the hub's
// refusal code when there is one, else the class of failure.
func errorKind(op string, err error) string {
	var ce *m2mclient.ChannelError
	var re *m2mclient.RefusedError
	switch {
	case errors.As(err, &ce):
		return op + ":refused:" + ce.Code
	case errors.As(err, &re):
		return op + ":session-refused:" + re.Code
	case errors.Is(err, context.DeadlineExceeded):
		return op + ":timeout"
	case errors.Is(err, context.Canceled):
		return op + ":canceled"
	case errors.Is(err, m2mclient.ErrPolicy):
		return op + ":policy"
	case errors.Is(err, m2mclient.ErrNotReady):
		return op + ":not-ready"
	case errors.Is(err, m2mclient.ErrBadReceipt):
		return op + ":bad-receipt"
	}
	return op + ":other"
}

// batchTimes remembers when each of a provider's batches was made and
// when JetStream acknowledged it, so a receipt's latency can be measured
// from the batch its events came in: from its making (the wait for room
// in the provider's window included) and from its acknowledgement (the
// hub's part alone).
type batchTimes struct {
	mu sync.Mutex
	t  []batchTime
}

type batchTime struct{ made, acked time.Time }

func (b *batchTimes) at(i int) *batchTime {
	for len(b.t) <= i {
		b.t = append(b.t, batchTime{})
	}
	return &b.t[i]
}

func (b *batchTimes) made(i int, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.at(i).made = t
}

func (b *batchTimes) acked(i int, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.at(i).acked = t
}

func (b *batchTimes) get(i int) (batchTime, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i < 0 || i >= len(b.t) || b.t[i].made.IsZero() {
		return batchTime{}, false
	}
	return b.t[i], true
}

// pacing returns the pause between one worker's operations: n workers
// sharing rate operations per second, each at most maxRate; rate zero
// runs each at maxRate (or without pause when maxRate is zero).
func pacing(rate float64, n int, maxRate float64) time.Duration {
	per := rate / float64(n)
	if rate <= 0 || (maxRate > 0 && per > maxRate) {
		per = maxRate
	}
	if per <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / per)
}

// waitUntil sleeps until t or the end of ctx, reporting whether t came.
func waitUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// drive runs the load for the configured duration and fills res.
func (f *fleet) drive(ctx context.Context, res *Results) error {
	cfg := f.cfg
	f.say("running %d devices and %d providers for %v", cfg.Devices, cfg.Providers, cfg.Duration)
	start := time.Now()
	rec := newRecorder(start)
	runCtx, stopRun := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer stopRun()

	// Receipts and unpaid notices, until the drain after the run.
	var published, unpaid atomic.Int64
	var lastReceipt atomic.Int64 // unix nanos
	rctx, stopReceipts := context.WithCancel(ctx)
	defer stopReceipts()
	var rwg sync.WaitGroup
	times := make([]*batchTimes, len(f.provs))
	for i, p := range f.provs {
		times[i] = &batchTimes{}
		notices, err := p.meter.Receipts(rctx)
		if err != nil {
			return err
		}
		prefix := fmt.Sprintf("%s-p%d-", f.runID, p.index)
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for n := range notices {
				now := time.Now()
				if n.Unpaid != nil {
					k := len(n.Unpaid.EventIDs)
					rec.fail("event:unpaid:"+n.Unpaid.Reason, now, k)
					rec.sample("event:unpaid:"+n.Unpaid.Reason, fmt.Sprintf("payer %s, stop service %v", n.Unpaid.Payer, n.Unpaid.StopService))
					unpaid.Add(int64(k))
					continue
				}
				perBatch := map[int]int{}
				for _, id := range n.Receipt.Events {
					rest, ok := strings.CutPrefix(id, prefix)
					b, _, ok2 := strings.Cut(rest, "-")
					nb, err := strconv.Atoi(b)
					if !ok || !ok2 || err != nil {
						nb = -1
					}
					perBatch[nb]++
				}
				for b, k := range perBatch {
					if t, ok := times[i].get(b); ok {
						rec.done(opReceipt, now, now.Sub(t.made), k)
						if !t.acked.IsZero() {
							// Unset only if the receipt beat the ack back.
							rec.done(opReceiptAcked, now, now.Sub(t.acked), 0)
						}
					} else {
						rec.fail("event:foreign-receipt", now, k)
					}
				}
				lastReceipt.Store(now.UnixNano())
			}
		}()
	}

	var wg sync.WaitGroup
	payEvery := pacing(cfg.Rate, len(f.devices), MaxDeviceRate)
	for i, d := range f.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sched := newPaySchedule(cfg.Seed, i, len(f.provs))
			// Spread the first payments over one period.
			next := start.Add(time.Duration(rngFor(cfg.Seed, "start", i).Float64() * float64(payEvery)))
			for waitUntil(runCtx, next) {
				step := sched.next()
				opCtx, cancel := context.WithTimeout(ctx, opTimeout)
				t0 := time.Now()
				_, err := d.dev.Pay(opCtx, d.chID, f.provs[step.payee].id, step.amount, "loadtest")
				cancel()
				end := time.Now()
				if err != nil {
					k := errorKind("pay", err)
					rec.fail(k, end, 1)
					rec.sample(k, err.Error())
				} else {
					rec.done(opPay, end, end.Sub(t0), 1)
				}
				next = next.Add(payEvery)
				if end.Sub(next) > time.Second {
					// Far behind: drop the backlog rather than burst.
					next = end
				}
			}
		}()
	}
	metering := 0
	for _, p := range f.provs {
		if len(p.payers) > 0 {
			metering++
		}
	}
	batchEvery := time.Duration(0)
	if cfg.EventRate > 0 && metering > 0 {
		batchEvery = pacing(cfg.EventRate/float64(cfg.Batch), metering, 0)
	}
	for i, p := range f.provs {
		if len(p.payers) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sched := newEventSchedule(cfg.Seed, p.index, p.kind, p.id, p.contract, f.runID, p.payers)
			next := start
			if batchEvery > 0 {
				next = start.Add(time.Duration(rngFor(cfg.Seed, "evstart", i).Float64() * float64(batchEvery)))
			}
			for b := 0; waitUntil(runCtx, next); b++ {
				t0 := time.Now()
				evs := sched.batch(b, cfg.Batch, t0)
				times[i].made(b, t0)
				opCtx, cancel := context.WithTimeout(ctx, opTimeout)
				err := p.meter.Meter(opCtx, evs...)
				cancel()
				end := time.Now()
				if err != nil {
					k := errorKind("publish", err)
					rec.fail(k, end, len(evs))
					rec.sample(k, err.Error())
				} else {
					times[i].acked(b, end)
					rec.done(opPublish, end, end.Sub(t0), len(evs))
					published.Add(int64(len(evs)))
				}
				if batchEvery > 0 {
					next = next.Add(batchEvery)
					if end.Sub(next) > time.Second {
						next = end
					}
				} else {
					next = end
				}
			}
		}()
	}

	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		f.progress(pctx, rec, start)
	}()

	wg.Wait()
	elapsed := time.Since(start)
	// Drain: receipts for what was published arrive after the last
	// publish; wait for them, bounded.
	drainEnd := time.Now().Add(DrainTimeout)
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		_, _, receipted, _ := rec.totals()
		if int64(receipted)+unpaid.Load() >= published.Load() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopReceipts()
	rwg.Wait()
	stopProgress()
	pwg.Wait()
	if cfg.Progress != nil && cfg.ProgressTTY {
		fmt.Fprintln(cfg.Progress)
	}
	f.fill(res, rec, elapsed, published.Load(), unpaid.Load(), lastReceipt.Load(), start)
	return ctx.Err()
}

// fill turns the recorder's data into res.
func (f *fleet) fill(res *Results, rec *recorder, elapsed time.Duration, published, unpaid, lastReceipt int64, start time.Time) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	res.ElapsedS = elapsed.Seconds()
	pay := rec.samples[opPay]
	res.Payments = Flow{Count: len(pay), PerSecond: float64(len(pay)) / res.ElapsedS, Latency: Summarize(pay), Histogram: Histogram(pay)}
	pub, rct := rec.samples[opPublish], rec.samples[opReceipt]
	ev := &res.Events
	ev.Published, ev.Batches = int(published), len(pub)
	ev.PerSecond = float64(published) / res.ElapsedS
	ev.Publish, ev.PubHist = Summarize(pub), Histogram(pub)
	ev.Receipt, ev.ReceiptHist = Summarize(rct), Histogram(rct)
	ev.ReceiptAcked = Summarize(rec.samples[opReceiptAcked])
	for _, s := range rec.seconds {
		ev.Receipted += s.receipted
	}
	// Receipts trail the publishes: their rate is over the time until
	// the last one arrived.
	recWindow := res.ElapsedS
	if lastReceipt > 0 {
		recWindow = max(recWindow, time.Unix(0, lastReceipt).Sub(start).Seconds())
	}
	ev.ReceiptedPerSecond = float64(ev.Receipted) / recWindow
	for k, v := range rec.errors {
		res.Errors[k] += v
	}
	if missing := published - int64(ev.Receipted) - unpaid; missing > 0 {
		res.Errors["event:no-receipt"] += int(missing)
	}
	res.ErrorSamples = rec.samples1
	for i, s := range rec.seconds {
		res.Timeline = append(res.Timeline, Second{T: i, Payments: s.payments, Events: s.events,
			Receipted: s.receipted, Errors: s.errors, HubRSSKiB: s.rssKiB})
	}
}

// progress prints the run's rates once a second: one redrawn line on a
// terminal, a plain line every five seconds otherwise. It also samples
// the hub's memory each second.
func (f *fleet) progress(ctx context.Context, rec *recorder, start time.Time) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	var lp, le, lr int
	pid := f.hubPID()
	for tick := 1; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			if pid > 0 {
				if rss, _, err := hubRSS(pid); err == nil {
					rec.setRSS(now, rss)
				}
			}
			p, e, r, errs := rec.totals()
			line := fmt.Sprintf("%4ds  payments %6d/s  events %7d/s  receipted %7d/s  errors %d",
				int(now.Sub(start).Seconds()), p-lp, e-le, r-lr, errs)
			lp, le, lr = p, e, r
			switch {
			case f.cfg.Progress == nil:
			case f.cfg.ProgressTTY:
				fmt.Fprintf(f.cfg.Progress, "\r%-90s", line)
			case tick%5 == 0:
				fmt.Fprintln(f.cfg.Progress, line)
			}
		}
	}
}
