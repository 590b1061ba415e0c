package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// stage is one stage of the Dockerfile.
type stage struct {
	entrypoint []string
	// bins are the programs the stage copies into /usr/local/bin.
	bins map[string]bool
	// packages are the Debian packages it installs (for health checks).
	packages map[string]bool
	base     string
}

// parseDockerfile reads the stages of a Dockerfile: FROM … AS name, the
// binaries each copies from the build stage, its apt-get installs and its
// exec-form ENTRYPOINT. A stage built FROM another inherits what it has.
func parseDockerfile(tb testing.TB, path string) map[string]*stage {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	stages := map[string]*stage{}
	var cur *stage
	var logical string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		// Join continuation lines into one instruction.
		if strings.HasSuffix(line, "\\") {
			logical += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, logical = logical+line, ""
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			cur = &stage{bins: map[string]bool{}, packages: map[string]bool{}, base: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				stages[fields[3]] = cur
			}
			if parent, ok := stages[fields[1]]; ok {
				maps(cur.bins, parent.bins)
				maps(cur.packages, parent.packages)
				cur.entrypoint = parent.entrypoint
			}
		case "COPY":
			if cur == nil || len(fields) < 4 || !strings.HasPrefix(fields[1], "--from=") || fields[len(fields)-1] != "/usr/local/bin/" {
				continue
			}
			for _, src := range fields[2 : len(fields)-1] {
				cur.bins[filepath.Base(src)] = true
			}
		case "RUN":
			if i := slices.Index(fields, "install"); i > 0 && slices.Contains(fields, "apt-get") {
				for _, p := range fields[i+1:] {
					if p == "&&" {
						break
					}
					if !strings.HasPrefix(p, "-") {
						cur.packages[p] = true
					}
				}
			}
		case "ENTRYPOINT":
			var ep []string
			if err := json.Unmarshal([]byte(strings.TrimSpace(line[len("ENTRYPOINT"):])), &ep); err != nil {
				tb.Fatalf("ENTRYPOINT must be exec form: %s", line)
			}
			cur.entrypoint = ep
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return stages
}

func maps(dst, src map[string]bool) {
	for k, v := range src {
		dst[k] = v
	}
}

// loadProject loads docker-compose.yml with the Compose specification's
// own loader, with a fixed name and an empty environment so that only the
// file's defaults apply.
func loadProject(tb testing.TB, profiles ...string) *types.Project {
	tb.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(repoRoot, "docker-compose.yml")},
		cli.WithName("m2mhub-test"),
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnv(nil),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		tb.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func TestCompose(t *testing.T) {
	all := loadProject(t, "load")
	byDefault := loadProject(t)

	t.Run("Services", func(t *testing.T) {
		for _, name := range []string{"nats", "nats-2", "nats-3", "redis", "btcd", "hubd-1", "hubd-2", "hubd-3"} {
			if _, ok := byDefault.Services[name]; !ok {
				t.Errorf("service %s does not start by default", name)
			}
		}
		if _, ok := byDefault.Services["loadtest"]; ok {
			t.Error("loadtest starts by default; it belongs to the load profile")
		}
		if s, ok := all.Services["loadtest"]; !ok || !slices.Contains(s.Profiles, "load") {
			t.Error("no loadtest service in the load profile")
		}
	})

	t.Run("HealthyDependencies", func(t *testing.T) {
		for name, s := range all.Services {
			for dep, d := range s.DependsOn {
				if d.Condition != types.ServiceConditionHealthy {
					t.Errorf("%s waits for %s to be %s, not healthy", name, dep, d.Condition)
				}
				if all.Services[dep].HealthCheck == nil {
					t.Errorf("%s depends on %s, which has no health check", name, dep)
				}
			}
		}
		for _, hub := range []string{"hubd-1", "hubd-2", "hubd-3"} {
			for _, dep := range []string{"nats", "nats-2", "nats-3", "redis", "btcd"} {
				if _, ok := all.Services[hub].DependsOn[dep]; !ok {
					t.Errorf("%s does not wait for %s", hub, dep)
				}
			}
		}
	})

	t.Run("BindMounts", func(t *testing.T) {
		for name, s := range all.Services {
			for _, v := range s.Volumes {
				switch v.Type {
				case types.VolumeTypeBind:
					if strings.HasSuffix(v.Source, "loadtest-report") {
						continue // an output directory, created by compose
					}
					fi, err := os.Stat(v.Source)
					if err != nil || !fi.Mode().IsRegular() {
						t.Errorf("%s mounts %s, which is not a file in the repository", name, v.Source)
					}
					if !v.ReadOnly {
						t.Errorf("%s mounts config %s writable", name, v.Source)
					}
				case types.VolumeTypeVolume:
					if _, ok := all.Volumes[v.Source]; !ok {
						t.Errorf("%s uses undeclared volume %s", name, v.Source)
					}
				}
			}
		}
	})

	t.Run("DistinctHubs", func(t *testing.T) {
		h1, h2 := all.Services["hubd-1"], all.Services["hubd-2"]
		if dataVolume(h1) == "" || dataVolume(h1) == dataVolume(h2) {
			t.Errorf("hubd-1 and hubd-2 need their own data volumes, got %q and %q", dataVolume(h1), dataVolume(h2))
		}
		ports := map[string]string{}
		if h3 := all.Services["hubd-3"]; dataVolume(h3) == "" || dataVolume(h3) == dataVolume(h1) || dataVolume(h3) == dataVolume(h2) {
			t.Errorf("hubd-3 needs its own data volume, got %q", dataVolume(h3))
		}
		for _, name := range []string{"hubd-1", "hubd-2", "hubd-3"} {
			for _, p := range all.Services[name].Ports {
				if other, ok := ports[p.Published]; ok {
					t.Errorf("%s and %s both publish port %s", other, name, p.Published)
				}
				ports[p.Published] = name
			}
		}
		for _, name := range []string{"hubd-1", "hubd-2", "hubd-3"} {
			env := all.Services[name].Environment
			for _, k := range []string{"M2MHUB_NATS_URL", "M2MHUB_REDIS_URL"} {
				if v := env[k]; v == nil || *v == "" {
					t.Errorf("%s has no %s", name, k)
				}
			}
			if v := env["M2MHUB_NATS_URL"]; v != nil && !strings.Contains(*v, "@nats:4222") {
				t.Errorf("%s NATS URL %q is not the nats service", name, *v)
			}
			if v := env["M2MHUB_REDIS_URL"]; v != nil && !strings.Contains(*v, "@redis:6379") {
				t.Errorf("%s Redis URL %q is not the redis service", name, *v)
			}
		}
	})

	bins := mustBuild(t)
	stages := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))

	t.Run("ImagesAndCommands", func(t *testing.T) {
		officialCommand := map[string]string{"nats": "nats-server", "nats-2": "nats-server", "nats-3": "nats-server", "redis": "redis-server"}
		for name, s := range all.Services {
			if name == "prometheus" || name == "grafana" {
				continue // checked in Monitoring
			}
			if s.Build == nil {
				want, ok := officialCommand[name]
				switch {
				case !ok:
					t.Errorf("%s is neither built from the Dockerfile nor an official nats/redis image", name)
				case len(s.Command) == 0 || s.Command[0] != want:
					t.Errorf("%s runs %v, want %s", name, s.Command, want)
				}
				continue
			}
			checkBuilt(t, name, s, stages, bins)
		}
	})

	t.Run("BtcdConfig", func(t *testing.T) { checkBtcd(t, all, bins) })
	t.Run("Monitoring", func(t *testing.T) { checkMonitoring(t, all) })

	t.Run("ConfigLoadsInHubd", func(t *testing.T) {
		// hubd validates --limits.max-message-size only after it has read
		// the config file, so an out-of-range value stops it right there:
		// that message proves the ini file parsed with hubd's own loader
		// (an unknown option or a bad value would be reported instead).
		out, err := exec.Command(bins.path("hubd"),
			"--config", filepath.Join(repoRoot, "deploy/hubd/hubd.ini"),
			"--datadir", t.TempDir(), "--limits.max-message-size", "0").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "max-message-size must be between") {
			t.Fatalf("hubd did not load deploy/hubd/hubd.ini: %v\n%s", err, out)
		}
	})

	t.Run("OperationsDocFlags", func(t *testing.T) { checkDocFlags(t, bins.flags["hubd"]) })
}

// dataVolume is the named volume a service mounts at /data.
func dataVolume(s types.ServiceConfig) string {
	for _, v := range s.Volumes {
		if v.Target == "/data" {
			return v.Source
		}
	}
	return ""
}

// checkBuilt checks a service built from the Dockerfile: the stage exists,
// it runs a program the stage contains, hubd and btcd get only options they
// have, and health checks use programs the image has.
func checkBuilt(t *testing.T, name string, s types.ServiceConfig, stages map[string]*stage, bins *binaries) {
	t.Helper()
	dockerfile := filepath.Join(s.Build.Context, s.Build.Dockerfile)
	if _, err := os.Stat(dockerfile); err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	st, ok := stages[s.Build.Target]
	if !ok {
		t.Errorf("%s: the Dockerfile has no stage %q", name, s.Build.Target)
		return
	}
	// The program: the service's entrypoint, else the stage's. A shell
	// entrypoint must exec a program of the stage.
	entry := []string(s.Entrypoint)
	if len(entry) == 0 {
		entry = st.entrypoint
	}
	if len(entry) == 0 {
		t.Errorf("%s: no entrypoint", name)
		return
	}
	prog := entry[0]
	if prog == "/bin/sh" {
		if len(entry) < 3 || entry[1] != "-c" {
			t.Errorf("%s: shell entrypoint without -c: %v", name, entry)
			return
		}
		_, after, ok := strings.Cut(entry[2], "exec ")
		if !ok {
			t.Errorf("%s: shell entrypoint does not exec the program: %q", name, entry[2])
			return
		}
		prog = strings.Fields(after)[0]
	}
	if !st.bins[prog] {
		t.Errorf("%s runs %s, which stage %s does not contain (it has %v)", name, prog, s.Build.Target, st.bins)
	}
	// The options given to the program.
	if opts, ok := bins.flags[prog]; ok {
		for _, arg := range s.Command {
			if n, isOpt := optionName(arg); isOpt && !opts[n] {
				t.Errorf("%s: %s has no option --%s", name, prog, n)
			}
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "M2MHUB_") && !bins.envs[prog][k] {
				t.Errorf("%s: %s reads no environment variable %s", name, prog, k)
			}
		}
	}
	// Health checks run inside the image.
	if hc := s.HealthCheck; hc != nil && len(hc.Test) > 1 {
		cmd := hc.Test[1]
		if !st.bins[cmd] && !st.packages[cmd] {
			t.Errorf("%s: health check runs %s, which the image lacks", name, cmd)
		}
		if opts, ok := bins.flags[cmd]; ok {
			for _, arg := range hc.Test[2:] {
				if n, isOpt := optionName(arg); isOpt && !opts[n] {
					t.Errorf("%s: health check: %s has no option --%s", name, cmd, n)
				}
			}
		}
	}
}

// checkDocFlags compares the flags of the configuration reference in
// docs/operations.md with hubd's, both ways.
func checkDocFlags(t *testing.T, hubd map[string]bool) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, ref, ok := strings.Cut(string(data), "## Configuration reference")
	if !ok {
		t.Fatal("docs/operations.md has no configuration reference")
	}
	ref, _, _ = strings.Cut(ref, "\n## ")
	documented := map[string]bool{}
	for _, line := range strings.Split(ref, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.Contains(cells[1], "`--") {
			continue
		}
		for _, m := range docFlagRE.FindAllStringSubmatch(cells[1], -1) {
			documented[m[1]] = true
		}
	}
	for f := range hubd {
		if f != "help" && !documented[f] {
			t.Errorf("hubd --%s is missing from the configuration reference in docs/operations.md", f)
		}
	}
	for f := range documented {
		if !hubd[f] {
			t.Errorf("docs/operations.md documents --%s, which hubd does not have", f)
		}
	}
}

var docFlagRE = regexp.MustCompile("`--([a-z0-9.-]+)`")
