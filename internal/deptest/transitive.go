package deptest

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// Rule denies a package, and the packages below it, among the transitive
// dependencies of another. Allow narrows the denial: a package below Deny
// that is in Allow (each entry allowing itself and the packages below it) is
// accepted, and the walk goes on through it. A path that enters one of
// Except (each likewise) is accepted without looking further: that
// dependency is the excepted package's, not ours.
type Rule struct {
	Deny   string
	Allow  []string
	Except []string
}

// Graph is the import graph of a set of packages and all they link, as
// `go list -deps` reports it, test files excluded.
type Graph map[string][]string

// LoadGraph lists the transitive dependencies of patterns (package paths or
// patterns such as "github.com/m2mhub/m2mhub/hub/..."), failing t when go
// list does.
func LoadGraph(t testing.TB, patterns ...string) Graph {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}"}, patterns...)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v\n%s", patterns, err, stderr.String())
	}
	g := Graph{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			g[f[0]] = f[1:]
		}
	}
	return g
}

// Deny fails t for each rule whose package pkg reaches, naming the import
// path that reaches it.
func (g Graph) Deny(t testing.TB, pkg string, rules ...Rule) {
	t.Helper()
	if _, ok := g[pkg]; !ok {
		t.Fatalf("%s is not in the graph", pkg)
	}
	for _, r := range rules {
		if path := g.path(pkg, r); path != nil {
			t.Errorf("%s links %s: %s", pkg, r.Deny, strings.Join(path, " → "))
		}
	}
}

// path returns an import path from pkg to a package r denies, walking no
// further into a package r excepts, or nil when there is none.
func (g Graph) path(pkg string, r Rule) []string {
	prev := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n != pkg && allowedPath(n, []string{r.Deny}) && !allowedPath(n, r.Allow) {
			var path []string
			for ; n != ""; n = prev[n] {
				path = append([]string{n}, path...)
			}
			return path
		}
		if n != pkg && allowedPath(n, r.Except) {
			continue
		}
		for _, m := range g[n] {
			if _, seen := prev[m]; !seen {
				prev[m] = n
				queue = append(queue, m)
			}
		}
	}
	return nil
}
