package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/metrics"
	"github.com/m2mhub/m2mhub/hub/settler"
)

// settleInstance is this hubd's id in the settlement lease: --settle.instance,
// or host/pid, unique among live processes.
func settleInstance(cfg config) string {
	if cfg.Settle.Instance != "" {
		return cfg.Settle.Instance
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "hubd"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// withLeader fills info's settlement-leader fields from the lease.
func withLeader(i *httpapi.Info, s *settler.Service) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := s.Leadership(ctx)
	i.SettleInstance, i.SettleLeading = l.Instance, l.Leading
	if err != nil || l.Leader.Token == 0 {
		return
	}
	exp := l.Leader.Expires.UTC()
	i.SettleLeader, i.SettleLeaderToken, i.SettleLeaseExpires = l.Leader.Instance, l.Leader.Token, &exp
}

func settleLeaderView(s *settler.Service) func(context.Context) (metrics.LeaderView, error) {
	return func(ctx context.Context) (metrics.LeaderView, error) {
		l, err := s.Leadership(ctx)
		return metrics.LeaderView{Instance: l.Instance, Leading: l.Leading, Leader: l.Leader}, err
	}
}
