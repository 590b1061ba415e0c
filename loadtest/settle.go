package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/settlement"
)

// settleTimeout bounds the settlement epoch triggered after the run, from
// the request to the batch's confirmation.
const settleTimeout = 5 * time.Minute

// memory reads the hub's memory from /proc when the hub runs here.
func (f *fleet) memory() Memory {
	pid := f.hubPID()
	src := fmt.Sprintf("/proc/%d/status (VmRSS, VmHWM) of hubd", pid)
	if pid <= 0 {
		return Memory{Source: "no hub process id"}
	}
	rss, hwm, err := hubRSS(pid)
	if err != nil {
		return Memory{Source: fmt.Sprintf("%s: %v", src, err)}
	}
	return Memory{Source: src, RSSKiB: rss, HWMKiB: hwm, Available: true}
}

// settle triggers one settlement epoch through the admin API, mines until
// its batch confirms, and reports its size. A hub without the settlement
// endpoints is reported as such, with no figures.
func (f *fleet) settle(ctx context.Context) Settlement {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	plan, err := f.admin.SettlementPlan(ctx)
	var ae *httpapi.APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed || ae.Status == http.StatusNotImplemented) {
		return Settlement{Note: "not available in this hubd"}
	}
	if err != nil {
		return Settlement{Note: fmt.Sprintf("not available: the plan failed: %v", err)}
	}
	s := Settlement{Available: true, Txs: len(plan.Txs), VBytes: plan.VBytes}
	for _, tx := range plan.Txs {
		s.Channels += tx.Coop + tx.Claims
	}
	f.say("settling epoch %d: %d transactions, %d channels, %d vB planned", plan.Epoch.Number, s.Txs, s.Channels, s.VBytes)
	start := time.Now()
	run, err := f.admin.Settle(ctx)
	if err != nil {
		s.Note = fmt.Sprintf("the run failed: %v", err)
		s.Seconds = time.Since(start).Seconds()
		return s
	}
	s.State = string(run.State)
	for !terminal(settlement.RunState(s.State)) && ctx.Err() == nil {
		if _, err := f.chain.Mine(ctx, 1); err != nil {
			s.Note = fmt.Sprintf("mining: %v", err)
			break
		}
		time.Sleep(500 * time.Millisecond)
		st, err := f.admin.SettlementStatus(ctx, run.Epoch.Number, 1)
		if err != nil || len(st.Runs) == 0 {
			continue
		}
		run = st.Runs[0]
		s.State = string(run.State)
	}
	s.Seconds = time.Since(start).Seconds()
	if len(run.Txids) > 0 {
		s.Txs = len(run.Txids)
	}
	if s.Channels > 0 {
		s.VBPerChannel = float64(s.VBytes) / float64(s.Channels)
	}
	if run.Error != "" {
		s.Note = run.Error
	}
	if ctx.Err() != nil {
		s.Note = fmt.Sprintf("not confirmed within %v", settleTimeout)
	}
	return s
}

// terminal reports whether the run needs no more blocks: confirmed,
// failed, or empty (nothing to put on chain, so nothing to confirm).
func terminal(s settlement.RunState) bool {
	return s == settlement.RunConfirmed || s == settlement.RunFailed || s == settlement.RunEmpty
}
