package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/m2mhub/m2mhub/hub"
)

// LeaderView is what the settlement-leader gauges show: this instance's
// id, whether it holds the settlement lease, and the live lease (zero when
// none is held).
type LeaderView struct {
	Instance string
	Leading  bool
	Leader   hub.Leader
}

// leaderCollector reads the settlement lease on every scrape.
type leaderCollector struct {
	view                    func(context.Context) (LeaderView, error)
	leading, token, expires *prometheus.Desc
}

// newLeaderCollector reads the settlement-leader gauges from view on
// every scrape.
func newLeaderCollector(view func(context.Context) (LeaderView, error)) *leaderCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &leaderCollector{
		view:    view,
		leading: d("settle_leader", "1 when this instance holds the settlement lease (runs settlement), else 0; leader names the live lease's holder.", "instance", "leader"),
		token:   d("settle_lease_token", "Fencing token of the live settlement lease (0: none held)."),
		expires: d("settle_lease_expiry_seconds", "Unix time the live settlement lease expires unless renewed (0: none held)."),
	}
}

func (c *leaderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leading
	ch <- c.token
	ch <- c.expires
}

func (c *leaderCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := c.view(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.leading, err)
		return
	}
	lead := 0.0
	if v.Leading {
		lead = 1
	}
	var exp float64
	if !v.Leader.Expires.IsZero() {
		exp = float64(v.Leader.Expires.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(c.leading, prometheus.GaugeValue, lead, v.Instance, v.Leader.Instance)
	ch <- prometheus.MustNewConstMetric(c.token, prometheus.GaugeValue, float64(v.Leader.Token))
	ch <- prometheus.MustNewConstMetric(c.expires, prometheus.GaugeValue, exp)
}
