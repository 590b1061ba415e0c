package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = ".."

// binaries are the programs the tests build from this module, with the
// options each one's --help lists.
type binaries struct {
	dir string
	// flags maps a binary to its long option names, without dashes.
	flags map[string]map[string]bool
	// envs maps a binary to the environment variables its --help names.
	envs map[string]map[string]bool
}

// path returns the built binary's path.
func (b *binaries) path(name string) string { return filepath.Join(b.dir, name) }

var (
	// go-flags lists "  -x, --name=", the standard flag package "  -name type".
	longOptRE = regexp.MustCompile(`^\s+(?:-\w, )?--?([A-Za-z0-9][A-Za-z0-9.-]*)`)
	envRE     = regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)
)

// mustBuild builds hubd, btcd and btcctl with the module's own versions
// (the ones the Dockerfile builds) into a temporary directory and reads
// their options from --help.
func mustBuild(tb testing.TB) *binaries {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/m2mhub/m2mhub/cmd/hubd",
		"github.com/btcsuite/btcd",
		"github.com/btcsuite/btcd/cmd/btcctl",
		"github.com/m2mhub/m2mhub/cmd/loadtest")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	b := &binaries{dir: dir, flags: map[string]map[string]bool{}, envs: map[string]map[string]bool{}}
	for _, name := range []string{"hubd", "btcd", "btcctl", "loadtest"} {
		out, _ := exec.Command(b.path(name), "--help").CombinedOutput() // btcd exits 0, btcctl 1, loadtest 2 on help
		b.flags[name], b.envs[name] = parseHelp(string(out))
		if len(b.flags[name]) < 5 {
			tb.Fatalf("%s --help lists only %d options:\n%s", name, len(b.flags[name]), out)
		}
	}
	return b
}

// parseHelp reads go-flags help output: option names and the environment
// variables named in [$VAR].
func parseHelp(help string) (flags, envs map[string]bool) {
	flags, envs = map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		if m := longOptRE.FindStringSubmatch(line); m != nil {
			flags[m[1]] = true
		}
		for _, m := range envRE.FindAllStringSubmatch(line, -1) {
			envs[m[1]] = true
		}
	}
	return flags, envs
}

// optionName returns the option name of a "--name=value", "--name" or
// "-name" argument, and whether arg is one (a value such as "60s" is not).
func optionName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") || arg == "--" || arg == "-" {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name, true
}
