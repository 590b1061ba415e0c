package metrics

import (
	"math"
	"os"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestHistoryRulesMatchAlertsFile holds the hub's own alert conditions
// (what the dashboard shows firing) to deploy/prometheus/alerts.yml: the
// same names, severities and durations.
func TestHistoryRulesMatchAlertsFile(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert  string            `yaml:"alert"`
				For    string            `yaml:"for"`
				Labels map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	type promRule struct {
		hold     time.Duration
		severity string
	}
	prom := map[string]promRule{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			d, err := time.ParseDuration(r.For)
			if err != nil {
				t.Fatalf("%s: for %q: %v", r.Alert, r.For, err)
			}
			prom[r.Alert] = promRule{d, r.Labels["severity"]}
		}
	}
	rs := rules()
	if len(rs) != len(prom)-2 { // HubdDown and HubdUnscraped are Prometheus's alone
		t.Errorf("hub evaluates %d rules, alerts.yml has %d (2 of them Prometheus's own)", len(rs), len(prom))
	}
	for _, r := range rs {
		p, ok := prom[r.name]
		switch {
		case !ok:
			t.Errorf("%s is not in alerts.yml", r.name)
		case p.hold != r.hold || p.severity != r.severity:
			t.Errorf("%s: hub holds %v %s, alerts.yml %v %s", r.name, r.hold, r.severity, p.hold, p.severity)
		}
	}
}

// TestQuantile checks the bucket interpolation against values worked by
// hand.
func TestQuantile(t *testing.T) {
	bs := []bucket{{0.001, 0}, {0.01, 10}, {0.1, 20}, {1, 20}}
	for _, c := range []struct {
		q, want float64
	}{{0.5, 0.01}, {0.25, 0.001 + 0.009*0.5}, {0.99, 0.01 + 0.09*0.98}, {1, 0.1}} {
		if got := quantile(c.q, bs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("q%.2f = %v, want %v", c.q, got, c.want)
		}
	}
	if got := quantile(0.5, []bucket{{0.1, 0}}); got != 0 {
		t.Errorf("no observations: %v", got)
	}
}
