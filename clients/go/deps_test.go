package m2mclient

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps server-side code out of the device library: embedded
// devices link it, and DESIGN.md §7 forbids it to pull in the NATS server,
// Redis, the hub's store or the hub itself.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/m2mhub/m2mhub/clients/go").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/nats-io/nats-server",
		"github.com/redis/go-redis",
		"go.etcd.io/bbolt",
		"github.com/m2mhub/m2mhub/hub",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned only %d packages; the check would prove nothing", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("m2mclient depends on %s", dep)
			}
		}
	}
}
