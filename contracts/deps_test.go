package contracts

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDependencies keeps the package pure: besides the standard library it
// may import only shopspring/decimal and lnwire, never a store, bus or RPC
// client.
func TestDependencies(t *testing.T) {
	allowed := map[string]bool{
		"github.com/shopspring/decimal":          true,
		"github.com/lightningnetwork/lnd/lnwire": true,
	}
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
				continue // standard library
			}
			if !allowed[path] {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
