package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/m2mhub/m2mhub/hub/metrics"
)

// metricName finds metric names in PromQL expressions.
var metricName = regexp.MustCompile(`m2mhub_[a-z0-9_]+`)

// checkDeployFiles parses the Grafana dashboard and the alert rules and
// checks that every metric they query is one the hub exported in the
// scrape gathered (histogram series by their base name), and that every
// alert the operations docs promise is there.
func checkDeployFiles(t *testing.T, m *metrics.Metrics, gathered map[string]*dto.MetricFamily) {
	t.Helper()
	exported := map[string]bool{}
	for name, f := range gathered {
		exported[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				exported[name+s] = true
			}
		}
	}
	used := map[string][]string{} // metric → where

	// The dashboard: every target expression of every panel.
	raw, err := os.ReadFile("../../deploy/grafana/m2mhub.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title       string `json:"title"`
			FieldConfig struct {
				Defaults struct {
					Unit string `json:"unit"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	// Several hubs in one Prometheus: the dashboard picks one by job
	// and instance, and every query honours the choice.
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
	}
	if !vars["job"] || !vars["instance"] {
		t.Errorf("dashboard variables %v: want job and instance", vars)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllStringIndex(tg.Expr, -1) {
				if !strings.HasPrefix(tg.Expr[n[1]:], `{job=~"$job",instance=~"$instance"`) {
					t.Errorf("panel %q: %s is not filtered by $job and $instance", p.Title, tg.Expr[n[0]:n[1]])
				}
			}
		}
		if strings.Contains(strings.ToLower(p.Title), "msat") && !strings.Contains(p.FieldConfig.Defaults.Unit, "msat") {
			t.Errorf("panel %q shows msat without the unit", p.Title)
		}
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				used[n] = append(used[n], "panel "+p.Title)
			}
		}
	}

	// The alert rules.
	raw, err = os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %q lacks expr, severity or summary", r.Alert)
			}
			for _, n := range metricName.FindAllString(r.Expr+" "+r.Annotations["summary"], -1) {
				used[n] = append(used[n], "alert "+r.Alert)
			}
		}
	}
	for _, a := range []string{"HubdDown", "HubdUnscraped", "ChannelNearExpiryUnsettled", "BtcdDown", "NATSDown", "StoreDown", "IntakeLag", "SettlementStuck", "HighCreditExposure"} {
		if !alerts[a] {
			t.Errorf("alert %s missing", a)
		}
	}

	for n, where := range used {
		if !exported[n] {
			t.Errorf("%s (used by %s) is not exported", n, strings.Join(where, ", "))
		}
	}
	if len(used) < 20 {
		t.Errorf("deploy files use only %d metrics", len(used))
	}
}
