package metrics_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/metrics"
)

// TestCountersFromStart checks that every counter docs/metrics.md lists
// is in the first scrape, before anything happened, so a panel over it is
// never empty.
func TestCountersFromStart(t *testing.T) {
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]int{}
	for _, mf := range mfs {
		have[mf.GetName()] = len(mf.GetMetric())
	}
	rows := regexp.MustCompile("(?m)^\\| `(m2mhub_[a-z_]+)` \\| (counter|histogram) \\|").FindAllStringSubmatch(string(doc), -1)
	if len(rows) < 8 {
		t.Fatalf("only %d counters found in docs/metrics.md", len(rows))
	}
	for _, r := range rows {
		if have[r[1]] == 0 {
			t.Errorf("%s is documented but absent from the first scrape", r[1])
		}
	}
}

// TestHeldChargesNothing checks that a conditional release counts its
// amount once, at its end event: the hold reserves and charges nothing.
func TestHeldChargesNothing(t *testing.T) {
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	k := contracts.KindConditionalRelease
	m.EventCharged(k, hub.ChargeHeld, 165_000_000)
	m.EventCharged(k, hub.ChargeOwed, 165_000_000) // released
	m.EventCharged(k, hub.ChargeHeld, 165_000_000)
	m.EventCharged(k, hub.ChargePaid, 0) // refunded by the contract
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "m2mhub_charged_msat_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if s.GetLabel()[0].GetValue() == string(k) && s.GetCounter().GetValue() != 165_000_000 {
				t.Fatalf("charged %v msat for two shipments paid 165,000,000 in all", s.GetCounter().GetValue())
			}
		}
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "m2mhub_events_charged_total"); err != nil || n != 20 {
		t.Errorf("%d events_charged series, want 5 kinds × 4 statuses", n)
	}
}

// TestCountersBeforeMetrics checks hubd's construction order: the parts
// count into Counters built before the Metrics, and what they counted
// then is served by the Metrics built from those Counters afterwards.
func TestCountersBeforeMetrics(t *testing.T) {
	c := metrics.NewCounters()
	c.PaymentAccepted(1_500, 0)
	c.PaymentAccepted(500, 0)
	m, err := metrics.New(metrics.Config{Counters: c})
	if err != nil {
		t.Fatal(err)
	}
	m.PaymentAccepted(1_000, 0)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			got[mf.GetName()] = s.GetCounter().GetValue()
		}
	}
	if got["m2mhub_payments_total"] != 3 || got["m2mhub_payments_msat_total"] != 3_000 {
		t.Fatalf("payments_total %v, payments_msat_total %v; want 3 and 3000 (two counted before New)",
			got["m2mhub_payments_total"], got["m2mhub_payments_msat_total"])
	}
}
