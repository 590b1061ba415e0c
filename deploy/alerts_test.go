package deploy

import (
	"os/exec"
	"testing"
)

// TestAlertRules checks the Prometheus files with promtool: the rules and
// the scrape configuration parse, and the rule unit tests in
// prometheus/alerts_test.yml pass (hubd down or unscraped, btcd down,
// credit exposure: each fires when it should and not before). .ci/deps
// installs promtool (Debian's prometheus package).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: make test installs it when run as root, or apt-get install -y prometheus")
	}
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
