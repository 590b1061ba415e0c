// Package deptest keeps domain packages free of infrastructure, in the
// style of tailscale's tstest/deptest: a package's test names the non-stdlib
// imports it allows, and any other import fails the test.
package deptest

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// AllowOnly fails t if a non-test Go file in the current directory imports a
// non-standard-library package outside allowed (each entry allows itself and
// the packages below it).
func AllowOnly(t *testing.T, allowed ...string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") {
				continue // the standard library has no dot in its first element
			}
			if !allowedPath(path, allowed) {
				t.Errorf("%s imports %s, which this package must not depend on", name, path)
			}
		}
	}
}

func allowedPath(path string, allowed []string) bool {
	for _, a := range allowed {
		if path == a || strings.HasPrefix(path, a+"/") {
			return true
		}
	}
	return false
}
