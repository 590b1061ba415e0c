package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// checkMonitoring checks the compose monitoring: Prometheus runs the
// repository's configuration and rules and scrapes every hubd on the
// address it serves metrics on; Grafana is provisioned with the
// Prometheus service and the repository's dashboard.
func checkMonitoring(t *testing.T, all *types.Project) {
	prom, ok := all.Services["prometheus"]
	if !ok || !strings.HasPrefix(prom.Image, "prom/prometheus:") {
		t.Fatalf("no prometheus service on the official image")
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{} // target → repository file
	for _, s := range []types.ServiceConfig{prom, all.Services["grafana"]} {
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				rel, _ := filepath.Rel(root, v.Source)
				mounts[v.Target] = rel
			}
		}
	}
	for target, want := range map[string]string{
		"/etc/prometheus/prometheus.yml":                   "deploy/prometheus/prometheus.yml",
		"/etc/prometheus/alerts.yml":                       "deploy/prometheus/alerts.yml",
		"/etc/grafana/provisioning/datasources/m2mhub.yml": "deploy/grafana/provisioning/datasource.yml",
		"/etc/grafana/provisioning/dashboards/m2mhub.yml":  "deploy/grafana/provisioning/dashboards.yml",
		"/var/lib/grafana/dashboards/m2mhub.json":          "deploy/grafana/m2mhub.json",
	} {
		if mounts[target] != want {
			t.Errorf("%s is %q, want %s", target, mounts[target], want)
		}
	}
	if !slices.Contains(prom.Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus runs %v, not the mounted configuration", prom.Command)
	}

	// Every hubd serves metrics where the scrape job looks for them.
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy/prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName == "m2mhub" {
			for _, st := range sc.StaticConfigs {
				targets = append(targets, st.Targets...)
			}
		}
	}
	if !slices.Contains(cfg.RuleFiles, "alerts.yml") {
		t.Errorf("prometheus.yml loads rules %v, not alerts.yml", cfg.RuleFiles)
	}
	for _, name := range []string{"hubd-1", "hubd-2"} {
		var listen string
		for _, a := range all.Services[name].Command {
			if v, ok := strings.CutPrefix(a, "--metrics-listen="); ok {
				listen = v
			}
		}
		if listen == "" || !slices.Contains(targets, listen) {
			t.Errorf("%s serves metrics on %q; the m2mhub job scrapes %v", name, listen, targets)
		}
	}

	// Grafana's datasource is the prometheus service.
	raw, err = os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/provisioning/datasource.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "url: http://prometheus:9090") {
		t.Error("the Grafana datasource is not the prometheus service")
	}
}
